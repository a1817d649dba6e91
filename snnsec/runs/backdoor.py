"""Writing a finished backdoor run: checkpoint with the attack spec, metrics.json, result rows,
and the clean-vs-triggered figure drawn from those rows."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from snnsec._io import atomic_write_json


def save_backdoor_checkpoint(result, out_dir, *, recipe: dict) -> Path:
    """The backdoored model as a checkpoint whose metadata records the attack (trigger spec,
    target, poisoned indices), with a learned trigger's own weights beside it."""
    from snnsec import checkpoint

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = result.config
    if result.trigger.has_weights:
        result.trigger.save(out / "generator.safetensors")
    checkpoint.save(out, result.model, arch=cfg.model, arch_kwargs=cfg.model_kwargs, spec=result.spec,
                    recipe=recipe, attack=result.attack_spec(), metrics=result.metrics, seed=cfg.seed)
    return out


def save_backdoor_run(result, out_dir, *, store=None) -> Path:
    """The checkpoint, ``metrics.json``, the trigger figure and (with ``store``) the rows."""
    from snnsec import devices, results
    from snnsec.attacks.backdoor.run import run_output
    from snnsec.bench import rows_for_cell
    from snnsec.harness import device_of
    from snnsec.report.figures import fig_trigger_gallery
    from snnsec.report.render import write_png

    cfg = result.config
    recipe = {k: v for k, v in asdict(cfg).items() if k in ("epochs", "batch_size", "lr", "loss", "schedule", "preset", "alpha", "gamma")}
    out = save_backdoor_checkpoint(result, out_dir, recipe=recipe)
    atomic_write_json(out / "metrics.json", result.metrics)

    rows = rows_for_cell({"kind": "backdoor", **asdict(cfg), **devices.describe(str(device_of(result.model)))},
                         run_output(result))
    write_png(fig_trigger_gallery(rows), out / "trigger.png")
    if store is not None:
        results.Store(store).append(rows)
    return out
