"""--device and --backend: checked before any work, recorded only off the CPU, and carried to
every place a model is built or loaded (tests/gpu runs the CUDA side where there is one)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import spikingjelly
from snnsec import bench, checkpoint, devices
from snnsec.cli import main

NO_CUDA = not torch.cuda.is_available()


def test_the_backend_variables_are_those_the_installed_spikingjelly_reads():
    ops = Path(spikingjelly.__file__).parent / "_ops"
    declared = set()
    for init in ops.glob("*/__init__.py"):
        declared |= set(re.findall(r'"SJ_([A-Z_]+)_CUDA_IMPLEMENTATION"', init.read_text(encoding="utf-8")))
    assert declared == set(devices.SJ_OPERATORS)


def test_apply_backend_sets_every_operator_and_refuses_unknown_names():
    env: dict[str, str] = {}
    devices.apply_backend("triton", env)
    assert env == {devices.backend_variable(op): "triton" for op in devices.SJ_OPERATORS}
    assert devices.backend_in_use(env) == "triton"
    assert devices.backend_in_use({}) == "auto"
    with pytest.raises(ValueError, match="--backend: expected one of auto, cuda, triton, torch, got 'cupy'"):
        devices.apply_backend("cupy", env)


def test_a_backend_change_after_spikingjelly_loaded_its_operators_is_refused(monkeypatch):
    import spikingjelly._ops  # noqa: F401  (the operators read their choice when imported)

    for op in devices.SJ_OPERATORS:
        monkeypatch.delenv(devices.backend_variable(op), raising=False)
    devices.apply_backend("auto")  # what is in force already: allowed
    with pytest.raises(ValueError, match="already imported in this process with \\['auto'\\]"):
        devices.apply_backend("torch")


@pytest.mark.parametrize("text, expected", [("cpu", "cpu"), ("CUDA", "cuda"), (" cuda:1 ", "cuda:1")])
def test_device_names(text, expected):
    assert devices.parse_device(text) == expected


@pytest.mark.parametrize("text", ["gpu", "cuda:", "cuda:x", "mps", ""])
def test_bad_device_names(text):
    with pytest.raises(ValueError, match="expected cpu, cuda or cuda:N"):
        devices.parse_device(text)


@pytest.mark.skipif(not NO_CUDA, reason="this torch sees a GPU")
def test_cuda_without_a_gpu_is_refused_with_what_to_do():
    with pytest.raises(ValueError, match="--device cuda: CUDA is not available: this torch is a CPU build; use --device cpu"):
        devices.check_device("cuda")


def test_the_cpu_is_recorded_as_before():
    # CPU runs keep the config (and hash) they had before devices existed
    assert devices.describe("cpu") == {}


@pytest.mark.skipif(not NO_CUDA, reason="this torch sees a GPU")
def test_cli_refuses_cuda_before_any_work(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--data", "ndigits", "--epochs", "1", "--out", str(out), "--device", "cuda"])
    assert code == 2
    assert "--device cuda: CUDA is not available" in capsys.readouterr().err
    assert not out.exists()


def test_checkpoint_load_places_the_model(tmp_path):
    from snnsec.data.spec import DataSpec
    from snnsec.models import build

    net = build("csnn", in_channels=2, num_classes=3, sensor_hw=(8, 8), T=2)
    spec = DataSpec("toy", sensor_size=(8, 8, 2), T=2, classes=("a", "b", "c"))
    checkpoint.save(tmp_path / "ck", net, arch="csnn", arch_kwargs={}, spec=spec, recipe={})
    model, _ = checkpoint.load(tmp_path / "ck", device="meta")
    assert {p.device.type for p in model.parameters()} == {"meta"}


def test_a_cell_device_is_checked_and_canonical():
    spec = bench.parse_spec({"kind": "backdoor", "base": {"dataset": "ndigits", "model": "csnn", "device": "cpu"}},
                            source="s.toml")
    plain = bench.parse_spec({"kind": "backdoor", "base": {"dataset": "ndigits", "model": "csnn"}}, source="s.toml")
    assert spec.cells == plain.cells  # the CPU is no field: hashes of grids run before devices hold
    assert spec.on_device("CUDA").cells[0]["device"] == "cuda"
    assert spec.on_device("cuda").on_device("cpu").cells == plain.cells
    assert spec.on_device("cuda:1").devices() == {"cuda:1"}
    both = bench.parse_spec({"kind": "backdoor", "base": {"dataset": "ndigits", "model": "csnn"},
                             "sweep": [{"device": ["cpu", "cuda"]}]}, source="s.toml")
    assert len(both.cells) == 2 and len(both.on_device("cuda").cells) == 1
    with pytest.raises(ValueError, match="s.toml: field 'device': expected cpu, cuda or cuda:N, got 'gpu'"):
        bench.parse_spec({"kind": "backdoor", "base": {"dataset": "d", "model": "m", "device": "gpu"}}, source="s.toml")
    cell, device = devices.split_cell({"kind": "backdoor", "device": "cuda", "seed": 0})
    assert (cell, device) == ({"kind": "backdoor", "seed": 0}, "cuda")
    assert devices.split_cell({"seed": 0}) == ({"seed": 0}, "cpu")


@pytest.mark.skipif(not NO_CUDA, reason="this torch sees a GPU")
def test_a_cuda_grid_without_a_gpu_stops_before_any_cell(tmp_path):
    spec = bench.parse_spec({"kind": "backdoor", "base": {"dataset": "ndigits", "model": "csnn"}}, source="s.toml")
    with pytest.raises(ValueError, match="s.toml: cells with device cuda: CUDA is not available"):
        bench.run_spec(spec, store=tmp_path / "r.sqlite", progress=False, device="cuda")
    assert not (tmp_path / "r.sqlite").exists() or bench.results.Store(tmp_path / "r.sqlite").load().empty


def test_ray_cells_on_cuda_need_gpus_in_the_spec():
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'snnsec[ray]')")
    from snnsec.runs.cluster import RayCells

    spec = bench.parse_spec({"kind": "backdoor", "base": {"dataset": "ndigits", "model": "csnn", "device": "cuda"}},
                            source="s.toml")
    with pytest.raises(ValueError, match=r"s.toml: cells run on cuda but \[resources\] num_gpus = 0"):
        RayCells(spec, workers=1, address=None)
    spec.resources["num_gpus"] = 1
    with pytest.raises(ValueError, match='say device = "cuda"'):
        RayCells(spec.on_device("cuda:1"), workers=1, address=None)
