"""Evaluate a checkpoint on a dataset and save what came out: what ``snnsec attack adversarial`` and the
``adversarial`` bench kind run."""

from __future__ import annotations

from pathlib import Path

import torch

from snnsec._io import atomic_write_json
from snnsec.attacks.adversarial.evaluate import AdversarialEvaluation, EvalConfig, evaluate
from snnsec.attacks.adversarial.report import evaluation_rows

__all__ = ["random_subset", "run_checkpoint", "save_evaluation", "subset_indices"]


def subset_indices(n: int, n_samples: int | None = None, seed: int = 0) -> list[int]:
    """A seeded random choice of ``n_samples`` of ``range(n)`` (all if None), in ascending order.

    A random subset, not the first N: test splits are often stored class by class.
    """
    if n_samples is not None and int(n_samples) < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    if n_samples is not None:
        idx = idx[: int(n_samples)]
    return idx.sort().values.tolist()


def random_subset(ds, n_samples: int | None = None, seed: int = 0):
    """``(x [N, T, P, H, W], y [N])``: the samples :func:`subset_indices` chooses."""
    idx = subset_indices(len(ds), n_samples, seed)
    xs, ys = zip(*(ds[i] for i in idx))
    return torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in xs]), torch.as_tensor(ys, dtype=torch.long)


def run_checkpoint(checkpoint, *, data: str | None = None, root=None, split: str = "test",
                   n_samples: int | None = 200, config: EvalConfig, out=None, store=None,
                   progress: bool = True, arch=None, device: str = "cpu") -> tuple[AdversarialEvaluation, dict]:
    """Load ``checkpoint`` onto ``device``, evaluate it on ``n_samples`` of ``data`` and (with ``out``) save everything.

    Data framing (T, slicing, binarisation) follows the checkpoint's DataSpec. Rows go to
    ``store`` when one is given (the bench runner stores its own). Returns the
    evaluation and the metrics dict (as written to ``out/metrics.json``). ``arch`` allows the
    checkpoint's ``module:function`` factory (:func:`snnsec.checkpoint.load`).
    """
    from snnsec import checkpoint as ckpt
    from snnsec import devices

    model, meta = ckpt.load(checkpoint, arch=arch, device=device)
    ds, spec = ckpt.matching_dataset(meta, data=data, root=root, split=split, source=str(checkpoint))
    name = data or spec.name
    x, y = random_subset(ds, n_samples, config.seed)
    ev = evaluate(model, x, y, config, progress=progress)
    run_cfg = {"kind": "adversarial", "checkpoint": str(checkpoint), "data": name,
               "root": None if root is None else str(root), "split": split, "n_samples": int(x.shape[0]),
               "eval": config.to_dict(), **devices.describe(device)}
    common = dict(dataset=spec.name, model=str(meta.get("arch")), T=spec.T, seed=config.seed, config=run_cfg)
    if out is not None:
        metrics = save_evaluation(ev, Path(out), store=store, **common)
    else:
        if store is not None:
            from snnsec import results

            results.Store(store).append(evaluation_rows(ev, **common))
        metrics = {**ev.to_dict(), **common}
    return ev, metrics


def save_evaluation(ev: AdversarialEvaluation, out: str | Path, *, dataset: str, model: str, T: int | None,
                    seed: int | None, config: dict, store=None, title: str = "",
                    extra: dict | None = None) -> dict:
    """Write ``out/metrics.json`` and ``out/robustness.png`` (drawn from the rows; ``title``, if
    given, goes above it) and append the rows to ``store`` (none: no rows). Returns the metrics."""
    from snnsec import results
    from snnsec.report.figures import fig_robust_accuracy
    from snnsec.report.render import write_png

    out = Path(out)
    metrics = {**ev.to_dict(), "dataset": dataset, "model": model, "T": T, "seed": seed, "run_config": config,
               **(extra or {})}
    atomic_write_json(out / "metrics.json", metrics)
    rows = evaluation_rows(ev, dataset=dataset, model=model, T=T, seed=seed, config=config, extra=extra)
    if ev.robust_accuracy:  # spike flips alone have no eps curve to draw
        fig = fig_robust_accuracy(rows)
        if title:
            fig.suptitle(title, fontsize=8)
        write_png(fig, out / "robustness.png")
    if store is not None:
        results.Store(store).append(rows)
    return metrics
