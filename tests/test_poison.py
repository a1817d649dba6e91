"""The poisoning wrapper: counts, determinism, labels, and the vectorised batch path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from snnsec.attacks.backdoor.poison import PoisonedDataset, poison_label, select_poison_indices
from snnsec.attacks.backdoor.triggers import StaticTrigger


class Frames(torch.utils.data.Dataset):
    def __init__(self, n=103, k=10, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = (torch.rand(n, 4, 2, 12, 12, generator=g) > 0.8).float()
        self.targets = torch.arange(n) % k

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.targets[i])


@pytest.mark.parametrize("rate", [0.0, 0.01, 0.05, 0.1, 0.333, 1.0])
def test_count_is_round_rate_n(rate):
    ds = Frames()
    pds = PoisonedDataset(ds, StaticTrigger(), rate=rate, target=0, seed=1)
    assert len(pds.poisoned_indices) == round(rate * len(ds))
    assert len(set(pds.poisoned_indices.tolist())) == len(pds.poisoned_indices)


def test_selection_deterministic_for_seed():
    y = np.arange(1000) % 10
    a = select_poison_indices(y, 0.1, seed=3)
    assert np.array_equal(a, select_poison_indices(y, 0.1, seed=3))
    assert not np.array_equal(a, select_poison_indices(y, 0.1, seed=4))


def test_exclude_target_poisons_other_classes_only():
    y = np.arange(1000) % 10
    idx = select_poison_indices(y, 0.1, target=3, seed=0, exclude_target=True)
    assert len(idx) == 100 and not (y[idx] == 3).any()
    assert (y[select_poison_indices(y, 0.1, target=3, seed=0)] == 3).any()  # the reference's draw includes it
    with pytest.raises(ValueError, match="800 non-target samples|only 900 are eligible"):
        select_poison_indices(y, 0.95, target=3, exclude_target=True)
    with pytest.raises(ValueError, match="dirty-label"):
        select_poison_indices(y, 0.05, target=3, label_mode="clean", exclude_target=True)
    with pytest.raises(ValueError, match="all-to-one"):
        PoisonedDataset(Frames(), StaticTrigger(), rate=0.1, mode="all-to-all", exclude_target=True)


def test_dirty_all_to_one_labels_and_frames():
    ds = Frames()
    trig = StaticTrigger(polarity="on")
    pds = PoisonedDataset(ds, trig, rate=0.2, target=3, seed=0)
    for i in range(len(ds)):
        x, y = pds[i]
        if i in set(pds.poisoned_indices.tolist()):
            assert y == 3 and torch.equal(x, trig(ds.x[i]))
        else:
            assert y == int(ds.targets[i]) and torch.equal(x, ds.x[i])


def test_all_to_all_and_clean_label():
    ds = Frames()
    a2a = PoisonedDataset(ds, StaticTrigger(), rate=0.3, mode="all-to-all", seed=0)
    idx = torch.from_numpy(a2a.poisoned_indices)
    assert torch.equal(a2a.targets[idx], (ds.targets[idx] + 1) % 10)
    clean = PoisonedDataset(ds, StaticTrigger(), rate=0.05, target=2, label_mode="clean", seed=0)
    assert len(clean.poisoned_indices) == round(0.05 * len(ds))
    assert bool((ds.targets[torch.from_numpy(clean.poisoned_indices)] == 2).all())
    assert torch.equal(clean.targets, ds.targets)  # labels never change in clean-label mode
    with pytest.raises(ValueError, match="eligible"):
        PoisonedDataset(ds, StaticTrigger(), rate=0.5, target=2, label_mode="clean")
    with pytest.raises(ValueError, match="rate"):
        PoisonedDataset(ds, StaticTrigger(), rate=1.5)


def test_batch_transform_matches_getitem():
    ds = Frames()
    pds = PoisonedDataset(ds, StaticTrigger(position="bottom-right", polarity="both"), rate=0.25, target=0, seed=5)
    idx = torch.arange(10, 42)
    x, y = pds.batch_transform(ds.x[idx], ds.targets[idx], idx)
    want = [pds[int(i)] for i in idx]
    assert torch.equal(x, torch.stack([w[0] for w in want]))
    assert y.tolist() == [w[1] for w in want]


def test_poison_label_modes():
    y = torch.tensor([0, 4, 9])
    assert poison_label(y, 7, "all-to-one", 10).tolist() == [7, 7, 7]
    assert poison_label(y, 7, "all-to-all", 10).tolist() == [1, 5, 0]
    with pytest.raises(ValueError, match="mode"):
        poison_label(y, 0, "some-to-one", 10)


class _Subset:
    """The first n samples of a loaded dataset, keeping the loader's interface."""

    def __init__(self, ds, n):
        self.ds, self.n, self.spec = ds, n, ds.spec
        self.targets = ds.targets[:n]

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.ds[i]

    def frames_tensor(self):
        return self.ds.frames_tensor()[: self.n]

    def events(self, i):
        return self.ds.events(i)


def test_cli_backdoor_writes_checkpoint_metrics_figure_rows(nmnist_root, tmp_path, monkeypatch):
    import json

    import snnsec.data
    from snnsec import checkpoint, results
    from snnsec.attacks.backdoor.run import evaluate_backdoor
    from snnsec.attacks.backdoor.triggers import trigger_from_spec
    from snnsec.cli import main

    real = snnsec.data.load
    monkeypatch.setattr(snnsec.data, "load", lambda name, split="train", **kw: (_Subset(real(name, split=split, **kw)[0], 96 if split == "train" else 40), real(name, split=split, **kw)[1]))
    out, store = tmp_path / "bd", tmp_path / "r.sqlite"
    code = main(["attack", "backdoor", "--data", "nmnist", "--root", str(nmnist_root), "--T", "4", "--trigger", "static",
                 "--position", "random", "--polarity", "both", "--rate", "0.1", "--target", "0", "--epochs", "1",
                 "--seed", "3", "--out", str(out), "--store", str(store), "--no-progress"])
    assert code == 0
    m = json.loads((out / "metrics.json").read_text())
    assert {"clean_accuracy", "attack_success_rate", "ssim"} <= set(m)
    assert (out / "trigger.png").stat().st_size > 1000
    model, meta = checkpoint.load(out)
    attack = meta["attack"]
    assert attack["trigger"]["name"] == "static" and len(attack["poisoned_indices"]) == round(0.1 * 96)
    # Re-applied from model.json, the trigger (random position included) gives the same ASR.
    trig = trigger_from_spec(attack["trigger"])
    test, _ = snnsec.data.load("nmnist", split="test", root=nmnist_root, T=4)
    x, y = test.frames_tensor(), test.targets
    again = evaluate_backdoor(model, trig, x, y, trig(x), target=0, mode="all-to-one", num_classes=10)
    assert again["attack_success_rate"] == pytest.approx(m["attack_success_rate"])
    df = results.load(store)
    assert set(df.metric) >= {"clean_accuracy", "attack_success_rate", "ssim"} and set(df.attack) == {"backdoor:static"}
    with pytest.raises(SystemExit):
        main(["attack", "backdoor", "--data", "nmnist", "--trigger", "flash", "--out", str(out), "--position", "nowhere"])
    assert main(["attack", "backdoor", "--data", "ndigits", "--trigger", "flash", "--position", "middle", "--out", str(out)]) == 2


def test_cli_backdoor_out_of_range_values_exit_2_before_training(nmnist_root, tmp_path, monkeypatch, capsys):
    import snnsec.train
    from snnsec.cli import main

    def no_training(*a, **k):
        raise AssertionError("training started before the inputs were checked")

    monkeypatch.setattr(snnsec.train, "train", no_training)
    base = ["attack", "backdoor", "--data", "nmnist", "--root", str(nmnist_root), "--T", "4", "--trigger", "static",
            "--out", str(tmp_path / "bd"), "--no-progress"]
    assert main(base + ["--target", "99"]) == 2
    assert "backdoor target 99: expected a class index in [0, 10)" in capsys.readouterr().err
    assert main(base + ["--model-arg", "hidden=abc"]) == 2
    assert "arch_kwargs hidden='abc' is str, expected an integer (its default is 128)" in capsys.readouterr().err
    for flag, value in (("--epochs", "0"), ("--batch-size", "-1"), ("--T", "0"), ("--rate", "1.5")):
        with pytest.raises(SystemExit) as e:
            main(base + [flag, value])
        assert e.value.code == 2 and f"argument {flag}: expected" in capsys.readouterr().err
    assert not (tmp_path / "bd").exists()


def test_reference_preset_fills_what_the_cell_leaves_unset():
    from snnsec.attacks.backdoor.run import BackdoorConfig

    ref = BackdoorConfig.from_cell({"dataset": "nmnist", "model": "csnn", "trigger": "static", "preset": "reference"})
    assert (ref.slicing, ref.binary, ref.loss, ref.batch_size, ref.schedule, ref.preset) == (
        "number", False, "mse-rate", 16, "cosine-epoch", "reference")
    mine = BackdoorConfig.from_cell({"dataset": "nmnist", "trigger": "static", "preset": "reference", "batch_size": 8})
    assert mine.batch_size == 8 and mine.slicing == "number"
    plain = BackdoorConfig.from_cell({"dataset": "nmnist", "trigger": "static"})
    assert (plain.slicing, plain.binary, plain.loss, plain.batch_size, plain.preset) == ("events", True, "ce", 32, "snnsec")
    with pytest.raises(ValueError, match="preset must be one of"):
        BackdoorConfig.from_cell({"dataset": "nmnist", "trigger": "static", "preset": "paper"})
