"""The ``event-threats`` bench kind (``attacks/event-threats-*.toml``): robust accuracy against an
event-native attack's budget, with how much of the input it changed.

A cell names a trained ``checkpoint`` (or the training keys of the adversarial kind, to train
one first), the ``dataset`` and ``root``, ``n_samples`` (a seeded random test subset) and one
threat at one budget:

- ``threat = "retime"`` (:class:`~snnsec.attacks.adversarial.retiming.SpikeRetiming`) on the
  binary frames, with any of ``max_shift`` (B-inf, time bins), ``moved`` (B0) and
  ``total_delay`` (B1) (fractions of the sample's spikes), ``steps``;
- ``threat = "events"`` (:class:`~snnsec.attacks.adversarial.event_edits.EventEdits`) on the raw
  streams, with ``ops`` (any of add, delete, shift), ``budget`` (fraction of the sample's events),
  ``rounds``;

and ``gradient`` (the estimator; default the model's own). Metrics: ``clean_accuracy``,
``robust_accuracy`` (clean-correct and still correct), ``attack_success_rate`` (of the
clean-correct), ``event_l0`` (edited events per event of the sample; for retiming, moved spikes
per spike) and ``frame_ssim`` (time-averaged SSIM of the adversarial frames against the clean
ones), means over the attacked samples; per-sample values in ``extra``.
"""

from __future__ import annotations

import time

THREATS = ("retime", "events")
_RETIME_KEYS = ("max_shift", "moved", "total_delay", "steps")
_EVENT_KEYS = ("ops", "budget", "rounds")
_CELL_KEYS = {"kind", "checkpoint", "dataset", "root", "n_samples", "seed", "threat", "gradient", "model",
              "model_kwargs", "T", "epochs", "batch_size", "lr", *_RETIME_KEYS, *_EVENT_KEYS}


def event_threat_cell(cell: dict, *, progress: bool = True) -> dict:
    from snnsec.devices import split_cell
    from snnsec.runs.bench_cells import _train

    cell, device = split_cell(cell)
    unknown = sorted(set(cell) - _CELL_KEYS)
    if unknown:
        raise ValueError(f"event-threats cell: unknown field(s) {unknown}; expected some of {sorted(_CELL_KEYS)}")
    threat = cell.get("threat")
    if threat not in THREATS:
        raise ValueError(f"event-threats cell: 'threat' must be one of {THREATS}, got {threat!r}")
    attack = _attack(cell)  # bad budgets fail here, before a model is trained or loaded
    ckpt = cell.get("checkpoint") or _train(cell, progress, device)
    out = run_event_threat(ckpt, attack, data=cell.get("dataset"), root=cell.get("root"),
                           n_samples=int(cell.get("n_samples", 100)), seed=int(cell.get("seed", 0)), device=device)
    params = {"threat": threat, **{k: cell[k] for k in (*_RETIME_KEYS, *_EVENT_KEYS, "gradient") if k in cell}}
    return {"metrics": out["metrics"], "attack": f"event-threat:{threat}", "attack_params": params,
            "extra": {"checkpoint": str(ckpt), **out["per_sample"]}}


def _attack(cell: dict):
    """The cell's threat as ``apply(model, ds, idx, x, y, spec) -> (adversarial frames, correct, event L0)``;
    its budgets are checked here, before a model is trained or loaded."""
    from functools import partial

    from snnsec.attacks.adversarial.gradients import parse_gradient

    gradient = cell.get("gradient", "model")
    parse_gradient(gradient)
    if cell["threat"] == "retime":
        from snnsec.attacks.adversarial.retiming import check_budgets

        kw = {k: cell[k] for k in _RETIME_KEYS if k in cell}
        kw.setdefault("max_shift", None)
        check_budgets(kw["max_shift"], kw.get("total_delay"), kw.get("moved"))
        if "steps" in kw and (not isinstance(kw["steps"], int) or kw["steps"] < 1):
            raise ValueError(f"event-threats cell: retime 'steps' must be a whole number >= 1, got {kw['steps']!r}")
        return partial(_retime, kw={**kw, "gradient": gradient})
    from snnsec.attacks.adversarial.event_edits import EventEdits

    if "budget" not in cell:
        raise ValueError("event-threats cell: threat 'events' needs 'budget' (a fraction of each sample's events)")
    ops = cell.get("ops", ("add", "delete", "shift"))
    ops = tuple(o.strip() for o in ops.split(",")) if isinstance(ops, str) else tuple(ops)
    return partial(_edit_events, EventEdits(budget=float(cell["budget"]), ops=ops, rounds=int(cell.get("rounds", 5)),
                                            gradient=gradient))


def _retime(model, ds, idx, x, y, spec, *, kw):
    """Spike retiming works on the binary frames; its L0 is moved spikes per spike."""
    import torch

    from snnsec.attacks.adversarial.retiming import SpikeRetiming
    from snnsec.harness import predict

    atk = SpikeRetiming(model, **kw)
    xa = torch.cat([atk(x[i:i + 16], y[i:i + 16]) for i in range(0, len(idx), 16)])
    l0 = ((xa != x).flatten(1).sum(1) / 2) / x.flatten(1).sum(1).clamp(min=1)
    return xa, predict(model, xa, batch_size=32).argmax(1) == y, l0


def _edit_events(edits, model, ds, idx, x, y, spec):
    """Raw-event edits work on the streams, framed as the dataset frames them."""
    res = edits(model, [ds.events(i) for i in idx], y, spec)
    return res.frames, res.correct, res.edit_fraction.float()


def run_event_threat(checkpoint, attack, *, data=None, root=None, n_samples: int = 100, seed: int = 0,
                     device: str = "cpu") -> dict:
    """Attack ``n_samples`` test samples of ``checkpoint``'s dataset with ``attack`` (what
    :func:`_attack` makes of a cell)."""
    from snnsec import checkpoint as ckpt
    from snnsec import metrics as M
    from snnsec.harness import predict
    from snnsec.runs.adversarial import random_subset, subset_indices

    model, meta = ckpt.load(checkpoint, device=device)
    ds, spec = ckpt.matching_dataset(meta, data=data, root=root, split="test", source=str(checkpoint))
    idx = subset_indices(len(ds), n_samples, seed)
    x, y = random_subset(ds, n_samples, seed)  # the samples of idx, in its order
    clean_correct = predict(model, x, batch_size=32).argmax(1) == y
    t0 = time.perf_counter()
    xa, adv_correct, l0 = attack(model, ds, idx, x, y, spec)
    seconds = time.perf_counter() - t0
    ssim = M.ssim_per_frame(x, xa).mean(-1).float()  # per sample, time-averaged
    robust = clean_correct & adv_correct
    attacked = clean_correct
    n_cc = max(int(attacked.sum()), 1)
    metrics = {"clean_accuracy": float(clean_correct.float().mean()), "robust_accuracy": float(robust.float().mean()),
               "attack_success_rate": float((attacked & ~adv_correct).sum()) / n_cc,
               "event_l0": float(l0[attacked].mean()) if attacked.any() else float("nan"),
               "frame_ssim": float(ssim[attacked].mean()) if attacked.any() else float("nan"),
               "seconds": seconds, "n_samples": float(len(idx))}
    return {"metrics": metrics, "per_sample": {"event_l0": l0.tolist(), "frame_ssim": ssim.tolist(),
                                              "robust": robust.tolist(), "indices": list(idx)}}
