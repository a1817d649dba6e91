"""Registers the ``audit`` bench kind: one model, clean or backdoored, trained once and audited.

A cell is a backdoor cell (``dataset``, ``root``, ``model``, ``T``, ``trigger``, ``target``,
``rate``, ``epochs``, ``seed`` and trigger parameters, see
:class:`snnsec.attacks.backdoor.run.BackdoorConfig`) plus the audit's own keys: ``case`` (a
label for tables), ``clean_samples`` (default 100), ``methods`` and ``method_params``. A clean
model is a cell with ``rate = 0``: the same training with no sample changed. The model is cached
with the defense bench's models (:func:`snnsec.defenses.bench_cells.cached_backdoor_checkpoint`)
and audited by :func:`snnsec.audit.audit` itself, so a zoo measures exactly what users run.

Metrics: ``backdoored``, ``correct`` (clean verdict on a clean model; backdoor verdict with the
planted target on a backdoored one), the model's ``clean_accuracy`` and ``attack_success_rate``,
and ``seconds`` (the audit alone); each method adds its rows (:func:`snnsec.audit.method_groups`),
with the per-class scores :mod:`snnsec.audit.decision` re-decides from, and each detector statistic
its ``detector_score`` row (:func:`snnsec.audit.decision.score_groups`), which the report's ROC reads.
"""

from __future__ import annotations

from snnsec.bench import register_kind

_AUDIT_KEYS = ("kind", "case", "clean_samples", "methods", "method_params")


def planted_target(cell: dict) -> int | None:
    """The class a cell's model is backdoored toward, or None for a clean (rate 0) model."""
    if cell.get("trigger") != "dynamic" and float(cell.get("rate", 0.1)) == 0.0:
        return None
    return int(cell.get("target", 0))


def audit_cell(cell: dict, *, progress: bool = True) -> dict:
    from snnsec.audit import DEFAULT_METHODS, audit, method_groups
    from snnsec.audit.decision import record_scores, score_groups
    from snnsec.defenses.bench_cells import cached_backdoor_checkpoint

    bcell = {k: v for k, v in cell.items() if k not in _AUDIT_KEYS}
    ckpt = cached_backdoor_checkpoint(bcell, progress=progress)
    result = audit(ckpt, data=cell["dataset"], root=cell.get("root"), n_clean=int(cell.get("clean_samples", 100)),
                   methods=cell.get("methods", DEFAULT_METHODS), method_params=cell.get("method_params"),
                   seed=int(cell.get("seed", 0)), progress=progress, append_rows=False)
    truth = planted_target(cell)
    groups = method_groups(result)
    correct = (not result.backdoored) if truth is None else (result.backdoored and result.target == truth)
    model_metrics = {k: float(v) for k, v in (result.meta.get("metrics") or {}).items()
                     if k in ("clean_accuracy", "attack_success_rate")}
    if truth is None:
        model_metrics.pop("attack_success_rate", None)  # no trigger was planted: there is no ASR to report
    trigger = {k: v for k, v in bcell.items() if k not in ("dataset", "root", "model", "T", "epochs", "batch_size", "lr",
                                                           "seed")}
    return {"metrics": {"backdoored": float(result.backdoored), "correct": float(correct),
                        "seconds": float(result.info["seconds"]), **model_metrics},
            "attack": None if truth is None else f"backdoor:{cell.get('trigger')}",
            "attack_params": None if truth is None else trigger,
            "defense": "audit", "defense_params": {"methods": list(result.info["methods"])},
            "extra": {"case": cell.get("case"), "planted_target": truth, "target": result.target,
                      "checkpoint": str(ckpt)},
            "groups": groups + score_groups(record_scores(groups), truth)}


register_kind("audit", audit_cell)
