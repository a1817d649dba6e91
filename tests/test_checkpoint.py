"""Checkpoints: exact round trips, errors that name what is wrong, and no unpickling ever."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import textwrap

import pytest
import torch

from snnsec import checkpoint, models
from snnsec.data.spec import DataSpec
from snnsec.train import predict

SPEC = DataSpec("toy", sensor_size=(16, 16, 2), T=4, classes=tuple("abcd"))
KW = {"channels": [4], "hidden": 16}


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    m = models.build("csnn", in_channels=2, num_classes=4, sensor_hw=(16, 16), T=4, **{**KW, **kw})
    # a few train-mode passes give the batch norms non-default statistics to round-trip
    with torch.no_grad():
        for _ in range(2):
            m(torch.rand(8, 4, 2, 16, 16))
    return m.eval()


def _x():
    return (torch.rand(6, 4, 2, 16, 16, generator=torch.Generator().manual_seed(1)) < 0.3).float()


@pytest.fixture
def saved(tmp_path):
    m = _model()
    out = checkpoint.save(tmp_path / "ck", m, arch="csnn", arch_kwargs=KW, spec=SPEC, recipe={"name": "ce"},
                          metrics={"clean_accuracy": 0.5}, seed=7)
    return m, out


def test_round_trip_identical_logits_and_metadata(saved):
    m, out = saved
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.safetensors"]
    loaded, meta = checkpoint.load(out)
    assert not loaded.training
    assert torch.equal(predict(loaded, _x()), predict(m, _x()))
    assert meta["arch"] == "csnn" and meta["arch_kwargs"] == KW and meta["seed"] == 7
    assert DataSpec.from_dict(meta["spec"]) == SPEC
    assert meta["T"] == 4 and meta["readout"] == "mean" and meta["build"]["sensor_hw"] == [16, 16]
    assert meta["recipe"] == {"name": "ce"} and meta["metrics"] == {"clean_accuracy": 0.5}
    assert meta["versions"]["torch"] == torch.__version__.split("+")[0] or meta["versions"]["torch"] == torch.__version__
    # the same checkpoint through its two files
    for p in (out / "model.safetensors", out / "model.json"):
        again, _ = checkpoint.load(p)
        assert torch.equal(predict(again, _x()), predict(m, _x()))


def test_weights_only_pt_with_its_json(saved, tmp_path):
    m, out = saved
    torch.save(m.state_dict(), tmp_path / "mine.pt")
    shutil.copy(out / "model.json", tmp_path / "mine.json")
    loaded, _ = checkpoint.load(tmp_path / "mine.pt")
    assert torch.equal(predict(loaded, _x()), predict(m, _x()))
    torch.save({"state_dict": m.state_dict(), "epoch": 3}, tmp_path / "wrapped.pt")
    shutil.copy(out / "model.json", tmp_path / "wrapped.json")
    loaded, _ = checkpoint.load(tmp_path / "wrapped.pt")
    assert torch.equal(predict(loaded, _x()), predict(m, _x()))


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        # what an attacker ships: unpickling calls open(marker, "w"), creating the file
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("container", ["pickle", "torch-zip"])
def test_malicious_pickle_is_refused_and_nothing_runs(saved, tmp_path, container):
    _, out = saved
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    if container == "pickle":
        evil.write_bytes(pickle.dumps({"backbone.0.weight": _Evil(str(marker))}, protocol=2))
    else:
        torch.save({"backbone.0.weight": _Evil(str(marker))}, evil)
    shutil.copy(out / "model.json", tmp_path / "evil.json")
    assert not marker.exists()
    with pytest.raises(ValueError, match=r"evil\.pt: refused.*would run code.*Nothing in it was executed"):
        checkpoint.load(evil)
    assert not marker.exists()


def test_other_pickle_formats_are_not_even_opened(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(_Evil(str(marker))))
    with pytest.raises(ValueError, match=r"model\.pkl: not a checkpoint.*never loaded"):
        checkpoint.load(tmp_path / "model.pkl")
    assert not marker.exists()


def test_shape_mismatch_lists_names(saved):
    _, out = saved
    meta = json.loads((out / "model.json").read_text())
    meta["arch_kwargs"] = {"channels": [8], "hidden": 16}
    (out / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError) as e:
        checkpoint.load(out)
    msg = str(e.value)
    assert "model.safetensors" in msg and "shape mismatch" in msg
    assert "backbone.0.weight (file (4, 2, 3, 3), model (8, 2, 3, 3))" in msg
    assert "backbone.1.running_mean (file (4,), model (8,))" in msg


def test_wrong_architecture_lists_missing_and_unexpected(saved):
    m, out = saved
    meta = json.loads((out / "model.json").read_text())
    meta["arch_kwargs"] = {"channels": [4, 4], "hidden": 16}
    (out / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError) as e:
        checkpoint.load(out)
    msg = str(e.value)
    have = set(m.state_dict())
    want = set(_model(channels=[4, 4]).state_dict())
    assert "wrong architecture" in msg
    assert f"missing from the file ({len(want - have)}): {min(want - have)}" in msg
    assert f"not in architecture 'csnn' ({len(have - want)}): {min(have - want)}" in msg


def test_missing_keys_in_pt(saved, tmp_path):
    m, out = saved
    state = m.state_dict()
    dropped = list(state)[-1]
    del state[dropped]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "m.pt")
    shutil.copy(out / "model.json", tmp_path / "m.json")
    with pytest.raises(ValueError) as e:
        checkpoint.load(tmp_path / "m.pt")
    assert f"missing from the file (1): {dropped}; not in architecture 'csnn' (1): extra.weight" in str(e.value)


def test_metadata_errors_name_file_and_field(saved):
    _, out = saved
    path = out / "model.json"
    good = json.loads(path.read_text())
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"model\.json: not valid JSON"):
        checkpoint.load(out)
    for change, pattern in [
        ({"arch": None}, r"model\.json: field 'arch' is missing"),
        ({"arch_kwargs": [1]}, r"model\.json: field 'arch_kwargs' must be an object"),
        ({"seed": "x"}, r"model\.json: field 'seed' must be an integer"),
        ({"spec": {"name": "toy"}}, r"model\.json: field 'spec': data spec is missing field\(s\) \['sensor_size', 'T'\]"),
        ({"build": {**good["build"], "T": 0}}, r"model\.json: field 'build\.T' must be a positive integer"),
        ({"build": {**good["build"], "T": good["spec"]["T"] + 1}},
         r"model\.json: field 'build\.T' is \d+ but the data spec \(field 'spec\.T'\) gives \d+"),
        ({"build": {**good["build"], "in_channels": 1}}, r"field 'build\.in_channels' is 1 but the data spec"),
        ({"arch": "no-such-net"}, r"model\.json: field 'arch': unknown model 'no-such-net'.*csnn"),
    ]:
        path.write_text(json.dumps({**good, **change}))
        with pytest.raises(ValueError, match=pattern):
            checkpoint.load(out)
    path.unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.json"):
        checkpoint.load(out / "model.safetensors")


def test_replaced_weights_are_detected(saved, tmp_path):
    m, out = saved
    other = checkpoint.save(tmp_path / "other", _model(seed=1), arch="csnn", arch_kwargs=KW, spec=SPEC, recipe={})
    shutil.copy(other / "model.safetensors", out / "model.safetensors")
    with pytest.raises(ValueError, match=r"weights\.sha256"):
        checkpoint.load(out)


def test_user_factory_round_trip(tmp_path, monkeypatch):
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(textwrap.dedent("""
        import torch.nn as nn
        from spikingjelly.activation_based import functional, layer, neuron

        def tiny(*, in_channels, num_classes, sensor_hw, T, width=8):
            net = nn.Sequential(layer.Flatten(), layer.Linear(in_channels * sensor_hw[0] * sensor_hw[1], width),
                                neuron.LIFNode(), layer.Linear(width, num_classes))
            functional.set_step_mode(net, "m")
            return net
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(0)
    m = models.build("userpkg.nets:tiny", in_channels=2, num_classes=4, sensor_hw=(16, 16), T=4, width=6).eval()
    out = checkpoint.save(tmp_path / "ck", m, arch="userpkg.nets:tiny", arch_kwargs={"width": 6}, spec=SPEC, recipe={})
    with pytest.raises(checkpoint.UntrustedArchitecture, match="--arch userpkg.nets:tiny"):
        checkpoint.load(out)  # the file alone never gets its factory imported
    loaded, meta = checkpoint.load(out, arch="userpkg.nets:tiny")
    assert meta["arch"] == "userpkg.nets:tiny"
    assert torch.equal(predict(loaded, _x()), predict(m, _x()))
    assert os.path.exists(out / "model.safetensors")
