"""Bench kinds of the attacks (see :mod:`snnsec.bench`).

``backdoor``: one poisoned training run (:class:`snnsec.attacks.backdoor.run.BackdoorConfig`).

``adversarial`` (see ``attacks/adversarial_*.toml``):

A cell names a trained ``checkpoint`` (or trains one first when it gives ``epochs`` instead),
the ``dataset`` (plus ``root``), ``attacks``, ``eps`` (list of radii such as ``"8/255"``) and
optionally ``gradients``, ``n_samples``, ``fast``, ``eot``, ``flip_budget``. Metrics per cell:
clean accuracy, worst-case robust accuracy per eps, per-attack robust accuracy per eps, and
``reliable`` (1/0).

``hardening`` (see ``defenses/hardening.toml``): one hardened training recipe
(:class:`snnsec.runs.hardening.HardeningConfig`) and its evaluation.
"""

from __future__ import annotations


def backdoor_cell(cell: dict, *, progress: bool = True) -> dict:
    from snnsec.attacks.backdoor.run import BackdoorConfig, run_backdoor, run_output
    from snnsec.devices import split_cell

    cell, device = split_cell(cell)
    return run_output(run_backdoor(BackdoorConfig.from_cell(cell), progress=progress, device=device))


_EVAL_KEYS = ("attacks", "eps", "gradients", "fast", "eot", "batch_size", "flip_budget", "flip_step", "queries")


def adversarial_cell(cell: dict, *, progress: bool = True) -> dict:
    from snnsec.attacks.adversarial.evaluate import EvalConfig, format_eps
    from snnsec.devices import split_cell
    from snnsec.runs.adversarial import run_checkpoint

    cell, device = split_cell(cell)
    ckpt = cell.get("checkpoint")
    if ckpt is None:
        ckpt = _train(cell, progress, device)
    kw = {k: cell[k] for k in _EVAL_KEYS if k in cell}
    config = EvalConfig(seed=int(cell.get("seed", 0)), **kw)
    ev, _ = run_checkpoint(ckpt, data=cell["dataset"], root=cell.get("root"), n_samples=cell.get("n_samples", 200),
                           config=config, progress=progress, device=device)
    metrics = {"clean_accuracy": ev.clean_accuracy, "reliable": float(ev.reliable)}
    for e, a in ev.robust_accuracy.items():
        metrics[f"robust_accuracy@{format_eps(e)}"] = a
    for name, curve in ev.per_attack().items():
        for e, a in curve.items():
            metrics[f"robust_accuracy:{name}@{format_eps(e)}"] = a
    if ev.flips is not None:
        metrics["median_flips"] = ev.flips["median_flips"]
        metrics["flips_for_5pct"] = ev.flips["flips_for_5pct"] if ev.flips["flips_for_5pct"] is not None else float("nan")
        metrics["median_events"] = ev.flips["median_events"]
    return {"metrics": metrics, "attack": "adversarial", "attack_params": config.to_dict(),
            "extra": {"reliable": ev.reliable, "unreliable_reasons": ev.unreliable_reasons(), "checks": ev.check_rows}}


def _train(cell: dict, progress: bool, device: str) -> str:
    """Train the cell's model into a cache folder named by the training config (reused across cells)."""
    import os
    from pathlib import Path

    from snnsec.results import config_hash
    from snnsec.train import TrainConfig, run_training

    keys = ("dataset", "root", "model", "T", "epochs", "batch_size", "lr", "seed")
    train_cfg = {k: cell.get(k) for k in keys}
    if cell.get("model_kwargs"):  # only when given: the caches of cells without keep their names
        train_cfg["model_kwargs"] = dict(cell["model_kwargs"])
    if train_cfg["epochs"] is None:
        raise ValueError("adversarial cell: give 'checkpoint' (a trained model) or 'epochs' to train one first")
    cache = Path(os.environ.get("SNNSEC_CKPT_CACHE", "reports/checkpoints")) / config_hash(train_cfg)[:16]
    if not (cache / "model.json").is_file():
        cfg = TrainConfig(epochs=int(cell["epochs"]), batch_size=int(cell.get("batch_size", 32)),
                          lr=float(cell.get("lr", 1e-3)), seed=int(cell.get("seed", 0)))
        run_training(data=cell["dataset"], model=cell["model"], config=cfg, out=cache, root=cell.get("root"),
                     T=cell.get("T"), model_kwargs=train_cfg.get("model_kwargs"), progress=progress, device=device)
    return str(cache)


def hardening_cell(cell: dict, *, progress: bool = True) -> dict:
    from snnsec.devices import split_cell
    from snnsec.runs.hardening import HardeningConfig, run_hardening

    cell, device = split_cell(cell)
    cfg = HardeningConfig.from_cell(cell)
    res = run_hardening(cfg, progress=progress, device=device)
    out = {"metrics": res.metrics, "defense": f"hardening:{cfg.recipe['name']}", "defense_params": res.defense_params()}
    if cfg.backdoor:
        out["attack"] = f"backdoor:{cfg.backdoor.get('trigger', 'static')}"
        out["attack_params"] = dict(cfg.backdoor)
    return out
