"""The production commands emit the rows each report figure reads, and a store filled by them
alone gives a report with every figure.

One store is filled on a slice of ``ndigits`` (128 training / 64 test samples, T=4, one or two
epochs: the models are poor, the rows are real) by ``snnsec attack backdoor``, ``snnsec audit``,
``snnsec attack adversarial`` and the ``defense`` and ``hardening`` bench kinds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from snnsec import bench, checkpoint, results
from snnsec.activity import firing_rates
from snnsec.attacks.backdoor.triggers import trigger_from_spec
from snnsec.cli import main
from snnsec.data import load
from snnsec.report import build_report
from snnsec.report import figures as F
from snnsec.report import style
from snnsec.report.schema import FIGURES
from test_poison import _Subset

N_TRAIN, N_TEST, T, TARGET = 128, 64, 4, 3


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """``(store, folders)``: every producer run once into one store."""
    import snnsec.data

    tmp = tmp_path_factory.mktemp("producers")
    store = tmp / "r.sqlite"
    real = snnsec.data.load

    def small(name, split="train", **kw):
        ds, spec = real(name, split=split, **kw)
        return _Subset(ds, N_TRAIN if split == "train" else N_TEST), spec

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(snnsec.data, "load", small)
        mp.setenv("SNNSEC_CKPT_CACHE", str(tmp / "ckpt-cache"))
        common = ["--store", str(store), "--no-progress"]
        assert main(["attack", "backdoor", "--data", "ndigits", "--T", str(T), "--trigger", "static", "--rate", "0.1",
                     "--target", str(TARGET), "--epochs", "2", "--batch-size", "16", "--out", str(tmp / "bd"), *common]) == 0
        assert main(["audit", str(tmp / "bd"), "--methods", "nc", "--clean-samples", "20", "--param", "nc.epochs=2",
                     "--param", "nc.batches_per_epoch=2", "--param", "nc.batch_size=10", "--out", str(tmp / "audit"),
                     *common]) in (0, 1)
        assert main(["attack", "adversarial", str(tmp / "bd"), "--data", "ndigits", "--attacks", "fgsm",
                     "--eps", "0,8/255,32/255", "--n-samples", "16", "--fast", "--out", str(tmp / "adv"), *common]) == 0
        backdoor = {"dataset": "ndigits", "model": "csnn", "T": T, "epochs": 1, "trigger": "static", "rate": 0.1,
                    "target": TARGET}
        spec = bench.parse_spec({"kind": "defense", "base": backdoor, "sweep": [
            {"defense": "strip", "defense_params": {"n_overlays": 4}},
            {"defense": "fine-pruning", "defense_params": {"finetune_epochs": 1}}]})
        bench.run_spec(spec, store=store, progress=False, log=lambda m: None)
        # two audit cells (a clean and the backdoored model above) for the detector ROC
        spec = bench.parse_spec({"kind": "audit", "base": {**backdoor, "clean_samples": 20, "method_params": {
            "nc": {"epochs": 1, "batches_per_epoch": 2, "batch_size": 10}, "margin": {"steps": 5}}},
            "sweep": [{"case": "clean", "rate": 0.0}, {"case": "static"}]})
        bench.run_spec(spec, store=store, progress=False, log=lambda m: None)
        spec = bench.parse_spec({"kind": "hardening", "base": {"dataset": "ndigits", "model": "csnn", "T": T, "epochs": 1,
                                                               "steps": [1, 2], "recipe": "ce"}})
        bench.run_spec(spec, store=store, progress=False, log=lambda m: None)
        # a leaderboard cell (it reuses the backdoored model above from the cache)
        spec = bench.parse_spec({"kind": "leaderboard", "base": {
            "dataset": "ndigits", "model": "csnn", "T": T, "epochs": 1, "attacks": "fgsm", "eps": ["8/255"], "fast": True,
            "n_samples": 16, "energy_samples": 16, "backdoors": ["static"], "rate": 0.1, "target": TARGET,
            "audit_samples": 20}})
        bench.run_spec(spec, store=store, progress=False, log=lambda m: None)
    return store, tmp


@pytest.fixture(scope="module")
def rows(filled):
    return results.load(filled[0], parse_json=True)


def _x(rows, metric):
    return rows[rows["metric"] == metric]


def test_backdoor_run_stores_one_gallery_clip_per_variant(filled, rows):
    g = _x(rows, "gallery_clip")
    assert sorted(e["variant"] for e in g["extra"]) == ["clean", "poisoned"]
    assert set(g["attack"]) == {"backdoor:static"} and (g["value"] == T).all()
    assert g["run_id"].nunique() == 1 and g["run_id"].iloc[0] in set(_x(rows, "attack_success_rate")["run_id"])
    clips = {e["variant"]: (e["sample"], np.asarray(e["frames"])) for e in g["extra"]}
    i, clean = clips["clean"]
    test, _ = load("ndigits", split="test", T=T)
    assert int(test.targets[i]) != TARGET and clean.shape == (T, 2, 34, 34)
    np.testing.assert_array_equal(clean, test.frames_tensor()[i].numpy())
    _, meta = checkpoint.load(filled[1] / "bd")
    trig = trigger_from_spec(meta["attack"]["trigger"])
    np.testing.assert_array_equal(clips["poisoned"][1], trig(test.frames_tensor()[i:i + 1])[0].numpy())
    # The CLI's figure is the report's, drawn from these rows: the stored frames, pixel for pixel.
    data = F.figure_data(F.fig_trigger_gallery(g))
    shown = F.gallery_time_steps(T)
    assert len(data) == 2 * len(shown)
    np.testing.assert_allclose(data[0]["images"][0], style.polarity_rgb(clean[shown[0]]))
    assert (filled[1] / "bd" / "trigger.png").read_bytes()[:4] == b"\x89PNG"


def test_compact_frames_keep_integers_and_round_the_rest():
    from snnsec.attacks.backdoor.run import FRAME_DECIMALS, compact_frames

    x = torch.tensor([[[[0.0, 1.0], [2.0, 0.0]]]])
    assert compact_frames(x) == [[[[0, 1], [2, 0]]]] and isinstance(compact_frames(x)[0][0][0][0], int)
    y = x + 0.0123456
    assert np.abs(np.asarray(compact_frames(y)) - y.double().numpy()).max() <= 0.5 * 10 ** -FRAME_DECIMALS + 1e-12


def test_backdoor_run_stores_firing_rate_per_layer_clean_and_triggered(filled, rows):
    fr = _x(rows, "firing_rate")
    assert set(fr["attack"]) == {"backdoor:static"} and fr["run_id"].nunique() == 1
    ex = list(fr["extra"])
    layers = sorted({(e["layer_index"], e["layer"]) for e in ex})
    assert [name for _, name in layers] == ["conv1", "conv2", "fc1"]  # csnn's spiking layers
    assert sorted((e["layer_index"], e["triggered"]) for e in ex) == sorted((i, t) for i, _ in layers for t in (False, True))
    assert ((fr["value"] >= 0) & (fr["value"] <= 1)).all() and (fr["value"] > 0).any()
    # Measured on every non-target test sample (fewer than FIRING_SAMPLES here), clean and triggered.
    test, _ = load("ndigits", split="test", T=T)
    x = test.frames_tensor()[:N_TEST][torch.as_tensor(test.targets[:N_TEST]) != TARGET]
    assert {e["n_samples"] for e in ex} == {len(x)}
    model, meta = checkpoint.load(filled[1] / "bd")
    trig = trigger_from_spec(meta["attack"]["trigger"])
    for triggered, inputs in ((False, x), (True, trig(x))):
        stored = {e["layer"]: v for e, v in zip(ex, fr["value"]) if e["triggered"] == triggered}
        assert stored == pytest.approx({r.label: r.rate for r in firing_rates(model, inputs)})
    (panel,) = F.figure_data(F.fig_firing_rate(fr))
    bars = {label: h for label, _, h in panel["bars"]}
    for trig, label in ((False, "clean"), (True, "triggered")):
        want = [fr[[e["triggered"] == trig and e["layer"] == name for e in ex]]["value"].item() for _, name in layers]
        np.testing.assert_allclose(bars[label], want)
    assert panel["xticklabels"] == [name for _, name in layers]


def _test_labels():
    ds, _ = load("ndigits", split="test", T=T)
    return ds.targets[:N_TEST]


def test_firing_rates_count_spikes_per_neuron_per_step():
    from snnsec.harness import SpikingClassifier
    from snnsec.models.plain import LIF, SeqApply

    # Constant currents 2.0 and 1.5 into LIF(tau 2, threshold 1): spikes every step, and every
    # second step; the next layer gets no current and stays silent.
    first, second = nn.Linear(1, 2, bias=False), nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[2.0], [1.5]]))
        second.weight.zero_()
    net = nn.Sequential(SeqApply(nn.Flatten()), SeqApply(first), LIF(), SeqApply(second), LIF(), SeqApply(nn.Linear(1, 2)))
    model = SpikingClassifier(net, T=4, in_channels=1, num_classes=2, sensor_hw=(1, 1))
    rates = firing_rates(model, torch.ones(5, 4, 1, 1, 1), batch_size=2)
    assert [(r.label, r.module) for r in rates] == [("fc1", "backbone.2"), ("fc2", "backbone.4")]
    assert [r.rate for r in rates] == pytest.approx([0.75, 0.0])
    with pytest.raises(ValueError, match="no spiking neuron"):
        firing_rates(nn.Linear(1, 1), torch.ones(1, 1))


def test_audit_stores_the_anomaly_index_per_class(filled, rows):
    verdict = json.loads((filled[1] / "audit" / "verdict.json").read_text())
    # the `snnsec audit` run, not the audit bench cells (those also store a `correct` row)
    bench_runs = set(rows[rows["metric"] == "correct"]["run_id"])
    rows = rows[~rows["run_id"].isin(bench_runs)]
    nc = rows[rows["defense"] == "nc"]
    an = nc[nc["metric"].str.startswith("anomaly_index_class_")]
    by_class = {int(m.rsplit("_", 1)[1]): v for m, v in zip(an["metric"], an["value"])}
    assert by_class == pytest.approx(dict(enumerate(verdict["evidence"]["nc"]["scores"])))
    assert {p["anomaly_threshold"] for p in an["defense_params"]} == {2.0}
    assert set(an["attack"]) == {"backdoor:static"}  # what the checkpoint says was planted
    top = rows[rows["defense"] == "audit"]
    assert top["metric"].tolist() == ["backdoored"] and top["value"].item() == float(verdict["backdoored"])
    assert set(nc["metric"]) >= {"flagged", "statistic", "seconds"}
    (panel,) = F.figure_data(F.fig_anomaly_index(an))
    np.testing.assert_allclose(panel["bars"][0][2], [by_class[k] for k in sorted(by_class)])
    assert (filled[1] / "audit" / "nc_anomaly.png").read_bytes()[:4] == b"\x89PNG"


def test_strip_defense_stores_entropies_per_group(rows):
    s = rows[rows["defense"] == "strip"]
    ent = _x(s, "strip_entropy")
    groups = {e["triggered"]: e["entropies"] for e in ent["extra"]}
    assert set(groups) == {False, True} and len(ent) == 2
    labels = torch.as_tensor(_test_labels())
    held_out = torch.arange(N_TEST) % 2 == 1
    assert len(groups[False]) == int(held_out.sum()) and len(groups[True]) == int((held_out & (labels != TARGET)).sum())
    for e, v in zip(ent["extra"], ent["value"]):
        assert v == pytest.approx(np.mean(e["entropies"]), abs=1e-4)
        assert all(0 <= h <= np.log(10) + 1e-6 for h in e["entropies"])  # nats, 10 classes
    thr = _x(s, "strip_threshold")["value"].item()
    (panel,) = F.figure_data(F.fig_strip_entropy(s))
    counts = {label.split(" ")[0]: h.sum() for label, _, h in panel["bars"]}
    assert counts == {"clean": len(groups[False]), "triggered": len(groups[True])}
    assert any(np.allclose(x, thr) for label, x, _ in panel["lines"] if label.startswith("threshold"))
    # Every row of the cell, groups included, carries the cell's config hash (resumable as a whole).
    assert s["config_hash"].nunique() == 1 and s["run_id"].nunique() == 1


def test_adversarial_cli_figure_is_drawn_from_its_rows(filled, rows):
    adv = rows[rows["attack"].fillna("").str.startswith("adversarial")]
    (panel,) = F.figure_data(F.fig_robust_accuracy(adv))
    worst = dict((label, y) for label, _, y in panel["lines"])["worst case"]
    stored = adv[(adv["attack"] == "adversarial:worst-case") & (adv["metric"] == "robust_accuracy")]
    np.testing.assert_allclose(worst, stored.sort_values("attack_params", key=lambda s: [p["eps"] for p in s])["value"])
    assert (filled[1] / "adv" / "robustness.png").read_bytes()[:4] == b"\x89PNG"


def test_report_from_production_rows_draws_every_figure(filled, tmp_path):
    rep = build_report(tmp_path / "report", store=filled[0])
    assert [f.name for f in rep.drawn] == [f.name for f in FIGURES], [(f.name, f.missing) for f in rep.missing]
