"""``--device cuda``: every run function on a GPU gives what it gives on the CPU (up to float
summation order), takes CPU data, returns CPU results, and records where it ran.

Each test runs the same computation on both devices and compares: that is what catches a
tensor left on the wrong device (a crash) and a GPU path that computes something else (a
wrong number). Small models and data, so the set takes a few minutes on one GPU."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from adversarial_helpers import trained_csnn
from defense_helpers import FramesDataset, stamp_corner, synthetic, train_tiny
from snnsec import devices, models
from snnsec.harness import calibrate_bn, device_of

CUDA = "cuda"
TARGET = 2
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def on(model, device):
    return copy.deepcopy(model).to(device).eval()


@pytest.mark.parametrize("arch", ["csnn", "psn-csnn", "spikformer", "plain-lif"])
def test_a_backbone_computes_on_cuda_what_it_computes_on_the_cpu(arch):
    torch.manual_seed(0)
    cpu = models.build(arch, in_channels=2, num_classes=10, sensor_hw=(34, 34), T=8).eval()
    x = (torch.rand(6, 8, 2, 34, 34, generator=torch.Generator().manual_seed(1)) < 0.1).float()
    calibrate_bn(cpu, x)
    gpu = on(cpu, CUDA)
    grads = {}
    for name, m in (("cpu", cpu), ("cuda", gpu)):
        xs = x.to(device_of(m)).requires_grad_(True)
        logits = m(xs)
        (g,) = torch.autograd.grad(logits.logsumexp(1).sum(), xs)
        grads[name] = (logits.detach().cpu(), g.cpu())
    assert torch.allclose(grads["cpu"][0], grads["cuda"][0], atol=1e-3, rtol=1e-3)
    assert float(grads["cuda"][1].abs().max()) > 0
    cos = torch.nn.functional.cosine_similarity(grads["cpu"][1].flatten(), grads["cuda"][1].flatten(), dim=0)
    assert float(cos) > 0.99


_BACKEND_PROBE = textwrap.dedent("""
    import json, torch
    from spikingjelly.activation_based import neuron, surrogate
    torch.manual_seed(0)
    x = torch.randn(8, 16, 64) * 2
    out = {}
    for dev in ("cpu", "cuda"):
        n = neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan(), detach_reset=True, step_mode="m")
        xs = x.to(dev).requires_grad_(True)
        try:
            s = n(xs)
            (g,) = torch.autograd.grad(s.sum(), xs)
        except Exception as exc:
            print(json.dumps({"unavailable": f"{type(exc).__name__}: {exc}"}))
            raise SystemExit(0)
        out[dev] = (s.detach().cpu(), g.cpu())
    print(json.dumps({"spikes_differ": int((out["cpu"][0] != out["cuda"][0]).sum()),
                      "grad_max_diff": float((out["cpu"][1] - out["cuda"][1]).abs().max())}))
""")


@pytest.mark.parametrize("backend", devices.BACKENDS)
def test_each_neuron_backend_matches_the_cpu_kernel(backend):
    env = dict(os.environ)
    devices.apply_backend(backend, env)
    done = subprocess.run([sys.executable, "-c", _BACKEND_PROBE], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if "unavailable" in result:
        pytest.skip(f"spikingjelly backend {backend} does not load here: {result['unavailable'][:300]}")
    assert result["spikes_differ"] == 0
    assert result["grad_max_diff"] < 1e-4


def test_adversarial_evaluation_on_cuda_matches_the_cpu():
    from snnsec.attacks.adversarial import EvalConfig, evaluate

    model, x, y = trained_csnn()
    cfg = EvalConfig(attacks="fgsm,pgd,cw,square,spikeflip", eps=("8/255", "64/255"), fast=True, batch_size=16,
                     flip_budget=200, flip_step=8)
    ev = {d: evaluate(on(model, d), x, y, cfg, progress=False) for d in ("cpu", CUDA)}
    assert torch.equal(ev["cpu"].clean_correct, ev[CUDA].clean_correct)
    assert ev[CUDA].clean_correct.device.type == "cpu"
    for e, a in ev["cpu"].robust_accuracy.items():
        assert abs(a - ev[CUDA].robust_accuracy[e]) <= 0.1, e
    assert ev[CUDA].reliable == ev["cpu"].reliable
    assert ev[CUDA].flips is not None


def test_training_with_augmentation_on_cuda(tmp_path):
    from snnsec.train import TrainConfig, run_training

    cfg = TrainConfig(epochs=2, augment=True, seed=0)
    acc = {d: run_training(data="ndigits", model="csnn", config=cfg, T=8, progress=False, device=d).metrics["clean_accuracy"]
           for d in ("cpu", CUDA)}
    assert acc[CUDA] > 0.8
    assert abs(acc[CUDA] - acc["cpu"]) <= 0.05


@pytest.fixture(scope="module")
def planted():
    x, y = synthetic(n_per_class=24, seed=0)
    model, _ = train_tiny(x, y, seed=0, poison_target=TARGET)
    xt, yt = synthetic(n_per_class=8, seed=5)
    return x, y, model, xt, yt


# every registered defense, each kind through the bench's defense cell
PARAMS = {"nc": {"epochs": 2, "batches_per_epoch": 2}, "nc-temporal": {"epochs": 2, "batches_per_epoch": 2},
          "margin": {"steps": 20}, "strip": {"n_overlays": 4}, "fine-pruning": {"finetune_epochs": 1},
          "nc-unlearning": {"epochs": 1, "nc": {"epochs": 2, "batches_per_epoch": 2}},
          "abl": {"tuning_epochs": 1, "finetuning_epochs": 1, "unlearning_epochs": 1}, "ndsbm": {"epochs": 2}}


@pytest.mark.parametrize("name", sorted(__import__("snnsec.defenses", fromlist=["names"]).names()))
def test_every_defense_cell_on_cuda_matches_the_cpu(planted, monkeypatch, name):
    from types import SimpleNamespace

    from defense_helpers import tiny_factory
    from snnsec import checkpoint
    from snnsec.runs import defense_cells

    x, y, model, xt, yt = planted
    monkeypatch.setitem(models._REGISTRY, "tiny-gpu-net", models._Entry(tiny_factory, "test"))
    T, P, H, W = model.input_shape
    meta = {"attack": {"target": TARGET}, "arch": "tiny-gpu-net", "arch_kwargs": {},
            "build": {"in_channels": P, "num_classes": model.num_classes, "sensor_hw": [H, W], "T": T}}
    seen = []

    def backdoored(cell, *, progress=True, device="cpu"):
        seen.append(device)
        return on(model, device), stamp_corner, meta

    monkeypatch.setattr(defense_cells, "backdoored_model", backdoored)
    spec = SimpleNamespace(num_classes=model.num_classes)
    monkeypatch.setattr(checkpoint, "matching_dataset",
                        lambda meta, *, split="test", **kw: (FramesDataset(x, y) if split == "train" else FramesDataset(xt, yt), spec))
    cell = {"kind": "defense", "dataset": "tiny", "model": "tiny", "T": T, "trigger": "static", "target": TARGET,
            "rate": 0.1, "seed": 0, "defense": name, "defense_params": PARAMS.get(name, {})}
    out = {d: defense_cells.defense_cell({**cell, **({"device": d} if d != "cpu" else {})}, progress=False)
           for d in ("cpu", CUDA)}
    assert seen == ["cpu", CUDA]
    a, b = out["cpu"]["metrics"], out[CUDA]["metrics"]
    assert set(a) == set(b)
    for k in a:
        if k == "seconds":
            continue
        if k in ("flagged", "target_correct"):
            assert a[k] == b[k], k
        else:
            assert np.isfinite(b[k]) and abs(a[k] - b[k]) <= 0.15 * max(1.0, abs(a[k])), (k, a[k], b[k])


def test_audit_and_dynamic_backdoor_on_cuda(tmp_path):
    from snnsec.attacks.backdoor.run import BackdoorConfig, run_backdoor, run_output
    from snnsec.audit import audit
    from snnsec.runs.backdoor import save_backdoor_run

    cfg = BackdoorConfig(dataset="ndigits", T=8, trigger="dynamic", epochs=1, seed=0)
    res = run_backdoor(cfg, progress=False, device=CUDA)
    assert device_of(res.model).type == torch.device(CUDA).type and res.test_triggered.device.type == "cpu"
    assert all(np.isfinite(v) for v in run_output(res)["metrics"].values())
    static = run_backdoor(BackdoorConfig(dataset="ndigits", T=8, trigger="static", epochs=2, seed=0), progress=False,
                          device=CUDA)
    ck = save_backdoor_run(static, tmp_path / "bd", store=tmp_path / "r.sqlite")
    from snnsec import results

    where = devices.describe(CUDA).get("device")  # cuda:0 (nothing on the CPU)
    rows = results.Store(tmp_path / "r.sqlite").load(parse_json=True)
    assert all(c.get("device") == where for c in rows["config"])
    r = audit(ck, n_clean=50, method_params={"nc": {"epochs": 3}, "margin": {"steps": 100}}, progress=False, device=CUDA)
    assert r.info.get("device") == where
    assert (r.backdoored, r.target) == (True, 0)


def test_cli_and_bench_on_cuda(tmp_path):
    from snnsec import bench, results
    from snnsec.cli import main

    assert main(["train", "--data", "ndigits", "--epochs", "1", "--T", "8", "--out", str(tmp_path / "ck"), "--no-progress",
                 "--store", str(tmp_path / "r.sqlite"), "--device", CUDA]) == 0
    row = results.Store(tmp_path / "r.sqlite").load(parse_json=True).iloc[0]
    assert row["config"].get("device") == devices.describe(CUDA).get("device")
    if CUDA != "cpu":
        assert row["config"]["neuron_backend"] == "auto" and row["config"]["gpu"]
    spec = bench.parse_spec({"kind": "backdoor", "base": {"dataset": "ndigits", "model": "csnn", "T": 8, "epochs": 1,
                                                          "trigger": "static"}}, source="gpu.toml")
    bench.run_spec(spec, store=tmp_path / "b.sqlite", progress=False, device=CUDA)
    rows = results.Store(tmp_path / "b.sqlite").load(parse_json=True)
    assert all(c.get("device") == (None if CUDA == "cpu" else "cuda") for c in rows["config"])


def test_energy_and_the_sponge_on_cuda_match_the_cpu():
    from snnsec import energy
    from snnsec.attacks.adversarial.sponge import Sponge

    model, x, _ = trained_csnn()
    reports = {d: energy.measure(on(model, d), x) for d in ("cpu", CUDA)}
    a, b = reports["cpu"], reports[CUDA]
    assert [c.layer for c in a.layers] == [c.layer for c in b.layers]
    assert [c.input_kind for c in a.layers] == [c.input_kind for c in b.layers]
    assert b.sops == pytest.approx(a.sops, rel=0.01) and b.macs == a.macs
    sponged = {d: Sponge(on(model, d), 32 / 255, steps=5)(x) for d in ("cpu", CUDA)}
    assert sponged[CUDA].device.type == "cpu"
    assert float((sponged[CUDA] - sponged["cpu"]).abs().max()) <= 2 * 2.5 * (32 / 255) / 5 + 1e-6


def test_compress_on_cuda(tmp_path):
    from snnsec import compress

    model, x, y = trained_csnn()
    gpu = on(model, CUDA)
    compress.compress(gpu, "binary")
    compress.bake(gpu)
    assert device_of(gpu).type == torch.device(CUDA).type
    assert all(s["distinct_per_channel"] <= 2 for s in compress.stats(gpu)[1:-1])
