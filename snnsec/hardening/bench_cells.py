"""Registers the ``hardening`` bench kind (see :mod:`snnsec.bench` and ``defenses/hardening.toml``)."""

from __future__ import annotations

from snnsec.bench import register_kind


def hardening_cell(cell: dict, *, progress: bool = True) -> dict:
    from snnsec.hardening.run import HardeningConfig, run_hardening

    cfg = HardeningConfig.from_cell(cell)
    res = run_hardening(cfg, progress=progress)
    out = {"metrics": res.metrics, "defense": f"hardening:{cfg.recipe['name']}", "defense_params": res.defense_params()}
    if cfg.backdoor:
        out["attack"] = f"backdoor:{cfg.backdoor.get('trigger', 'static')}"
        out["attack_params"] = dict(cfg.backdoor)
    return out


register_kind("hardening", hardening_cell)
