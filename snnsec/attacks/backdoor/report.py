"""Writing a finished backdoor run: checkpoint with the attack spec, metrics.json, the
clean-vs-triggered figure, and result rows."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from snnsec._io import atomic_write_json, atomic_write_with


def pick_example(labels: torch.Tensor, target: int) -> int:
    """First test sample that is not of the target class (the ones ASR is measured on)."""
    idx = torch.nonzero(labels != target).flatten()
    return int(idx[0]) if len(idx) else 0


def save_backdoor_run(result, out_dir, *, store=None) -> Path:
    from snnsec import checkpoint, results
    from snnsec.attacks.backdoor.plots import trigger_strips

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = result.config
    if cfg.trigger == "dynamic":
        result.trigger.save(out / "generator.safetensors")
    attack = result.attack_spec()
    recipe = {k: v for k, v in asdict(cfg).items() if k in ("epochs", "batch_size", "lr", "loss", "alpha", "gamma")}
    checkpoint.save(out, result.model, arch=cfg.model, arch_kwargs=cfg.model_kwargs, spec=result.spec,
                    recipe=recipe, attack=attack, metrics=result.metrics, seed=cfg.seed)
    atomic_write_json(out / "metrics.json", result.metrics)

    i = pick_example(result.test_labels, cfg.target)
    clean = result.test_frames[i]
    # For event injection the figure shows the frame form of the same pattern.
    triggered = result.trigger(clean[None])[0]
    fig = trigger_strips(clean, {cfg.trigger: triggered}, title=f"{result.spec.name} sample {i}: clean vs {cfg.trigger}")
    atomic_write_with(out / "trigger.png", lambda tmp: fig.savefig(tmp, dpi=120))

    rows = results.make_rows(run_id=results.new_run_id(), dataset=cfg.dataset, model=cfg.model, T=cfg.T, seed=cfg.seed,
                             metrics=result.metrics, attack=f"backdoor:{cfg.trigger}", attack_params=cfg.attack_params(),
                             config={"kind": "backdoor", **asdict(cfg)})
    results.Store(store if store is not None else results.default_store_path()).append(rows)
    return out
