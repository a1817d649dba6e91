"""GPU timings, each against a baseline measured in the same run (skipped without CUDA):

1. Neural Cleanse with all K classes in one forward per step against the per-class loop, on
   the GPU (the earlier goal: at least 5x), with the verdicts compared;
2. attack throughput: PGD-10 samples per second on the GPU against the CPU;
3. spikingjelly's neuron backends (CUDA extension, Triton, plain torch) for a multi-step LIF
   forward and backward, each in its own process (the choice is read at import), against torch.

Run with ``make bench`` (or ``python tests/benchmarks/bench_gpu.py``). One untimed warm-up per
path, then ``ROUNDS`` rounds in alternating order, the median reported; CUDA work is timed
with a synchronize before each clock read. No timed assertions.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import textwrap
import time

import pytest
import torch

ROUNDS = 3


def _timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _alternating(paths: dict) -> dict[str, float]:
    """Median seconds of each path over ROUNDS alternating rounds, after one warm-up each."""
    for fn in paths.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in paths}
    names = list(paths)
    for r in range(ROUNDS):
        for k in (names if r % 2 == 0 else names[::-1]):
            times[k].append(_timed(paths[k]))
    return {k: statistics.median(v) for k, v in times.items()}


def _csnn(device: str):
    from snnsec.harness import calibrate_bn
    from snnsec.models import build

    torch.manual_seed(0)
    model = build("csnn", in_channels=2, num_classes=10, sensor_hw=(34, 34), T=8).eval()
    x = (torch.rand(100, 8, 2, 34, 34, generator=torch.Generator().manual_seed(0)) > 0.9).float()
    calibrate_bn(model, x[:32])
    return model.to(device), x


def bench_nc() -> None:
    from snnsec.defenses.neural_cleanse import NeuralCleanse

    model, x = _csnn("cuda")
    kw = dict(epochs=3, batches_per_epoch=4, early_stop=False)
    dets = {}

    def run(batched):
        def go():
            dets[batched] = NeuralCleanse(batched=batched, **kw)(model, x)
        return go

    t = _alternating({"batched": run(True), "loop": run(False)})
    a, b = dets[True], dets[False]
    same = (a.backdoored, a.target, a.candidate) == (b.backdoored, b.target, b.candidate)
    print(f"NC on the GPU, untrained csnn 34x34 T=8 K=10, {kw['epochs'] * kw['batches_per_epoch']} steps: batched "
          f"{t['batched']:.2f} s, per-class loop {t['loop']:.2f} s -> {t['loop'] / t['batched']:.2f}x (goal >= 5x); "
          f"same verdict: {same}")


def bench_attack() -> None:
    from snnsec.attacks.adversarial import Attack

    y = torch.arange(64) % 10
    rates = {}
    for device in ("cpu", "cuda"):
        model, x = _csnn(device)
        atk = Attack(model, "pgd", 8 / 255, steps=10, seed=0)
        xb = x[:64]
        rates[device] = 64 / _alternating({device: lambda: atk(xb, y)})[device]
    print(f"PGD-10 at 8/255, csnn 34x34 T=8, batch 64: CPU {rates['cpu']:.1f} samples/s ({torch.get_num_threads()} "
          f"threads), GPU {rates['cuda']:.1f} samples/s -> {rates['cuda'] / rates['cpu']:.1f}x")


_BACKEND_TIMING = textwrap.dedent("""
    import json, statistics, time, torch
    from spikingjelly.activation_based import neuron, surrogate
    x = torch.randn(16, 64, 128, 16, 16, device="cuda")
    n = neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan(), detach_reset=True, step_mode="m")
    def step():
        n.reset()
        xs = x.detach().requires_grad_(True)
        n(xs).sum().backward()
    try:
        step()
    except Exception as exc:
        print(json.dumps({"unavailable": f"{type(exc).__name__}: {exc}"[:200]}))
        raise SystemExit(0)
    times = []
    for _ in range(20):
        torch.cuda.synchronize(); t0 = time.perf_counter(); step(); torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"seconds": statistics.median(times)}))
""")


def bench_backends() -> None:
    from snnsec import devices

    out = {}
    for backend in ("torch", "triton", "cuda", "auto"):
        env = dict(os.environ)
        devices.apply_backend(backend, env)
        done = subprocess.run([sys.executable, "-c", _BACKEND_TIMING], env=env, capture_output=True, text=True)
        out[backend] = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {
            "unavailable": done.stderr[-200:]}
    base = out["torch"].get("seconds")
    print("LIF multi-step forward+backward, x [16, 64, 128, 16, 16] (median of 20):")
    for backend, r in out.items():
        if "seconds" in r:
            ratio = f" -> {base / r['seconds']:.2f}x torch" if base else ""
            print(f"  {backend:7s} {r['seconds'] * 1e3:8.2f} ms{ratio}")
        else:
            print(f"  {backend:7s} unavailable: {r['unavailable']}")


def main() -> None:
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    bench_nc()
    bench_attack()
    bench_backends()


def test_gpu_timings():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    main()


if __name__ == "__main__":
    if not torch.cuda.is_available():
        sys.exit("bench_gpu: no CUDA device")
    main()
