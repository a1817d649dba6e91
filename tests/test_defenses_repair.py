"""Repairs on a tiny planted backdoor: they return a new model and do what they promise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from defense_helpers import FramesDataset, poison, stamp_corner, synthetic, tiny, train_tiny
from snnsec import defenses, metrics
from snnsec.harness import predict

TARGET = 2


@pytest.fixture(scope="module")
def setup():
    x, y = synthetic(n_per_class=24, seed=0)
    model, idx = train_tiny(x, y, seed=0, poison_target=TARGET)
    xt, yt = synthetic(n_per_class=8, seed=5)
    return x, y, model, idx, xt, yt


def ca_asr(model, xt, yt):
    return (metrics.clean_accuracy(predict(model, xt, batch_size=64), yt),
            metrics.attack_success_rate(predict(model, stamp_corner(xt), batch_size=64), yt, TARGET))


def test_fine_pruning_prunes_dormant_channels_and_keeps_accuracy(setup):
    _, _, model, _, xt, yt = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = defenses.make("fine-pruning", finetune_epochs=2)(model, xt, yt)
    assert r.model is not model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert 0 < r.extra["pruned_channels"] < r.extra["channels"]
    assert r.extra["acc_after_prune"] >= r.extra["acc_before"] * 0.9
    # pruned channels stay silent in the returned model
    from snnsec.defenses.fine_pruning import last_conv

    acts = []
    h = last_conv(r.model).register_forward_hook(lambda m, i, o: acts.append(o.detach()))
    predict(r.model, xt[:4])
    h.remove()
    silent = (acts[0].transpose(0, -3).reshape(acts[0].shape[-3], -1).abs().sum(1) == 0).sum()
    assert int(silent) >= r.extra["pruned_channels"]
    assert ca_asr(r.model, xt, yt)[0] >= 0.8


def test_nc_unlearning_lowers_asr(setup):
    _, _, model, _, xt, yt = setup
    ca0, asr0 = ca_asr(model, xt, yt)
    r = defenses.make("nc-unlearning", epochs=4, nc={"epochs": 6, "batches_per_epoch": 4, "batch_size": 12})(model, xt, yt)
    assert r.extra["unlearned_label"] == TARGET
    ca1, asr1 = ca_asr(r.model, xt, yt)
    assert asr1 < asr0 and ca1 >= ca0 - 0.15
    der = metrics.defense_effectiveness_rating(asr0, asr1, ca0, ca1)
    assert der > 0.5


def test_abl_isolates_then_unlearns(setup):
    x, y, _, _, _, _ = setup
    xp, yp, idx = poison(x, y, TARGET, seed=0)
    r = defenses.make("abl", isolation_ratio=0.05, tuning_epochs=2, finetuning_epochs=1, unlearning_epochs=2, lr=5e-3,
                      unlearning_lr=5e-3)(tiny(), xp, yp)
    assert len(r.extra["isolated"]) == round(0.05 * len(x))
    # gradient ascent on the isolated samples raises their loss
    assert r.extra["isolated_loss_after_unlearning"] > r.extra["isolated_loss_before_unlearning"]


@pytest.mark.parametrize("name, expected", [
    ("nc", {"flagged", "target_correct", "statistic"}),
    ("margin", {"flagged", "target_correct", "statistic"}),
    ("strip", {"tpr", "fpr", "auroc"}),
    ("ss", {"tpr", "fpr", "auroc"}),
    ("fine-pruning", {"ca_before", "asr_before", "ca", "asr", "ra", "der"}),
    ("abl", {"ca_before", "asr_before", "ca", "asr", "ra", "der"}),
])
def test_defense_bench_cell(setup, monkeypatch, name, expected):
    from snnsec.runs import defense_cells as bench_cells

    x, y, model, _, xt, yt = setup
    from defense_helpers import tiny_factory
    from snnsec import models

    monkeypatch.setitem(models._REGISTRY, "tiny-repair-net", models._Entry(tiny_factory, "test"))
    T, P, H, W = model.input_shape
    meta = {"attack": {"target": TARGET}, "arch": "tiny-repair-net", "arch_kwargs": {},
            "build": {"in_channels": P, "num_classes": model.num_classes, "sensor_hw": [H, W], "T": T}}
    monkeypatch.setattr(bench_cells, "backdoored_model", lambda cell, **kw: (model, stamp_corner, meta))
    from types import SimpleNamespace

    from snnsec import checkpoint

    spec = SimpleNamespace(num_classes=model.num_classes)
    monkeypatch.setattr(checkpoint, "matching_dataset",
                        lambda meta, *, split="test", **kw: (FramesDataset(x, y) if split == "train" else FramesDataset(xt, yt), spec))
    params = {"nc": {"epochs": 2, "batches_per_epoch": 2}, "margin": {"steps": 5}, "strip": {"n_overlays": 4},
              "fine-pruning": {"finetune_epochs": 1}, "abl": {"tuning_epochs": 1, "finetuning_epochs": 1, "unlearning_epochs": 1}}
    out = bench_cells.defense_cell({"kind": "defense", "dataset": "tiny", "model": "tiny", "T": 4, "trigger": "static",
                                    "target": TARGET, "rate": 0.1, "seed": 0, "defense": name,
                                    "defense_params": params.get(name, {})}, progress=False)
    assert set(out["metrics"]) == expected | {"seconds"}
    assert out["defense"] == name and out["attack"] == "backdoor:static"
    assert all(np.isfinite(v) for v in out["metrics"].values())
    # The rows the report draws besides the metrics: entropies per group, anomaly index per class.
    groups = {m: g for g in out["groups"] for m in g["metrics"]}
    if name == "strip":
        assert set(groups) == {"strip_entropy", "strip_threshold"}
        ent = [g for g in out["groups"] if "strip_entropy" in g["metrics"]]
        held_out = torch.arange(len(xt)) % 2 == 1  # the cell fits on the even half
        assert [(g["extra"]["triggered"], len(g["extra"]["entropies"])) for g in ent] == [
            (False, int(held_out.sum())), (True, int((held_out & (yt != TARGET)).sum()))]
    elif name == "nc":
        assert set(groups) == {f"anomaly_index_class_{k}" for k in range(int(yt.max()) + 1)}
    elif name == "margin":  # data-free here: the reachable margin per class, no clean reference
        assert set(groups) == {f"margin_class_{k}" for k in range(int(yt.max()) + 1)}
    else:
        assert out["groups"] == []
