"""The ``leaderboard`` bench kind (``attacks/leaderboard-nmnist.toml``): one backbone, optionally
compressed, and every number the leaderboard shows for it.

A cell names the training (``dataset``, ``root``, ``model``, ``model_kwargs``, ``T``, ``epochs``,
``batch_size``, ``lr``, ``seed``; a registered model's default size unless ``model_kwargs`` say
otherwise) and optionally ``compress`` (``"binary"``, ``"quantize:bits=4"``,
``"prune:sparsity=0.9"``, ``"soft-prune:sparsity=0.9"``, any of them with ``membrane_bits=B``)
with ``finetune_epochs``; then what is measured:

- the clean model (trained once, cached as the adversarial bench's models are), compressed and
  fine-tuned when asked (cached too);
- robust accuracy, the per-sample worst case over ``attacks`` (default pgd, apgd, square), the
  white-box ones through each of ``gradients`` (default: the model's own surrogate), at
  each of ``eps`` (default 4/255, 16/255, 32/255) on ``n_samples`` test samples, with the
  integrity checklist's verdict and the forwards the attacks spent per evaluated sample (``fast``:
  the reduced steps and queries of smoke runs, not for reporting);
- energy on ``energy_samples`` test samples: SOPs, MACs, the 45 nm estimate, the mean firing
  rate and the spike-driven check (:mod:`snnsec.energy`);
- for each trigger in ``backdoors`` (default static, flash): the model trained with that
  backdoor (``rate``, ``target``; cached with the defense bench's models), compressed the same
  way when the cell compresses, its ASR on the non-target test samples, and the audit's verdict
  (:func:`snnsec.audit.audit`, ``audit_samples`` clean samples). A compressed backdoored model is
  the delivered backdoored model compressed and fine-tuned on the clean training split, as a
  defender compressing it would (so its ASR mixes compression with clean fine-tuning; the
  uncompressed row is not fine-tuned).

Metrics: ``clean_accuracy``, ``robust_accuracy@<eps>``, ``reliable``, ``attack_forwards_per_sample``,
``sops``, ``macs``, ``energy_pj``, ``mean_firing_rate``, ``spike_driven``, and per trigger
``asr:<trigger>``, ``audit_backdoored:<trigger>``, ``audit_correct:<trigger>``.
"""

from __future__ import annotations

import os
from pathlib import Path

TRAIN_KEYS = ("dataset", "root", "model", "model_kwargs", "T", "epochs", "batch_size", "lr", "seed")
DEFAULTS = {"attacks": "pgd,apgd,square", "gradients": None, "eps": ["4/255", "16/255", "32/255"], "n_samples": 100,
            "energy_samples": 100, "backdoors": ["static", "flash"], "rate": 0.1, "target": 0, "audit_samples": 100,
            "finetune_epochs": 3, "fast": False}
KEYS = {"kind", "compress", *TRAIN_KEYS, *DEFAULTS}


def variant_name(cell: dict) -> str:
    """The leaderboard's name of a cell's model: ``csnn``, ``csnn+binary``, ``csnn+prune(sparsity=0.9)``,
    ``spikingformer(cml=True)``."""
    from snnsec.compress import method_spec

    c = method_spec(cell.get("compress"))
    kw = cell.get("model_kwargs") or {}
    model = str(cell["model"]) + (f"({','.join(f'{k}={v}' for k, v in kw.items())})" if kw else "")
    if not c:
        return model
    params = ",".join(f"{k}={v}" for k, v in c.items() if k not in ("method", "keep_ends"))
    return f"{model}+{c['method']}" + (f"({params})" if params else "")


def _cache() -> Path:
    return Path(os.environ.get("SNNSEC_CKPT_CACHE", "reports/checkpoints"))


def _compressed(source: str | Path, compression: dict, cell: dict, *, progress: bool, device: str) -> str:
    """``source`` compressed and fine-tuned, cached by what it was made from."""
    from snnsec.results import config_hash
    from snnsec.runs.compress import run_compress, save_compressed

    key = {"source": str(source), "compression": compression, "finetune_epochs": int(cell["finetune_epochs"]),
           "seed": int(cell.get("seed", 0)), "lr": 1e-4}
    out = _cache() / f"compressed-{config_hash(key)[:16]}"
    if not (out / "model.json").is_file():
        import shutil

        params = {k: v for k, v in compression.items() if k != "method"}
        res = run_compress(source, compression["method"], params=params, finetune_epochs=int(cell["finetune_epochs"]),
                           seed=int(cell.get("seed", 0)), root=cell.get("root"), device=device, progress=progress)
        save_compressed(res, out)
        # a learned trigger's weights sit beside the checkpoint it came with
        for f in Path(source).glob("*.safetensors"):
            if f.name != "model.safetensors":
                shutil.copy2(f, out / f.name)
    return str(out)


def _check_estimators(c: dict, gradients) -> None:
    """Each estimator must apply to the cell's model (ASSG, PDSG and HART refuse PSN neurons; HART,
    BPTR and RGA refuse snntorch's): tried on the model built for the data's frames, before any training."""
    if not gradients or set(gradients) == {"model"}:
        return
    from snnsec import models
    from snnsec.attacks.adversarial.gradients import gradient_mode
    from snnsec.data import load

    _, spec = load(c["dataset"], split="test", root=c.get("root"), **({"T": int(c["T"])} if c.get("T") else {}))
    T, P, H, W = spec.frame_shape
    net = models.build(c["model"], in_channels=P, num_classes=spec.num_classes, sensor_hw=(H, W), T=T,
                       **(c.get("model_kwargs") or {}))
    for g in gradients:
        try:
            with gradient_mode(net, g):
                pass
        except ValueError as exc:
            raise ValueError(f"leaderboard cell {variant_name(c)}: gradients {g!r} does not apply to the model: {exc}; "
                             "give this model its own [[sweep]] with the estimators it takes") from None


def backdoor_asr(ckpt, *, root=None, device: str = "cpu") -> float:
    """ASR of a backdoored checkpoint's own trigger on the non-target samples of its test split."""
    from snnsec import checkpoint, metrics
    from snnsec.attacks.backdoor.triggers import trigger_from_spec
    from snnsec.data import frames_and_labels
    from snnsec.harness import predict

    model, meta = checkpoint.load(ckpt, device=device)
    attack = meta["attack"]
    trigger = trigger_from_spec(attack["trigger"], base_dir=Path(ckpt))
    ds, _ = checkpoint.matching_dataset(meta, root=root, source=str(ckpt))
    x, y = frames_and_labels(ds)
    return metrics.attack_success_rate(predict(model, trigger(x), batch_size=64), y, int(attack["target"]))


def leaderboard_cell(cell: dict, *, progress: bool = True) -> dict:
    from snnsec.attacks.adversarial import EvalConfig, format_eps
    from snnsec.audit import audit
    from snnsec.compress import method_spec
    from snnsec.devices import split_cell
    from snnsec.runs.adversarial import run_checkpoint
    from snnsec.runs.bench_cells import _train
    from snnsec.runs.defense_cells import cached_backdoor_checkpoint
    from snnsec.runs.energy import run_energy

    cell, device = split_cell(cell)
    unknown = sorted(set(cell) - KEYS)
    if unknown:
        raise ValueError(f"leaderboard cell: unknown field(s) {unknown}; expected some of {sorted(KEYS)}")
    c = {**DEFAULTS, **cell}
    compression = method_spec(c.get("compress"))
    root = c.get("root")
    # attack names, eps and estimator specs are checked here, before any training
    config = EvalConfig(attacks=c["attacks"], eps=c["eps"], gradients=c["gradients"], seed=int(c["seed"]),
                        fast=bool(c["fast"]))
    _check_estimators(c, config.gradients)
    ckpt = _train(c, progress, device)
    if compression:
        ckpt = _compressed(ckpt, compression, c, progress=progress, device=device)
    ev, _ = run_checkpoint(ckpt, data=c["dataset"], root=root, n_samples=int(c["n_samples"]), config=config,
                           progress=progress, device=device)
    m = {"clean_accuracy": ev.clean_accuracy, "reliable": float(ev.reliable),
         "attack_forwards_per_sample": float(sum(r.counts.get("forward_samples", 0) for r in ev.runs)) / max(ev.n, 1)}
    for e, a in ev.robust_accuracy.items():
        m[f"robust_accuracy@{format_eps(e)}"] = a
    er = run_energy(ckpt, data=c["dataset"], root=root, n_samples=int(c["energy_samples"]), seed=int(c["seed"]),
                    device=device, progress=progress)
    m.update({k: v for k, v in er.reports["clean"].metrics().items() if k != "non_spike_layers"})
    audits = {}
    for trig in c["backdoors"]:
        bcell = {**{k: c[k] for k in TRAIN_KEYS if k in c}, "trigger": trig, "rate": float(c["rate"]),
                 "target": int(c["target"])}
        bck = str(cached_backdoor_checkpoint(bcell, progress=progress, device=device))
        if compression:
            bck = _compressed(bck, compression, c, progress=progress, device=device)
        m[f"asr:{trig}"] = backdoor_asr(bck, root=root, device=device)
        r = audit(bck, data=c["dataset"], root=root, n_clean=int(c["audit_samples"]), seed=int(c["seed"]),
                  progress=progress, device=device)
        m[f"audit_backdoored:{trig}"] = float(r.backdoored)
        m[f"audit_correct:{trig}"] = float(r.backdoored and r.target == int(c["target"]))
        audits[trig] = {"target": r.target, "why": r.reason()}
    evaluated = config.to_dict()
    return {"metrics": m, "attack": "leaderboard",
            "attack_params": {"attacks": c["attacks"], "eps": evaluated["eps"], "gradients": evaluated["gradients"] or ["model"]},
            "extra": {"variant": variant_name(c), "compression": compression, "checkpoint": ckpt,
                      "framing": er.spec.slicing,
                      "backdoor_compression": "compressed and fine-tuned on the clean training split" if compression else None,
                      "unreliable_reasons": ev.unreliable_reasons(), "audits": audits,
                      "non_spike_layers": [x.layer for x in er.reports["clean"].non_spike_layers],
                      "neuron": ",".join(er.neurons)}}
