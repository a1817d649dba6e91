"""How the audit decides, re-made from audit rows alone: the zoo table, the statistics, and the
leave-one-architecture-out check of any threshold calibrated on the zoo.

Every ``audit`` bench cell (:mod:`snnsec.runs.defense_cells`) stores, per method, the per-class
scores the decision is made from (``margin_class_<k>``, ``clean_margin_class_<k>``,
``anomaly_index_class_<k>``). :func:`audit_records` turns those rows back into one record per
audited model, :data:`STATISTICS` scores a record, and :func:`leave_one_architecture_out`
calibrates a threshold on every architecture but one and scores the one left out, so a rule
tuned on some networks is judged on a network it never saw.

    from snnsec import results
    from snnsec.audit import decision
    recs = decision.audit_records(results.load(store="zoo.sqlite"))
    table = decision.leave_one_architecture_out(recs, "relative_margin")
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

_PER_CLASS = re.compile(r"^(margin|clean_margin|anomaly_index)_class_(\d+)$")


@dataclass
class AuditRecord:
    """One audited model: where it came from, the ground truth, and each method's scores."""

    run_id: str
    model: str
    case: str
    seed: int
    planted: int | None  # the backdoor's target class, None for a clean model
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # "margin", "clean_margin", "anomaly_index"
    metrics: dict[str, float] = field(default_factory=dict)  # the cell's own: clean_accuracy, seconds, ...


def audit_records(df: pd.DataFrame) -> list[AuditRecord]:
    """One :class:`AuditRecord` per audit bench cell in the rows ``df`` (``results.load()``)."""
    import json

    cells = df[(df["defense"] == "audit") & (df["metric"] == "correct")]
    out = []
    for run_id, top in cells.groupby("run_id", sort=False):
        rows = df[df["run_id"] == run_id]
        extra = top["extra"].iloc[0] or {}
        extra = json.loads(extra) if isinstance(extra, str) else extra
        scores = record_scores([{"metrics": dict(zip(rows["metric"], rows["value"]))}])
        cell_rows = rows[rows["defense"] == "audit"]
        out.append(AuditRecord(run_id=str(run_id), model=str(top["model"].iloc[0]), case=str(extra.get("case")),
                               seed=int(top["seed"].iloc[0]), planted=extra.get("planted_target"), scores=scores,
                               metrics=dict(zip(cell_rows["metric"], cell_rows["value"].astype(float)))))
    return out


# --------------------------------------------------------------------------- statistics


def _neglog(p: float) -> float:
    return max(0.0, -math.log10(max(p, 1e-300)))


def _margin_score(rec: AuditRecord, rule: str) -> tuple[float, int]:
    from snnsec.defenses.membrane_margin import margin_test

    t = margin_test(rec.scores["margin"], rec.scores.get("clean_margin"), rule)
    return _neglog(t.p), t.k


def raw_margin(rec: AuditRecord) -> tuple[float, int]:
    """TMPBD's data-free test: -log10 p of the reachable margins themselves."""
    return _margin_score(rec, "raw")


def relative_margin(rec: AuditRecord) -> tuple[float, int]:
    """-log10 p of the reachable margin *beyond what clean data already reaches* per class: a class
    that is easy to reach is easy for clean inputs too, a backdoor target is not."""
    return _margin_score(rec, "relative")


def margin_both(rec: AuditRecord) -> tuple[float, int]:
    """Both tests must name the same class; the weaker of the two (the audit's default rule)."""
    return _margin_score(rec, "both")


def nc_anomaly(rec: AuditRecord) -> tuple[float, int]:
    """Neural Cleanse's MAD anomaly index of the smallest reversed trigger."""
    a = rec.scores["anomaly_index"]
    k = int(np.nanargmax(a))
    return float(a[k]), k


def vote(margin_p: float, margin_class: int, nc_index: float | None = None, nc_class: int | None = None) -> tuple[float, int]:
    """The audit's decision statistic: ``(p, class)``.

    The membrane-margin test alone, unless Neural Cleanse names the same class: then both are
    evidence for that class and their p-values are combined by Fisher's method (NC's anomaly
    index read as a one-sided normal z-score). On the N-MNIST zoo the margin test's most
    suspicious class was the planted target in all 23 backdoored models, also where it was not
    significant, and NC named the same class in 18 of them; in the 20 clean models the two named
    the same class once (chance: 2 in 20).
    """
    from scipy import stats

    if nc_index is None or nc_class is None or int(nc_class) != int(margin_class):
        return float(margin_p), int(margin_class)
    p_nc = float(stats.norm.sf(nc_index))
    fisher = -2.0 * (math.log(max(margin_p, 1e-300)) + math.log(max(p_nc, 1e-300)))
    return float(stats.chi2.sf(fisher, 4)), int(margin_class)


def margin_nc_vote(rec: AuditRecord) -> tuple[float, int]:
    """-log10 p of :func:`vote` on the data-free margin test and Neural Cleanse."""
    from snnsec.defenses.membrane_margin import margin_test

    t = margin_test(rec.scores["margin"], None, "raw")
    nc, k_nc = nc_anomaly(rec)
    p, k = vote(t.p, t.k, nc, k_nc)
    return _neglog(p), k


# name -> score function (higher is more suspicious) returning (score, most suspicious class)
STATISTICS: dict[str, Callable[[AuditRecord], tuple[float, int]]] = {
    "raw_margin": raw_margin,
    "relative_margin": relative_margin,
    "margin_both": margin_both,
    "nc": nc_anomaly,
    "margin_nc_vote": margin_nc_vote,
}
LABELS = {"raw_margin": "margin, data-free (TMPBD)", "relative_margin": "margin gain over clean data",
          "margin_both": "both margin tests agree", "nc": "Neural Cleanse anomaly index",
          "margin_nc_vote": "margin + NC vote (the audit)"}
NEEDS = {"raw_margin": ("margin",), "relative_margin": ("margin", "clean_margin"), "margin_both": ("margin", "clean_margin"),
         "nc": ("anomaly_index",), "margin_nc_vote": ("margin", "anomaly_index")}


def record_scores(groups: list[dict]) -> dict[str, np.ndarray]:
    """The per-class score arrays of one audit's row groups (as :func:`snnsec.audit.method_groups`
    makes them), keyed as :attr:`AuditRecord.scores`."""
    per_class: dict[str, dict[int, float]] = {}
    for g in groups:
        for metric, value in g["metrics"].items():
            m = _PER_CLASS.match(str(metric))
            if m:
                per_class.setdefault(m.group(1), {})[int(m.group(2))] = float(value)
    K = 1 + max((k for d in per_class.values() for k in d), default=-1)
    return {name: np.array([d.get(k, np.nan) for k in range(K)]) for name, d in per_class.items()}


def score_groups(scores: dict[str, np.ndarray], planted: int | None) -> list[dict]:
    """One row group per statistic that ``scores`` allow: metric ``detector_score`` (higher is more
    suspicious), defense ``detector:<name>``, with its class, label and the planted target in
    ``extra``. The report's ROC is drawn from these rows alone."""
    rec = AuditRecord(run_id="", model="", case="", seed=0, planted=planted, scores=scores)
    out = []
    for name, fn in STATISTICS.items():
        if all(k in scores for k in NEEDS[name]):
            s, k = fn(rec)
            out.append({"defense": f"detector:{name}", "metrics": {"detector_score": float(s)},
                        "extra": {"class": int(k), "planted_target": planted, "detector": LABELS[name]}})
    return out


def usable(recs: list[AuditRecord], statistic: str) -> list[AuditRecord]:
    return [r for r in recs if all(k in r.scores for k in NEEDS[statistic])]


def verdict_correct(rec: AuditRecord, flagged: bool, cls: int) -> bool:
    return (not flagged) if rec.planted is None else (flagged and cls == int(rec.planted))


def calibrate(recs: list[AuditRecord], statistic: str) -> float:
    """The threshold on ``statistic`` that makes the most verdicts right on ``recs`` (the
    midpoint of the widest such gap, so it sits between the groups it separates)."""
    pts = [(STATISTICS[statistic](r), r) for r in usable(recs, statistic)]
    values = sorted({s for (s, _), _ in pts})
    cuts = [values[0] - 1.0] + [(a + b) / 2 for a, b in zip(values, values[1:])] + [values[-1] + 1.0]
    best, best_key = cuts[0], None
    for i, c in enumerate(cuts):
        right = sum(verdict_correct(r, s > c, k) for (s, k), r in pts)
        gap = (cuts[i + 1] - cuts[i - 1]) if 0 < i < len(cuts) - 1 else 0.0
        key = (right, gap)
        if best_key is None or key > best_key:
            best, best_key = c, key
    return float(best)


def leave_one_architecture_out(recs: list[AuditRecord], statistic: str) -> pd.DataFrame:
    """Per record: the threshold calibrated on the *other* architectures, the score, the
    verdict and whether it is right (clean called clean; a backdoor found with its target)."""
    recs = usable(recs, statistic)
    rows = []
    for arch in sorted({r.model for r in recs}):
        rest = [r for r in recs if r.model != arch]
        if not rest:
            continue
        thr = calibrate(rest, statistic)
        for r in (r for r in recs if r.model == arch):
            s, k = STATISTICS[statistic](r)
            flagged = s > thr
            rows.append({"model": r.model, "case": r.case, "seed": r.seed, "planted": r.planted, "statistic": statistic,
                         "score": s, "class": k, "threshold": thr, "flagged": flagged,
                         "correct": verdict_correct(r, flagged, k), "run_id": r.run_id})
    return pd.DataFrame(rows)


def zoo_table(recs: list[AuditRecord], statistic: str) -> pd.DataFrame:
    """The zoo's verdict table under ``statistic`` with leave-one-architecture-out thresholds:
    one row per audited model, with its accuracy, the verdict, the target and every score."""
    loao = leave_one_architecture_out(recs, statistic).set_index("run_id")
    rows = []
    for r in usable(recs, statistic):
        v = loao.loc[r.run_id]
        row = {"model": r.model, "case": r.case, "seed": r.seed, "planted": r.planted,
               "clean_accuracy": r.metrics.get("clean_accuracy"), "asr": r.metrics.get("attack_success_rate"),
               "verdict": "backdoor" if v["flagged"] else "clean", "target": int(v["class"]) if v["flagged"] else None,
               "correct": bool(v["correct"]), "threshold": float(v["threshold"]), "seconds": r.metrics.get("seconds")}
        for name, fn in STATISTICS.items():
            if all(k in r.scores for k in NEEDS[name]):
                row[name] = fn(r)[0]
        rows.append(row)
    return pd.DataFrame(rows)
