"""The lean CPU kernels against spikingjelly's and torch's, per model and gradient estimator, results checked equal.

For each model: an eval-mode forward without a graph (Square's queries, the checks), and a
forward and backward with respect to the input through the model's own surrogate and through each
attack estimator (ASSG, PDSG, HART), with ``lean_kernels`` off (the reference) and on, the LIF as
the C loop and as tensor operations (``SNNSEC_NATIVE=0``). Every variant's logits and gradients
must equal the reference's exactly before anything is timed. Runs are alternated so drifting
machine load hits all of them; ratios are of best times. No timed assertions.

    python tests/benchmarks/bench_lean_kernels.py [--models csnn spikformer] [--batch 8] [--k 5]
    pytest -s tests/benchmarks/bench_lean_kernels.py      (or `make bench`)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

import torch
import torch.nn.functional as F

from _bench_models import spike_batch_model
from snnsec import native
from snnsec.attacks.adversarial import adaptive
from snnsec.lean_kernels import lean_kernels

ESTIMATORS = {"model": None, "assg": lambda m: adaptive.assg_mode(m, 0.43), "pdsg": adaptive.pdsg_mode,
              "hart": lambda m: adaptive.hart_mode(m, 0.5)}
VARIANTS = ("reference", "lean, C LIF", "lean, tensor-op LIF")


@contextlib.contextmanager
def _variant(model, variant: str):
    previous = os.environ.get("SNNSEC_NATIVE")
    os.environ["SNNSEC_NATIVE"] = "0" if variant == "lean, tensor-op LIF" else "1"
    try:
        with lean_kernels(model, variant != "reference"):
            yield
    finally:
        if previous is None:
            os.environ.pop("SNNSEC_NATIVE")
        else:
            os.environ["SNNSEC_NATIVE"] = previous


def _forward(model, x, y):
    with torch.no_grad():
        return (model(x),)


def _forward_backward(model, x, y):
    xr = x.clone().requires_grad_(True)
    logits = model(xr)
    return logits.detach(), torch.autograd.grad(F.cross_entropy(logits, y), xr)[0]


def measure(name: str, T: int = 8, batch: int = 8, k: int = 5, hw=(34, 34)) -> list[dict]:
    model, x, y = spike_batch_model(name, T, batch, hw)
    variants = [v for v in VARIANTS if v != "lean, C LIF" or native.lif_library() is not None]
    cases = [("forward, no graph", "model", _forward)]
    cases += [("forward+backward", est, _forward_backward) for est in ESTIMATORS]
    rows = []
    for what, est, fn in cases:
        try:
            mode = ESTIMATORS[est]
            with (mode(model) if mode else contextlib.nullcontext()):
                ref = None
                for v in variants:  # warm-up, and every variant must give the reference's numbers
                    with _variant(model, v):
                        adaptive.restart_statistics(model)
                        out = fn(model, x, y)
                    ref = ref or out
                    if not all(torch.equal(a, b) for a, b in zip(out, ref)):
                        raise AssertionError(f"{name} {what} {est}: {v} differs from the reference")
                times = {v: [] for v in variants}
                for i in range(k):
                    for v in variants if i % 2 == 0 else reversed(variants):
                        with _variant(model, v):
                            adaptive.restart_statistics(model)
                            t0 = time.perf_counter()
                            fn(model, x, y)
                            times[v].append(time.perf_counter() - t0)
        except ValueError as exc:  # an estimator the model refuses (PSN)
            print(f"[bench_lean_kernels] {name} {est}: skipped ({exc})")
            continue
        best = {v: min(t) for v, t in times.items()}
        rows.append({"model": name, "what": what, "estimator": est, **best,
                     "ratio": best["reference"] / min(best[v] for v in variants if v != "reference")})
    return rows


def report(rows: list[dict], T: int, batch: int) -> str:
    lines = [f"[bench_lean_kernels] T={T}, batch {batch}, 34x34x2, eval mode, best of k, ms per batch "
             f"(torch threads: {torch.get_num_threads()}; C LIF: "
             f"{'yes' if native.lif_library() is not None else 'no compiler'})",
             "| model | pass | estimator | reference | lean, C LIF | lean, tensor-op LIF | reference / best lean |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        cells = " | ".join(f"{1000 * r[v]:.1f}" if v in r else "-" for v in VARIANTS)
        lines.append(f"| {r['model']} | {r['what']} | {r['estimator']} | {cells} | {r['ratio']:.2f}x |")
    return "\n".join(lines)


def test_lean_kernels_speed():
    rows = [r for name in ("csnn", "spikformer") for r in measure(name, k=3)]
    print("\n" + report(rows, 8, 8))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["csnn", "psn-csnn", "spikformer", "spikingformer", "sew-resnet"])
    ap.add_argument("--T", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8, help="an attack's chunk (EvalConfig.chunk)")
    ap.add_argument("--k", type=int, default=5)
    args = ap.parse_args(argv)
    rows = []
    for name in args.models:
        new = measure(name, args.T, args.batch, args.k)
        rows += new
        print("\n".join(report(new, args.T, args.batch).splitlines()[3:]), flush=True)
    print(report(rows, args.T, args.batch))


if __name__ == "__main__":
    main()
