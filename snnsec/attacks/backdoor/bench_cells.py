"""Registers the ``backdoor`` bench kind (see :mod:`snnsec.bench`)."""

from __future__ import annotations

from snnsec.bench import register_kind


def backdoor_cell(cell: dict, *, progress: bool = True) -> dict:
    from snnsec.attacks.backdoor.run import BackdoorConfig, run_backdoor

    cfg = BackdoorConfig.from_cell(cell)
    res = run_backdoor(cfg, progress=progress)
    return {"metrics": res.metrics, "attack": f"backdoor:{cfg.trigger}", "attack_params": cfg.attack_params()}


register_kind("backdoor", backdoor_cell)
