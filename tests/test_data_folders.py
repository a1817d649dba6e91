"""Folder datasets: real N-MNIST subset and gesture clips, synthetic layouts for the rest."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from snnsec.data import info, load, names
from snnsec.data.events import read_event_bin
from snnsec.data.frames import to_frames

TRAIN_COUNTS = [97, 116, 99, 93, 105, 92, 94, 117, 87, 100]
TEST_COUNTS = [8, 14, 8, 11, 14, 7, 10, 15, 2, 11]


def write_bin(path, x, y, t, p):
    """Encode events in the 5-byte N-MNIST format."""
    t = np.asarray(t, dtype=np.int64)
    raw = np.stack([np.asarray(x), np.asarray(y), (np.asarray(p) << 7) | ((t >> 16) & 127), (t >> 8) & 255, t & 255],
                   axis=1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw.tobytes())


def test_names():
    assert set(names()) == {"ndigits", "nmnist", "dvsgesture", "cifar10dvs", "ncaltech101", "shd"}


def test_nmnist_subset_splits_and_items(nmnist_root):
    d = info("nmnist", root=nmnist_root, stats=False)
    assert d["sensor_size"] == (34, 34, 2)
    assert d["splits"]["train"] == {"samples": 1000, "per_class": TRAIN_COUNTS}
    assert d["splits"]["test"] == {"samples": 100, "per_class": TEST_COUNTS}

    ds, spec = load("nmnist", split="test", root=nmnist_root, T=8)
    assert spec.name == "nmnist" and spec.frame_shape == (8, 2, 34, 34) and spec.num_classes == 10
    assert ds.spec is spec and isinstance(ds.targets, torch.Tensor) and ds.targets.dtype == torch.long
    x, y = ds[5]
    assert x.dtype == torch.float32 and x.shape == (8, 2, 34, 34) and set(x.unique().tolist()) <= {0.0, 1.0}
    assert y == int(ds.targets[5])
    assert ds.sources == sorted(ds.sources, key=lambda s: (s.split("/")[-2], s))  # sorted per digit folder
    ev = ds.events(5)
    assert np.array_equal(ev, read_event_bin(ds.sources[5]))
    assert torch.equal(x, torch.from_numpy(to_frames(ev, (34, 34, 2), 8, "events", True)).float())
    xs = ds.frames_tensor(progress=False)
    assert xs.shape == (100, 8, 2, 34, 34) and ds.frames_tensor() is xs and torch.equal(xs[5], x)
    counts, _ = load("nmnist", split="test", root=nmnist_root, T=8, slicing="time", binary=False)
    assert counts[5][0].max() > 1


def test_nmnist_resplit_is_balanced_and_disjoint(nmnist_root):
    tr, spec = load("nmnist", split="train", root=nmnist_root, resplit=True)
    te, _ = load("nmnist-resplit", split="test", root=nmnist_root)
    assert spec.name == "nmnist-resplit" and (len(tr), len(te)) == (900, 200)
    assert np.bincount(te.targets.numpy()).tolist() == [20] * 10
    assert not set(tr.sources) & set(te.sources) and len(set(tr.sources) | set(te.sources)) == 1100
    again, _ = load("nmnist", split="test", root=nmnist_root, resplit=True)
    assert again.sources == te.sources


def test_gesture_flat_clips(gesture_root):
    ds, spec = load("dvsgesture", split="train", root=gesture_root, T=4)
    te, _ = load("dvsgesture", split="test", root=gesture_root, T=4)
    assert len(ds) == 10 and ds.targets.tolist() == list(range(10)) and te.sources == ds.sources
    assert ds.sources[0].endswith("/1.bs2") and ds.sources[9].endswith("/10.bs2")
    assert spec.frame_shape == (4, 2, 128, 128) and spec.num_classes == 11 and "same 10 clips" in ds.note
    assert ds[3][0].shape == (4, 2, 128, 128)


def test_gesture_tonic_layout(tmp_path):
    rng = np.random.default_rng(0)
    base = tmp_path / "DVSGesture" / "ibmGestureTrain"
    for user, label in (("user02_led", 4), ("user01_fluorescent", 7), ("user01_fluorescent", 0)):
        arr = np.stack([rng.integers(0, 128, 20), rng.integers(0, 128, 20), rng.integers(0, 2, 20),
                        np.sort(rng.integers(0, 5000, 20))], axis=1).astype(np.float64)
        (base / user).mkdir(parents=True, exist_ok=True)
        np.save(base / user / f"{label}.npy", arr)
    ds, _ = load("dvsgesture", split="train", root=tmp_path)
    assert ds.targets.tolist() == [0, 7, 4]  # sorted by user folder, then file
    arr = np.load(base / "user01_fluorescent" / "0.npy")
    ev = ds.events(0)
    assert ev["t"].tolist() == (arr[:, 3] * 1000).astype(np.int64).tolist() and ev["x"].tolist() == arr[:, 0].tolist()
    with pytest.raises(FileNotFoundError, match="ibmGestureTest"):
        load("dvsgesture", split="test", root=tmp_path)


def test_ncaltech_shift_crop_and_split(tmp_path):
    base = tmp_path / "Caltech101"
    for cls in ("airplanes", "Faces_easy"):
        for k in range(5):
            write_bin(base / cls / f"image_{k:04d}.bin", [10, 20, 250], [5, 7, 9], [0, 10, 20], [0, 1, 1])
    tr, spec = load("ncaltech101", split="train", root=tmp_path, T=2)
    te, _ = load("ncaltech101", split="test", root=tmp_path, T=2)
    assert spec.classes == ("Faces_easy", "airplanes") and spec.sensor_size == (240, 180, 2)
    assert (len(tr), len(te)) == (8, 2) and sorted(te.targets.tolist()) == [0, 1]
    ev = tr.events(0)
    assert ev["x"].tolist() == [0, 10] and ev["y"].tolist() == [0, 2]  # shifted to 0; x=240 cropped


def test_shd_h5(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "shd_test.h5"
    with h5py.File(path, "w") as f:
        vf, vu = h5py.vlen_dtype(np.float32), h5py.vlen_dtype(np.uint16)
        times = f.create_dataset("spikes/times", (2,), dtype=vf)
        units = f.create_dataset("spikes/units", (2,), dtype=vu)
        times[0], units[0] = np.array([0.001, 0.002, 0.5], np.float32), np.array([3, 699, 3], np.uint16)
        times[1], units[1] = np.array([0.25], np.float32), np.array([1], np.uint16)
        f["labels"] = np.array([19, 2], np.uint16)
    ds, spec = load("shd", split="test", root=tmp_path, T=4, slicing="time", binary=False)
    assert spec.sensor_size == (700, 1, 1) and spec.num_classes == 20 and ds.targets.tolist() == [19, 2]
    ev = ds.events(0)
    assert ev["x"].tolist() == [3, 699, 3] and ev["t"].tolist() == (np.array([0.001, 0.002, 0.5], np.float32).astype(np.float64) * 1e6).astype(np.int64).tolist()
    x, y = ds[0]
    assert x.shape == (4, 1, 1, 700) and y == 19 and x.sum() == 2  # time bins drop the last event, as tonic
    with pytest.raises(FileNotFoundError, match="shd_train.h5"):
        load("shd", split="train", root=tmp_path)


def test_cifar10dvs_layout_and_missing_reader(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"<class>/\*\.aedat4"):
        load("cifar10dvs", split="train", root=tmp_path)
    from snnsec.data.datasets import CIFAR10_CLASSES

    for c in CIFAR10_CLASSES:
        for k in range(10):
            (tmp_path / c).mkdir(exist_ok=True)
            (tmp_path / c / f"cifar10_{c}_{k}.aedat4").write_bytes(b"")
    try:
        import aedat  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="pip install aedat"):
            load("cifar10dvs", split="train", root=tmp_path)
    else:
        tr, _ = load("cifar10dvs", split="train", root=tmp_path)
        te, _ = load("cifar10dvs", split="test", root=tmp_path)
        assert (len(tr), len(te)) == (90, 10)


def test_missing_and_incomplete_folders_say_what_is_expected(tmp_path):
    with pytest.raises(ValueError, match=r"nmnist: needs root=<folder>.*Train/<digit 0-9>/\*\.bin"):
        load("nmnist", split="train")
    with pytest.raises(FileNotFoundError, match=r"root folder .*nowhere does not exist"):
        load("nmnist", split="train", root=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"nmnist: .*Train not found; expected the N-MNIST layout"):
        load("nmnist", split="train", root=tmp_path)
    for d in range(10):
        if d != 5:
            write_bin(tmp_path / "Train" / str(d) / "00001.bin", [1], [1], [0], [0])
    with pytest.raises(FileNotFoundError, match=r"no \.bin recordings in .*Train/5"):
        load("nmnist", split="train", root=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"ncaltech101: .*Caltech101 not found"):
        load("ncaltech101", split="train", root=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"dvsgesture: neither .*ibmGestureTrain nor N\.bs2"):
        load("dvsgesture", split="train", root=tmp_path)
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        load("mnist", root=tmp_path)
    with pytest.raises(ValueError, match="split must be one of"):
        load("nmnist", split="val", root=tmp_path)
    with pytest.raises(ValueError, match="slicing"):
        load("nmnist", split="train", root=tmp_path, slicing="space")


def test_truncated_recording_in_a_dataset_names_the_file(tmp_path):
    for d in range(10):
        write_bin(tmp_path / "Test" / str(d) / "00001.bin", [1, 2], [1, 2], [0, 5], [0, 1])
    bad = tmp_path / "Test" / "3" / "00001.bin"
    bad.write_bytes(bad.read_bytes()[:-1])
    ds, _ = load("nmnist", split="test", root=tmp_path)
    with pytest.raises(ValueError, match=r"Test/3/00001\.bin: truncated event file"):
        ds[3]


def test_empty_recording_names_the_file(tmp_path):
    for d in range(10):
        write_bin(tmp_path / "Test" / str(d) / "00001.bin", [1, 2], [1, 2], [0, 5], [0, 1])
    (tmp_path / "Test" / "4" / "00001.bin").write_bytes(b"")
    ds, _ = load("nmnist", split="test", root=tmp_path)
    with pytest.raises(ValueError, match=r"Test/4/00001\.bin: the recording holds no events"):
        ds[4]


def test_unknown_options_are_value_errors(nmnist_root):
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['shuffle'\]"):
        load("nmnist", root=nmnist_root, shuffle=True)
    with pytest.raises(ValueError, match="only applies to ndigits"):
        load("nmnist", root=nmnist_root, generation_seed=3)
    with pytest.raises(ValueError, match="only available for nmnist"):
        load("dvsgesture", root=nmnist_root, resplit=True)
