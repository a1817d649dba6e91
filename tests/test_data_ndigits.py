"""The embedded ndigits dataset (generated once into a temporary cache) and ``snnsec data``."""

from __future__ import annotations

import os

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from snnsec.cli import main
from snnsec.data import load, ndigits
from snnsec.data.events import event_statistics, validate_events


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    d = tmp_path_factory.mktemp("ndigits-cache")
    load("ndigits", split="train", root=d, progress=False)
    return d


def test_generation_is_deterministic_per_seed():
    from sklearn.datasets import load_digits

    imgs = load_digits().images[:6]
    a, b, c = ndigits.generate(0, images=imgs), ndigits.generate(0, images=imgs), ndigits.generate(1, images=imgs)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["t"], c["t"][: len(a["t"])]) or len(a["t"]) != len(c["t"])


def test_split_counts_and_items(cache):
    tr, spec = load("ndigits", split="train", root=cache, T=8)
    te, _ = load("ndigits", split="test", root=cache, T=8)
    assert (len(tr), len(te)) == (1438, 359) and spec.frame_shape == (8, 2, 34, 34) and spec.num_classes == 10
    assert np.bincount(te.targets.numpy()).tolist() == [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]
    assert not set(tr.sources) & set(te.sources)
    x, y = te[0]
    assert x.dtype == torch.float32 and x.shape == (8, 2, 34, 34) and 0 <= y < 10
    xs = te.frames_tensor(progress=False)
    assert xs.shape == (359, 8, 2, 34, 34) and torch.equal(xs[0], x)
    for i in range(0, len(te), 40):
        validate_events(te.events(i), (34, 34, 2))


def test_cache_is_plain_npz_and_reused(cache):
    files = os.listdir(cache)
    assert files == [ndigits.cache_path(0, cache).name]  # no temporary files left behind
    with np.load(cache / files[0], allow_pickle=False) as z:
        assert set(z.files) == {"x", "y", "t", "p", "offsets"} and z["offsets"][-1] == len(z["t"])
    mtime = os.path.getmtime(cache / files[0])
    ds, _ = load("ndigits", split="test", root=cache)
    assert os.path.getmtime(cache / files[0]) == mtime and len(ds) == 359


def _ndigits_stats(cache):
    te, _ = load("ndigits", split="test", root=cache)
    return event_statistics(te.events(i) for i in range(len(te)))


def test_statistics_look_like_nmnist(cache):
    s = _ndigits_stats(cache)
    assert 1000 <= s["events_min"] and s["events_max"] <= 7000 and 3000 < s["events_mean"] < 5500
    assert 0.45 < s["on_fraction"] < 0.55 and 290 < s["duration_ms_mean"] < 310


def test_statistics_match_the_real_subset(cache, nmnist_root):
    s = _ndigits_stats(cache)
    nm, _ = load("nmnist", split="train", root=nmnist_root)
    r = event_statistics(nm.events(i) for i in range(0, len(nm), 5))
    assert 0.8 < s["events_mean"] / r["events_mean"] < 1.25
    assert abs(s["on_fraction"] - r["on_fraction"]) < 0.03
    assert abs(s["duration_ms_mean"] - r["duration_ms_mean"]) < 15


def test_cli_info_and_show(cache, nmnist_root, tmp_path, capsys, monkeypatch):
    assert main(["data", "info", "nmnist", "--root", str(nmnist_root)]) == 0
    out = capsys.readouterr().out
    assert "sensor 34 x 34 x 2" in out and "total    1000     100" in out
    assert "8          87       2" in out and "ON fraction" in out

    monkeypatch.setenv("SNNSEC_CACHE", str(cache))
    assert main(["data", "info", "ndigits", "--no-stats"]) == 0
    assert "total    1438     359" in capsys.readouterr().out

    for argv in (["ndigits", "0"], ["nmnist", "3", "--root", str(nmnist_root)]):
        png = tmp_path / f"{argv[0]}.png"
        assert main(["data", "show", *argv, "--T", "6", "--out", str(png)]) == 0
        img = mpimg.imread(png)[..., :3]
        red = (img[..., 0] > 0.8) & (img[..., 1] < 0.2) & (img[..., 2] < 0.2)
        blue = (img[..., 2] > 0.8) & (img[..., 0] < 0.2) & (img[..., 1] < 0.2)
        assert red.sum() > 500 and blue.sum() > 500
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]

    assert main(["data", "show", "nmnist", "999", "--root", str(nmnist_root), "--out", str(tmp_path / "x.png")]) == 2
    assert "index 999 out of range: nmnist test has 100 samples" in capsys.readouterr().err
    assert main(["data", "info", "nmnist"]) == 2
    assert "needs root=<folder>" in capsys.readouterr().err
