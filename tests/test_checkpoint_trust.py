"""The checkpoint trust model: nothing in a checkpoint's files imports or runs code, bad
``arch_kwargs`` and non-regular files are refused before any work, user factories with any
subset of the build arguments load when the user names them."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import threading

import pytest
import torch
import torch.nn as nn

from snnsec import checkpoint, models
from snnsec.cli import main
from snnsec.data.spec import DataSpec

SPEC = DataSpec(name="tiny-synthetic", sensor_size=(12, 12, 2), T=4, classes=tuple(str(c) for c in range(4)))
BUILD = {"in_channels": 2, "num_classes": 4, "sensor_hw": [12, 12], "T": 4}


def _csnn_checkpoint(tmp_path):
    torch.manual_seed(0)
    m = models.build("csnn", **{**BUILD, "sensor_hw": (12, 12)}, channels=[4], hidden=8)
    return checkpoint.save(tmp_path / "ck", m, arch="csnn", arch_kwargs={"channels": [4], "hidden": 8}, spec=SPEC,
                           recipe={})


def _rewrite_meta(ck, **changes):
    meta = json.loads((ck / "model.json").read_text())
    meta.update(changes)
    (ck / "model.json").write_text(json.dumps(meta))


def _package(tmp_path, monkeypatch, name: str, source: str):
    pkg = tmp_path / "site" / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return pkg


def _audit(ck, tmp_path, *extra):
    return main(["audit", str(ck), "--out", str(tmp_path / "audit"), "--methods", "margin", "--param",
                 "margin.steps=3", "--param", "margin.restarts=1", "--no-progress", "--store",
                 str(tmp_path / "store.sqlite"), *extra])


def test_torch_hub_folder_is_refused_and_its_hubconf_never_runs(tmp_path, capsys):
    ck = _csnn_checkpoint(tmp_path)
    marker = tmp_path / "hubconf-ran"
    (ck / "hubconf.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\n"
                                   "def net(**kw):\n    import torch.nn as nn\n    return nn.Identity()\n")
    _rewrite_meta(ck, arch="torch.hub:load",
                  arch_kwargs={"repo_or_dir": str(ck), "source": "local", "model": "net", "trust_repo": True})
    for argv in (["audit", str(ck), "--out", str(tmp_path / "a")], ["eval", str(ck)],
                 ["attack", "adversarial", str(ck), "--attacks", "fgsm", "--eps", "1/255", "--out", str(tmp_path / "b")],
                 ["energy", str(ck), "--out", str(tmp_path / "c")],
                 ["compress", str(ck), "--method", "binary", "--out", str(tmp_path / "d")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "field 'arch' asks to import and call 'torch.hub:load'" in err and "--arch torch.hub:load" in err
    assert not marker.exists()
    with pytest.raises(checkpoint.UntrustedArchitecture, match="Nothing was imported"):
        checkpoint.load(ck)
    from snnsec.runs.event_threats import event_threat_cell

    with pytest.raises(checkpoint.UntrustedArchitecture, match="Nothing was imported"):
        event_threat_cell({"checkpoint": str(ck), "model": "csnn", "threat": "retime", "max_shift": 1})
    assert not marker.exists()


def test_module_named_by_a_checkpoint_is_never_imported(tmp_path, monkeypatch, capsys):
    marker = tmp_path / "imported"
    _package(tmp_path, monkeypatch, "evilpkg", f"""
        open({str(marker)!r}, "w").write("ran at import")

        def net(in_channels, num_classes):
            raise AssertionError("never called")
    """)
    ck = _csnn_checkpoint(tmp_path)
    _rewrite_meta(ck, arch="evilpkg.nets:net", arch_kwargs={})
    assert _audit(ck, tmp_path) == 2
    err = capsys.readouterr().err
    assert "'evilpkg.nets:net'" in err and "--arch evilpkg.nets:net" in err
    assert not marker.exists() and "evilpkg.nets" not in sys.modules
    # Naming a different factory than the file's does not unlock it either.
    assert _audit(ck, tmp_path, "--arch", "csnn") == 2
    assert "you named 'csnn'" in capsys.readouterr().err
    assert not marker.exists()


TWO_ARG_NET = """
    import torch.nn as nn
    from spikingjelly.activation_based import functional, layer, neuron

    def make_net(in_channels=2, num_classes=10):
        net = nn.Sequential(layer.Flatten(), layer.Linear(in_channels * 12 * 12, 16), neuron.LIFNode(),
                            layer.Linear(16, num_classes))
        functional.set_step_mode(net, "m")
        return net
"""


def test_factory_with_two_arguments_audits_when_the_user_names_it(tmp_path, monkeypatch, capsys):
    _package(tmp_path, monkeypatch, "userpkg2", TWO_ARG_NET)
    torch.manual_seed(0)
    m = models.build("userpkg2.nets:make_net", **{**BUILD, "sensor_hw": (12, 12)})
    ck = checkpoint.save(tmp_path / "ck", m, arch="userpkg2.nets:make_net", arch_kwargs={}, spec=SPEC, recipe={})
    assert _audit(ck, tmp_path) == 2
    assert "--arch userpkg2.nets:make_net" in capsys.readouterr().err
    rc = _audit(ck, tmp_path, "--arch", "userpkg2.nets:make_net")
    assert rc in (0, 1)
    verdict = json.loads((tmp_path / "audit" / "verdict.json").read_text())
    assert verdict["arch"] == "userpkg2.nets:make_net" and len(verdict["evidence"]["margin"]["scores"]) == 4


def test_registered_user_factory_loads_without_naming_it_again(tmp_path, monkeypatch):
    _package(tmp_path, monkeypatch, "userpkg3", TWO_ARG_NET)
    import importlib

    factory = importlib.import_module("userpkg3.nets").make_net
    m = models.build(factory, **{**BUILD, "sensor_hw": (12, 12)})
    ck = checkpoint.save(tmp_path / "ck", m, arch="userpkg3.nets:make_net", arch_kwargs={}, spec=SPEC, recipe={})
    with pytest.raises(checkpoint.UntrustedArchitecture):
        checkpoint.load(ck)
    checkpoint.load(ck, arch=factory)  # the factory object itself counts as naming it
    monkeypatch.setitem(models._REGISTRY, "my-two-arg-net", models._Entry(factory, "test"))
    model, _ = checkpoint.load(ck)
    assert model.num_classes == 4


def test_factory_arguments_take_any_subset_of_the_build_arguments():
    seen = {}

    def only_classes(num_classes):
        seen["num_classes"] = num_classes
        return nn.Sequential(nn.Flatten(2), nn.Linear(2 * 12 * 12, num_classes))

    m = models.build(only_classes, **{**BUILD, "sensor_hw": (12, 12)})
    assert seen == {"num_classes": 4} and m.num_classes == 4

    def needs_more(num_classes, depth):
        return nn.Identity()

    with pytest.raises(ValueError, match=r"requires \['depth'\]"):
        models.build(needs_more, **{**BUILD, "sensor_hw": (12, 12)})


def test_arch_kwargs_are_checked_against_the_signature(tmp_path):
    ck = _csnn_checkpoint(tmp_path)
    _rewrite_meta(ck, arch_kwargs={"channels": [4], "hidden": 8, "os_system": "rm -rf /"})
    with pytest.raises(ValueError, match=r"field 'arch_kwargs'.*\['os_system'\] are not parameters of snnsec.models.csnn:csnn"):
        checkpoint.load(ck)
    _rewrite_meta(ck, arch_kwargs={"channels": [4], "hidden": 8, "T": 99})
    with pytest.raises(ValueError, match=r"arch_kwargs \['T'\] are set from the data"):
        checkpoint.load(ck)


def test_huge_arch_kwargs_fail_on_shapes_before_any_allocation(tmp_path):
    ck = _csnn_checkpoint(tmp_path)
    # 10**8 hidden units would be a 10**8 x 144 weight (58 GB) before the shape check; the
    # skeleton on the meta device holds no memory, so this fails at once instead.
    _rewrite_meta(ck, arch_kwargs={"channels": [4], "hidden": 10**8})
    with pytest.raises(ValueError, match=r"model\.safetensors.*shape mismatch.*100000000"):
        checkpoint.load(ck)


def _refused_quickly(fn):
    box = {}

    def run():
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - reported to the test thread
            box["exc"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(60)  # a generous bound; a hang (reading a FIFO) never returns at all
    assert not t.is_alive(), "reading the checkpoint blocked"
    return box.get("exc")


def test_fifo_and_device_as_weights_are_refused(tmp_path, capsys):
    ck = _csnn_checkpoint(tmp_path)
    os.remove(ck / "model.safetensors")
    os.mkfifo(ck / "model.safetensors")
    exc = _refused_quickly(lambda: checkpoint.load(ck))
    assert isinstance(exc, ValueError) and "must be a regular file, but this is a FIFO" in str(exc)
    assert _refused_quickly(lambda: main(["eval", str(ck)])) is None
    assert "a FIFO" in capsys.readouterr().err
    os.remove(ck / "model.safetensors")
    os.symlink("/dev/zero", ck / "model.safetensors")
    exc = _refused_quickly(lambda: checkpoint.load(ck / "model.safetensors"))
    assert isinstance(exc, ValueError) and "a character device" in str(exc)


def test_fifo_as_metadata_is_refused(tmp_path):
    ck = _csnn_checkpoint(tmp_path)
    os.remove(ck / "model.json")
    os.mkfifo(ck / "model.json")
    exc = _refused_quickly(lambda: checkpoint.load(ck))
    assert isinstance(exc, ValueError) and "checkpoint metadata must be a regular file" in str(exc)
