"""The ``audit`` bench kind and the decision re-made from its rows (leave-one-architecture-out)."""

from __future__ import annotations

import numpy as np
import pytest

from defense_helpers import synthetic, train_tiny
from snnsec import checkpoint, results
from snnsec.audit import decision
from snnsec.data.spec import DataSpec

K = 8
SPEC = DataSpec(name="tiny-synthetic", sensor_size=(12, 12, 2), T=4, classes=tuple(str(c) for c in range(K)))


@pytest.fixture(scope="module")
def tiny_ckpts(tmp_path_factory):
    from defense_helpers import tiny_factory
    from snnsec import models

    models.register("tiny-decision-net", tiny_factory, "test", replace=True)
    x, y = synthetic(n_per_class=24, seed=0)
    root = tmp_path_factory.mktemp("ck")
    bd, _ = train_tiny(x, y, seed=1, poison_target=2)
    cl, _ = train_tiny(x, y, seed=1)
    arch = "defense_helpers:tiny_factory"
    yield {0.0: checkpoint.save(root / "clean", cl, arch=arch, arch_kwargs={}, spec=SPEC, recipe={}),
           0.1: checkpoint.save(root / "bd", bd, arch=arch, arch_kwargs={}, spec=SPEC, recipe={},
                                metrics={"clean_accuracy": 0.9, "attack_success_rate": 1.0})}
    models._REGISTRY.pop("tiny-decision-net", None)


def test_audit_cells_store_what_the_decision_is_remade_from(tiny_ckpts, tmp_path, monkeypatch):
    from snnsec import audit as audit_mod
    from snnsec.bench import parse_spec, run_spec
    from snnsec.runs import defense_cells as bench_cells

    monkeypatch.setattr(bench_cells, "cached_backdoor_checkpoint", lambda cell, **kw: tiny_ckpts[float(cell["rate"])])
    x, y = synthetic(n_per_class=8, seed=5)
    monkeypatch.setattr(audit_mod, "clean_samples", lambda meta, n, **kw: (x[:n], y[:n], "synthetic"))
    spec = parse_spec({"kind": "audit", "base": {"dataset": "tiny", "model": "tiny", "T": 4, "clean_samples": 64,
                                                 "method_params": {"nc": {"epochs": 2, "batches_per_epoch": 2},
                                                                   "margin": {"steps": 20}}},
                       "sweep": [{"case": "clean", "trigger": "static", "rate": 0.0, "target": 0, "seed": [0]},
                                 {"case": "static", "trigger": "static", "rate": 0.1, "target": 2}]})
    store = tmp_path / "s.sqlite"
    assert run_spec(spec, store=store, progress=False, log=lambda *_: None).ran == 2
    recs = decision.audit_records(results.load(store, parse_json=True))
    assert [(r.case, r.planted) for r in recs] == [("clean", None), ("static", 2)]
    for r in recs:
        assert set(r.scores) == {"margin", "clean_margin", "anomaly_index"}
        assert all(len(v) == K for v in r.scores.values())
        assert r.metrics["correct"] in (0.0, 1.0) and r.metrics["seconds"] > 0
    assert "attack_success_rate" not in recs[0].metrics and recs[1].metrics["attack_success_rate"] == 1.0
    # every statistic scores a stored record
    for name in decision.STATISTICS:
        score, cls = decision.STATISTICS[name](recs[1])
        assert np.isfinite(score) and 0 <= cls < K
    # and the ROC figure draws one curve per detector from the same rows
    from snnsec.report.figures import fig_detector_roc

    fig = fig_detector_roc(results.load(store))
    labels = [ln.get_label() for ln in fig.axes[0].get_lines() if not ln.get_label().startswith("_")]
    assert len(labels) == len(decision.STATISTICS) and all("AUC" in lb for lb in labels)


def test_roc_points_count_thresholds_and_never_flag_minus_inf():
    from snnsec.report.figures import roc_points

    fpr, tpr = roc_points([3.0, 2.0, 1.0, -np.inf], [True, False, True, True])
    assert fpr.tolist() == [0.0, 0.0, 1.0, 1.0] and tpr.tolist() == pytest.approx([0.0, 1 / 3, 1 / 3, 2 / 3])


def _rec(model, planted, margins, clean, seed=0):
    return decision.AuditRecord(run_id=f"{model}-{planted}-{seed}", model=model, case="clean" if planted is None else "bd",
                                seed=seed, planted=planted,
                                scores={"margin": np.asarray(margins, float), "clean_margin": np.asarray(clean, float)})


def test_relative_margin_discounts_classes_that_clean_data_reaches_easily():
    # Class 2 is easy: clean inputs already reach a large margin toward it. Raw margins flag
    # it; the gain over the clean reference does not. A backdoor target gains far more.
    clean_margin = [3, 3, 7, 3, 3, 3, 3, 3]
    easy = _rec("a", None, [6.0, 6.2, 11.0, 5.8, 6.1, 5.9, 6.3, 6.0], clean_margin)
    backdoor = _rec("a", 5, [6.0, 6.2, 10.0, 5.8, 6.1, 14.0, 6.3, 6.0], clean_margin)
    raw_easy, k_raw = decision.raw_margin(easy)
    rel_easy, _ = decision.relative_margin(easy)
    rel_bd, k_bd = decision.relative_margin(backdoor)
    assert k_raw == 2 and raw_easy > rel_easy
    assert k_bd == 5 and rel_bd > rel_easy


def test_calibrate_and_leave_one_architecture_out():
    rng = np.random.default_rng(0)
    recs = []
    for arch in ("a", "b", "c"):
        for s in range(4):
            recs.append(_rec(arch, None, 5 + rng.normal(0, 0.3, 8), np.full(8, 3.0), seed=s))
        for t in (1, 4):
            m = 5 + rng.normal(0, 0.3, 8)
            m[t] += 6
            recs.append(_rec(arch, t, m, np.full(8, 3.0)))
    thr = decision.calibrate(recs, "relative_margin")
    assert all(decision.verdict_correct(r, decision.relative_margin(r)[0] > thr, decision.relative_margin(r)[1])
               for r in recs)
    table = decision.leave_one_architecture_out(recs, "relative_margin")
    assert len(table) == len(recs) and table["correct"].all()
    # each architecture's threshold comes from the other two only
    for arch, g in table.groupby("model"):
        assert g["threshold"].nunique() == 1
        assert g["threshold"].iloc[0] == pytest.approx(decision.calibrate([r for r in recs if r.model != arch],
                                                                          "relative_margin"))
