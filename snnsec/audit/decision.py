"""How the audit decides, re-made from audit rows alone: the zoo table, the statistics, and the
leave-one-architecture-out check of any threshold calibrated on the zoo.

Every ``audit`` bench cell (:mod:`snnsec.audit.bench_cells`) stores, per method, the per-class
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
        per_class: dict[str, dict[int, float]] = {}
        for metric, value in zip(rows["metric"], rows["value"]):
            m = _PER_CLASS.match(str(metric))
            if m:
                per_class.setdefault(m.group(1), {})[int(m.group(2))] = float(value)
        K = 1 + max((k for d in per_class.values() for k in d), default=-1)
        scores = {name: np.array([d.get(k, np.nan) for k in range(K)]) for name, d in per_class.items()}
        cell_rows = rows[rows["defense"] == "audit"]
        out.append(AuditRecord(run_id=str(run_id), model=str(top["model"].iloc[0]), case=str(extra.get("case")),
                               seed=int(top["seed"].iloc[0]), planted=extra.get("planted_target"), scores=scores,
                               metrics=dict(zip(cell_rows["metric"], cell_rows["value"].astype(float)))))
    return out


# --------------------------------------------------------------------------- statistics


def margin_pvalue(margins) -> tuple[int, float]:
    """(argmax, p) of TMPBD's max-margin test: a Gamma fitted to the K-1 non-maximal values, the
    p-value of the maximum as the largest of K draws."""
    from snnsec.defenses.membrane_margin import margin_pvalue as test

    k, p, _ = test(margins)
    return k, p


def _neglog(p: float) -> float:
    return -math.log10(max(p, 1e-300))


def raw_margin(rec: AuditRecord) -> tuple[float, int]:
    """The shipped test before this module: p of the reachable margins themselves."""
    k, p = margin_pvalue(rec.scores["margin"])
    return _neglog(p), k


def relative_margin(rec: AuditRecord) -> tuple[float, int]:
    """p of the reachable margin *beyond what clean data already reaches* per class: a class that
    is easy to reach (digit 2 on N-MNIST) is easy for clean inputs too, a backdoor target is not."""
    gain = rec.scores["margin"] - np.nan_to_num(rec.scores["clean_margin"], nan=0.0)
    k, p = margin_pvalue(gain)
    return _neglog(p), k


def margin_both(rec: AuditRecord) -> tuple[float, int]:
    """Both margin tests must point at the same class: the smaller of the two scores when they
    agree, else 0. A class that is merely easy (large raw margin, ordinary gain over clean data)
    and a noisy gain on a class no input can reach far (ordinary raw margin) both stay clean."""
    raw, k_raw = raw_margin(rec)
    rel, k_rel = relative_margin(rec)
    return (min(raw, rel), k_raw) if k_raw == k_rel else (0.0, k_raw)


def _mad_index(values: np.ndarray) -> tuple[float, int]:
    """Largest robust z-score (median / MAD x 1.4826, as Neural Cleanse's anomaly index) and its class."""
    v = np.asarray(values, float)
    med = np.median(v)
    mad = 1.4826 * np.median(np.abs(v - med)) + 1e-12
    z = (v - med) / mad
    k = int(np.argmax(z))
    return float(z[k]), k


def margin_gain_index(rec: AuditRecord) -> tuple[float, int]:
    """Robust z-score of the margin gained over the clean data's, per class."""
    return _mad_index(rec.scores["margin"] - np.nan_to_num(rec.scores["clean_margin"], nan=0.0))


def margin_ratio_index(rec: AuditRecord) -> tuple[float, int]:
    """Robust z-score of the reachable margin as a multiple of the clean data's, per class."""
    clean = np.nan_to_num(rec.scores["clean_margin"], nan=0.0)
    return _mad_index(rec.scores["margin"] / np.maximum(clean, 0.25))


def nc_anomaly(rec: AuditRecord) -> tuple[float, int]:
    """Neural Cleanse's MAD anomaly index of the smallest reversed trigger."""
    a = rec.scores["anomaly_index"]
    k = int(np.nanargmax(a))
    return float(a[k]), k


# name -> score function (higher is more suspicious) returning (score, most suspicious class)
STATISTICS: dict[str, Callable[[AuditRecord], tuple[float, int]]] = {
    "raw_margin": raw_margin,
    "relative_margin": relative_margin,
    "margin_both": margin_both,
    "margin_gain_index": margin_gain_index,
    "margin_ratio_index": margin_ratio_index,
    "nc": nc_anomaly,
}
LABELS = {"raw_margin": "margin, data-free (TMPBD)", "relative_margin": "margin gain over clean data",
          "margin_both": "both margin tests agree", "margin_gain_index": "gain, robust z-score",
          "margin_ratio_index": "margin / clean margin, robust z", "nc": "Neural Cleanse anomaly index"}
NEEDS = {"raw_margin": ("margin",), "relative_margin": ("margin", "clean_margin"), "nc": ("anomaly_index",),
         "margin_both": ("margin", "clean_margin"),
         "margin_gain_index": ("margin", "clean_margin"), "margin_ratio_index": ("margin", "clean_margin")}


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
