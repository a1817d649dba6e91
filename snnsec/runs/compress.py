"""``snnsec compress CKPT``: a compressed copy of a trained checkpoint (:mod:`snnsec.compress`),
fine-tuned compressed on the checkpoint's training split, baked, measured and saved."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn as nn

from snnsec._io import atomic_write_json


@dataclass
class CompressResult:
    model: nn.Module
    meta: dict[str, Any]
    spec: Any
    metrics: dict[str, float]
    layers: list[dict[str, Any]]
    compression: dict[str, Any]
    config: dict[str, Any]


def run_compress(checkpoint, method: str, *, params: dict | None = None, finetune_epochs: int = 3, lr: float = 1e-4,
                 batch_size: int = 32, seed: int = 0, data: str | None = None, root=None, arch=None,
                 device: str = "cpu", progress: bool = True) -> CompressResult:
    """Compress ``checkpoint`` with ``method`` (and its ``params``), fine-tune for
    ``finetune_epochs`` (0: the bare transform), bake, and measure test accuracy before and after."""
    from snnsec import checkpoint as ckpt
    from snnsec import compress, devices
    from snnsec.train import TrainConfig, evaluate, train

    params = {k: v for k, v in compress.method_spec({"method": method, **(params or {})}).items() if k != "method"}
    config = TrainConfig(epochs=int(finetune_epochs), batch_size=batch_size, lr=lr, seed=seed, schedule="constant")
    model, meta = ckpt.load(checkpoint, arch=arch, device=device)
    if params.get("membrane_bits") is not None:
        compress.refuse_requantizing(model, source=str(checkpoint))
    test_ds, spec = ckpt.matching_dataset(meta, data=data, root=root, split="test", source=str(checkpoint))
    before = evaluate(model, test_ds)
    compress.compress(model, method, **params)
    transformed = evaluate(model, test_ds)
    if finetune_epochs:
        train_ds, _ = ckpt.matching_dataset(meta, data=data, root=root, split="train", source=str(checkpoint))
        train(model, train_ds, None, config, progress=progress)
    record = dict(model.compression)
    compress.bake(model)
    model.eval()
    metrics = {"clean_accuracy": evaluate(model, test_ds), "clean_accuracy_uncompressed": before,
               "clean_accuracy_before_finetune": transformed}
    run_cfg = {"kind": "compress", "checkpoint": str(checkpoint), "method": method, **params,
               "finetune": config.to_dict(), **devices.describe(device)}
    return CompressResult(model=model, meta=meta, spec=spec, metrics=metrics, layers=compress.stats(model),
                          compression=record, config=run_cfg)


def save_compressed(result: CompressResult, out, *, store=None) -> Path:
    """The baked checkpoint (its recipe records the compression and the source checkpoint),
    ``metrics.json`` with the per-layer sparsity and weight levels, and the rows."""
    from snnsec import checkpoint, results
    from snnsec.bench import rows_for_cell

    meta = result.meta
    recipe = {"compression": result.compression, "finetune": result.config["finetune"],
              "base": {"checkpoint": result.config["checkpoint"], "recipe": meta.get("recipe")}}
    out = checkpoint.save(out, result.model, arch=meta["arch"], arch_kwargs=meta.get("arch_kwargs") or {},
                          spec=result.spec, recipe=recipe, attack=meta.get("attack"), metrics=result.metrics,
                          seed=meta.get("seed"))
    atomic_write_json(out / "metrics.json", {**result.metrics, "compression": result.compression, "layers": result.layers})
    cell = {"dataset": result.spec.name, "model": str(meta["arch"]), "T": result.spec.T,
            "seed": int(result.config["finetune"]["seed"]), **result.config}
    groups = [{"metrics": {"sparsity": r["sparsity"], "distinct_per_channel": float(r["distinct_per_channel"])},
               "extra": {"layer": r["layer"], "weights": r["weights"]}} for r in result.layers]
    rows = rows_for_cell(cell, {"metrics": result.metrics, "extra": {"compression": result.compression},
                                "groups": groups})
    if store is not None:
        results.Store(store).append(rows)
    return out
