"""The training loop, its hooks, evaluation, and the ``snnsec train`` / ``snnsec eval`` commands."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from snnsec import models
from snnsec.data.spec import DataSpec
from snnsec.train import (CrossEntropy, LossRecipe, MSERate, TrainConfig, evaluate, make_augment, predict,
                          seed_everything, train)

K, T, HW = 4, 4, 16


class Quadrants(torch.utils.data.Dataset):
    """Class c fires in quadrant c (plus background noise): learnable in one epoch."""

    def __init__(self, n, seed, materialised=True):
        g = torch.Generator().manual_seed(seed)
        self.targets = torch.arange(n) % K
        x = (torch.rand(n, T, 2, HW, HW, generator=g) < 0.05).float()
        half = HW // 2
        for i, c in enumerate(self.targets.tolist()):
            r, q = divmod(c, 2)
            block = x[i, :, :, r * half:(r + 1) * half, q * half:(q + 1) * half]
            block.copy_(torch.maximum(block, (torch.rand(block.shape, generator=g) < 0.4).float()))
        self.x = x
        self.spec = DataSpec("quadrants", sensor_size=(HW, HW, 2), T=T, classes=tuple("abcd"))
        if materialised:
            self.frames_tensor = lambda: self.x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.targets[i])


def _model(seed=0):
    torch.manual_seed(seed)
    return models.build("csnn", in_channels=2, num_classes=K, sensor_hw=(HW, HW), T=T, channels=[4], hidden=16)


# batch 8: 24 steps in one epoch, enough for batch-norm running statistics to settle (eval mode)
CFG = TrainConfig(epochs=1, batch_size=8, lr=1e-2, seed=0)


def test_one_epoch_beats_chance_and_history():
    train_ds, test_ds = Quadrants(192, 0), Quadrants(64, 1)
    model = _model()
    before = evaluate(model, test_ds)
    h = train(model, train_ds, test_ds, CFG, progress=False)
    assert set(h) == {"epoch", "loss", "train_accuracy", "test_accuracy", "lr", "seconds", "eval_seconds"}
    assert h["epoch"] == [1] and len(h["loss"]) == 1
    assert h["test_accuracy"][0] == evaluate(model, test_ds)
    assert h["test_accuracy"][0] >= 0.8 > before
    assert h["lr"][-1] == pytest.approx(0.0, abs=1e-9)  # cosine annealed to zero over the run


def test_cosine_per_epoch_steps_once_an_epoch():
    from dataclasses import replace

    h = train(_model(), Quadrants(64, 0), None, replace(CFG, epochs=2, schedule="cosine-epoch"), progress=False)
    # CosineAnnealingLR(T_max=2) stepped after each epoch: lr/2 after the first, 0 after the second
    assert h["lr"] == [pytest.approx(CFG.lr / 2), pytest.approx(0.0, abs=1e-12)]
    per_step = train(_model(), Quadrants(64, 0), None, replace(CFG, epochs=2), progress=False)
    assert per_step["lr"][0] == pytest.approx(CFG.lr / 2) and per_step["lr"][1] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="schedule"):
        replace(CFG, schedule="cosine-batch")


def test_mse_rate_loss_trains():
    model = _model()
    h = train(model, Quadrants(192, 0), Quadrants(64, 1), TrainConfig(epochs=1, batch_size=8, lr=1e-2, loss="mse-rate"),
              progress=False)
    assert h["test_accuracy"][0] >= 0.6
    y = torch.tensor([0, 3])
    loss, rate = MSERate()(model, Quadrants(2, 5).x, y)
    assert float(loss.detach()) == pytest.approx(float(((rate.detach() - nn.functional.one_hot(y, K)) ** 2).mean()))


def test_seeded_runs_repeat_and_per_sample_path_matches_frames_tensor():
    cfg = TrainConfig(epochs=1, batch_size=16, lr=1e-2)
    a = train(_model(), Quadrants(64, 0), None, cfg, progress=False)
    b = train(_model(), Quadrants(64, 0), None, cfg, progress=False)
    c = train(_model(), Quadrants(64, 0, materialised=False), None, cfg, progress=False)
    assert a["loss"] == b["loss"] == c["loss"]
    assert math.isnan(a["test_accuracy"][0])


def test_batch_transform_sees_indices_and_changes_training():
    ds = Quadrants(64, 0)
    seen = []

    def to_class_2(x, y, idx):
        seen.append(idx.clone())
        assert torch.equal(y, ds.targets[idx])  # idx are dataset rows of this batch
        return x, torch.full_like(y, 2)

    h = train(_model(), ds, None, TrainConfig(epochs=3, batch_size=16, lr=5e-2), progress=False, batch_transform=to_class_2)
    assert [len(i) for i in seen] == [16] * 12
    assert sorted(torch.cat(seen[:4]).tolist()) == list(range(64))  # each epoch visits every row once
    assert h["train_accuracy"][-1] >= 0.9  # measured against the transformed labels: the loss saw them


class _LossWithHead(nn.Module):
    """A loss with its own parameter (like a TCL projection head) that returns only the loss."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, model, x, y):
        return nn.functional.cross_entropy(model(x) * self.scale, y)


def test_loss_fn_hook_and_its_parameters_are_trained():
    loss = _LossWithHead()
    h = train(_model(), Quadrants(64, 0), None, TrainConfig(epochs=1, batch_size=16), progress=False, loss_fn=loss)
    assert float(loss.scale.detach()) != 1.0
    assert math.isnan(h["train_accuracy"][0])  # a loss that returns no logits gives no training accuracy


def test_evaluate_predict_restore_modes_and_agree():
    model = _model()
    model.train()
    model.backbone[1].eval()  # e.g. a frozen batch norm
    flags = [m.training for m in model.modules()]
    ds = Quadrants(40, 3)
    acc = evaluate(model, ds, batch_size=16)
    logits = predict(model, ds.x, batch_size=7)
    assert [m.training for m in model.modules()] == flags
    assert logits.shape == (40, K)
    assert acc == pytest.approx(float((logits.argmax(1) == ds.targets).float().mean()))
    assert evaluate(model, (ds.x, ds.targets)) == pytest.approx(acc)
    assert evaluate(model, torch.utils.data.DataLoader(ds, batch_size=9)) == pytest.approx(acc)


def test_augment_and_config_validation():
    aug = make_augment(True)
    assert aug.flip_polarity == 0 and aug.max_shift == 2
    x = Quadrants(8, 0).x
    assert aug(x, torch.Generator().manual_seed(0)).shape == x.shape
    train(_model(), Quadrants(32, 0), None, TrainConfig(epochs=1, batch_size=16, augment={"drop": 0.2}), progress=False)
    assert TrainConfig(epochs=1, augment=True).to_dict()["augment"]["drop"] == 0.1
    with pytest.raises(ValueError, match="TrainConfig.loss"):
        TrainConfig(epochs=1, loss="hinge")
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['blur'\]"):
        TrainConfig(epochs=1, augment={"blur": 1})
    assert LossRecipe("mse-rate").to_dict() == {"name": "mse-rate", "loss": "mse-rate"}
    assert isinstance(LossRecipe().build(None), CrossEntropy)


def test_seed_everything_repeats():
    seed_everything(3)
    a = torch.rand(3)
    seed_everything(3)
    assert torch.equal(a, torch.rand(3))


@pytest.fixture
def quadrants_data(monkeypatch):
    """``snnsec.data.load`` answering "quadrants" with the small synthetic set (other names pass through)."""
    import snnsec.data

    real = snnsec.data.load

    def load(name, split="train", root=None, T=16, slicing="events", binary=True, **opts):
        if name != "quadrants":
            return real(name, split=split, root=root, T=T, slicing=slicing, binary=binary, **opts)
        ds = Quadrants(192 if split == "train" else 64, 0 if split == "train" else 1)
        return ds, ds.spec

    monkeypatch.setattr(snnsec.data, "load", load)


def test_cli_train_writes_three_files_rows_and_eval_agrees(quadrants_data, tmp_path, capsys):
    from snnsec import checkpoint, results
    from snnsec.cli import main

    out, store = tmp_path / "ck", tmp_path / "r.sqlite"
    argv = ["train", "--data", "quadrants", "--model", "csnn", "--model-arg", "channels=[4]", "--model-arg", "hidden=16",
            "--T", "4", "--epochs", "1", "--batch-size", "8", "--lr", "0.01", "--out", str(out), "--store", str(store),
            "--no-progress"]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == [".snnsec-out.json", "metrics.json", "model.json", "model.safetensors"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["n_test"] == 64 and metrics["clean_accuracy"] >= 0.8
    model, meta = checkpoint.load(out)
    assert evaluate(model, Quadrants(64, 1)) == metrics["clean_accuracy"]
    assert meta["arch_kwargs"] == {"channels": [4], "hidden": 16} and meta["seed"] == 0
    assert meta["recipe"]["name"] == "ce" and meta["recipe"]["train"]["epochs"] == 1
    assert meta["metrics"]["clean_accuracy"] == metrics["clean_accuracy"]
    rows = results.load(store)
    assert set(rows["metric"]) == {"clean_accuracy", "train_seconds", "final_train_loss"}
    acc_row = rows[rows["metric"] == "clean_accuracy"].iloc[0]
    assert (acc_row.dataset, acc_row.model, int(acc_row["T"]), int(acc_row.seed)) == ("quadrants", "csnn", 4, 0)
    assert acc_row.value == metrics["clean_accuracy"] and acc_row.run_id == metrics["run_id"]
    assert json.loads(acc_row.config)["kind"] == "train"

    capsys.readouterr()
    assert main(["eval", str(out), "--store", str(store), "--no-progress"]) == 0
    assert f"clean_accuracy={metrics['clean_accuracy']:.4f} on quadrants test split, 64 samples, T=4" in capsys.readouterr().out
    evals = results.load(store, metric="clean_accuracy")
    assert len(evals) == 2 and json.loads(evals.iloc[1].config)["kind"] == "eval"
    assert main(["eval", str(tmp_path / "nowhere"), "--store", str(store)]) == 2


def test_cli_train_hardened_recipe_is_recorded(quadrants_data, tmp_path):
    from snnsec import checkpoint, results
    from snnsec.cli import main
    from snnsec.hardening.recipe import recipe_from_meta

    out, store = tmp_path / "ck", tmp_path / "r.sqlite"
    assert main(["train", "--data", "quadrants", "--model-arg", "channels=[4]", "--model-arg", "hidden=16", "--T", "4",
                 "--epochs", "1", "--batch-size", "16", "--loss", "tcl", "--out", str(out), "--store", str(store),
                 "--no-progress"]) == 0
    _, meta = checkpoint.load(out)
    assert meta["recipe"]["name"] == "tcl" and "loss" not in meta["recipe"]["train"]
    assert recipe_from_meta(meta["recipe"]).loss == "tcl"
    rows = results.load(store, metric="clean_accuracy", parse_json=True)
    assert rows.iloc[0]["defense"] == "hardening:tcl" and rows.iloc[0]["defense_params"]["loss"] == "tcl"


def test_training_through_the_lean_kernels_gives_the_same_weights(monkeypatch):
    import contextlib

    import snnsec.train as train_module

    cfg = TrainConfig(epochs=1, batch_size=16, lr=1e-2, seed=3)
    lean = _model()
    h_lean = train(lean, Quadrants(64, 0), Quadrants(32, 1), cfg, progress=False)
    monkeypatch.setattr(train_module, "lean_kernels", lambda model: contextlib.nullcontext(0))
    plain = _model()
    h_plain = train(plain, Quadrants(64, 0), Quadrants(32, 1), cfg, progress=False)
    assert h_lean["loss"] == h_plain["loss"] and h_lean["test_accuracy"] == h_plain["test_accuracy"]
    for (name, a), (_, b) in zip(lean.state_dict().items(), plain.state_dict().items()):
        assert torch.equal(a, b), name
