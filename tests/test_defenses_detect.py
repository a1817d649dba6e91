"""Model-, input- and dataset-inspection defenses on a tiny planted backdoor (synthetic frames)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from defense_helpers import poison, stamp_corner, synthetic, train_tiny
from snnsec import defenses
from snnsec.defenses.membrane_margin import margin_pvalue
from snnsec.defenses.neural_cleanse import NeuralCleanse, mad_anomaly

TARGET = 2
# Fewer NC steps than the audit default: the tiny model converges in a few dozen.
FAST = dict(epochs=6, batches_per_epoch=4, batch_size=12)


@pytest.fixture(scope="module")
def data():
    return synthetic(n_per_class=24, seed=0)


@pytest.fixture(scope="module")
def held_out():
    return synthetic(n_per_class=8, seed=5)


@pytest.fixture(scope="module")
def backdoored(data):
    x, y = data
    return train_tiny(x, y, seed=0, poison_target=TARGET)


@pytest.fixture(scope="module")
def clean(data):
    x, y = data
    return train_tiny(x, y, seed=1)[0]


def test_registry_has_every_kind():
    assert set(defenses.names("model")) >= {"nc", "nc-temporal", "margin"}
    assert set(defenses.names("input")) == {"strip"}
    assert set(defenses.names("dataset")) == {"ac", "ss"}
    assert set(defenses.names("repair")) >= {"fine-pruning", "nc-unlearning", "abl"}
    with pytest.raises(ValueError, match="unknown parameter"):
        defenses.make("nc", step=3)
    with pytest.raises(ValueError, match="unknown name"):
        defenses.get("nope")


def test_mad_anomaly_flags_the_small_outlier_only():
    a, med, mad = mad_anomaly([10, 11, 9, 10.5, 2, 30])
    assert np.argmax(a) == 4 and a[4] > 2
    assert a[5] < 0  # a large norm is not suspicious


def test_margin_pvalue_of_a_clear_outlier():
    k, p, _ = margin_pvalue([1.0, 1.1, 0.9, 1.05, 0.95, 1.02, 5.0, 0.98])
    assert k == 6 and p < 0.05
    assert margin_pvalue([1.0, 1.1, 0.9, 1.05, 0.95, 1.02, 1.08, 0.98])[1] > 0.05


def test_nc_flags_the_planted_target_and_not_the_clean_model(backdoored, clean, held_out):
    model, _ = backdoored
    x, _ = held_out
    d = NeuralCleanse(**FAST)(model, x)
    assert d.backdoored and d.target == TARGET
    assert d.evidence["l1_norms"][TARGET] == min(d.evidence["l1_norms"])
    assert d.artifacts["masks"].shape == (8, 1, 12, 12) and d.artifacts["patterns"].shape == (8, 2, 12, 12)
    c = NeuralCleanse(**FAST)(clean, x)
    assert not c.backdoored and c.target is None
    # inspection left the caller's model as it was
    assert not model.training and all(p.requires_grad for p in model.parameters())


def test_nc_batched_matches_the_per_class_loop(backdoored, held_out):
    model, _ = backdoored
    x, _ = held_out
    kw = dict(epochs=3, batches_per_epoch=2)
    a = NeuralCleanse(batched=True, **kw)(model, x, classes=[1, 2, 3])
    b = NeuralCleanse(batched=False, **kw)(model, x, classes=[1, 2, 3])
    assert np.allclose(a.evidence["l1_norms"], b.evidence["l1_norms"], rtol=1e-3)
    assert torch.allclose(a.artifacts["masks"], b.artifacts["masks"], atol=1e-3)


def test_temporal_nc_has_a_mask_per_frame(backdoored, held_out):
    model, _ = backdoored
    d = defenses.make("nc-temporal", **FAST)(model, held_out[0])
    assert d.artifacts["masks"].shape == (8, 4, 12, 12)
    assert d.target == TARGET


def test_margin_runs_data_free_and_reports_a_pvalue(backdoored):
    model, _ = backdoored
    d = defenses.make("margin", steps=20)(model)
    assert len(d.scores) == 8 and 0.0 <= d.statistic <= 1.0
    assert d.evidence["potential"] in ("membrane", "logits")
    assert d.artifacts["inputs"].shape == (8, 4, 2, 12, 12)
    assert d.backdoored == (d.statistic < 0.05)


def test_strip_separates_triggered_inputs(backdoored, held_out):
    model, _ = backdoored
    x, y = held_out
    s = defenses.make("strip", n_overlays=8, frr=0.1).fit(model, x[::2], x[1::2])
    keep = y != TARGET
    r = s(torch.cat([x[keep], stamp_corner(x[keep])]))
    truth = np.r_[np.zeros(int(keep.sum())), np.ones(int(keep.sum()))]
    m = r.metrics(truth)
    assert m["auroc"] > 0.85 and m["tpr"] > 0.6 and m["fpr"] < 0.3


@pytest.mark.parametrize("name", ["ac", "ss"])
@pytest.mark.parametrize("rep", ["features", "counts"])
def test_dataset_inspection_scores_every_sample(backdoored, data, name, rep):
    model, _ = backdoored
    x, y = data
    xp, yp, idx = poison(x, y, TARGET, seed=0)
    truth = np.zeros(len(x), bool)
    truth[idx.numpy()] = True
    r = defenses.make(name, rep=rep)(model, xp, yp)
    assert r.scores.shape == (len(x),) and r.flagged.dtype == bool
    m = r.metrics(truth)
    assert set(m) == {"tpr", "fpr", "auroc"} and all(0 <= v <= 1 for v in m.values())
    # Everything flagged is in some class; nothing outside the labelled set is scored.
    assert np.isfinite(r.scores).all()


def test_ac_finds_poison_in_the_target_class(backdoored, data):
    model, _ = backdoored
    x, y = data
    xp, yp, idx = poison(x, y, TARGET, seed=0)
    truth = np.zeros(len(x), bool)
    truth[idx.numpy()] = True
    assert defenses.make("ac", rep="counts")(model, xp, yp).metrics(truth)["auroc"] > 0.6


def test_rows_are_tidy(backdoored, held_out):
    d = defenses.make("nc", epochs=1, batches_per_epoch=1)
    rows = defenses.to_rows(d, {"flagged": 1.0, "target_correct": 1.0}, dataset="synthetic", model="tiny", T=4, seed=0,
                            config={"x": 1})
    assert len(rows) == 2 and {r["metric"] for r in rows} == {"flagged", "target_correct"}
    assert all(r["defense"] == "nc" for r in rows)


def test_defense_bench_kind_is_registered():
    from snnsec import bench

    assert "defense" in bench.kinds()
    spec = bench.load_spec("defenses/smoke-ndigits.toml")
    assert {c["defense"] for c in spec.cells} == set(defenses.names()) - {"nc-temporal"}


def test_union_events_merges_and_rescales_time():
    from snnsec.defenses.strip import superimpose, union_events

    dt = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i1")])
    a = np.array([(0, 0, 100, 1), (1, 1, 200, 0)], dtype=dt)
    b = np.array([(2, 2, 5000, 1), (3, 3, 9000, 1), (4, 4, 13000, 0)], dtype=dt)
    u = union_events(a, b)
    assert len(u) == 5 and np.all(np.diff(u["t"]) >= 0)
    assert u["t"].min() == 100 and u["t"].max() == 200
    x = torch.tensor([[0.0, 1.0]])
    assert torch.equal(superimpose(x, torch.tensor([[1.0, 1.0]])), torch.tensor([[1.0, 1.0]]))
    with pytest.raises(ValueError, match="clip"):
        superimpose(x, x, "max")


def test_registry_is_filled_by_the_package_and_kinds_are_base_classes():
    from dataclasses import dataclass

    from snnsec.defenses import base

    assert set(defenses.names("model")) >= {"nc", "nc-temporal", "margin"}
    assert not defenses.get("margin").needs_clean_data and defenses.get("nc").needs_clean_data
    assert defenses.get("abl").needs_fresh_model and defenses.get("abl").needs_training_set

    @dataclass
    class NoKind(base.Defense):
        name = "no-kind"

    with pytest.raises(ValueError, match="must subclass one of"):
        base.register(NoKind)
    assert "no-kind" not in defenses.names()
