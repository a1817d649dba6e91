"""Neural Cleanse: all K classes in one forward per step against the per-class loop
(goal: >= 5x faster with the same verdicts).

Run with ``make bench`` (or ``python tests/benchmarks/bench_nc_batched.py [CKPT [ROOT]]``), at
one thread (``OMP_NUM_THREADS=1``). Both runs use the same number of steps (early stopping off),
the same initialisation and the same batches. One short untimed run of each path first (oneDNN
primitive set-up, first heap growth), then ``ROUNDS`` timed rounds in alternating order; prints
the per-round times, the ratio of the medians and whether the verdicts and norms agree. By
default a freshly built csnn on N-MNIST-sized frames (34x34, T=8, K=10) on random binary
frames; give a checkpoint to time a trained model on its own test split. No timed assertions.
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np
import torch

from snnsec.defenses.neural_cleanse import NeuralCleanse

ROUNDS = 3


def _setup(argv):
    if argv:
        from snnsec import checkpoint
        from snnsec.audit import clean_samples

        model, meta = checkpoint.load(argv[0])
        x, _, _ = clean_samples(meta, 100, root=argv[1] if len(argv) > 1 else None)
        return model, x, argv[0]
    from snnsec.models import build

    torch.manual_seed(0)
    model = build("csnn", in_channels=2, num_classes=10, sensor_hw=(34, 34), T=8).eval()
    x = (torch.rand(100, 8, 2, 34, 34, generator=torch.Generator().manual_seed(0)) > 0.9).float()
    return model, x, "untrained csnn, random frames"


def main(argv) -> None:
    model, x, what = _setup(argv)
    kw = dict(epochs=3, batches_per_epoch=4, early_stop=False)
    for batched in (True, False):
        NeuralCleanse(batched=batched, epochs=1, batches_per_epoch=1, early_stop=False)(model, x)
    times: dict[bool, list[float]] = {True: [], False: []}
    dets = {}
    for r in range(ROUNDS):
        for batched in ((True, False) if r % 2 == 0 else (False, True)):
            t0 = time.perf_counter()
            dets[batched] = NeuralCleanse(batched=batched, **kw)(model, x)
            times[batched].append(time.perf_counter() - t0)
    a, b = dets[True], dets[False]
    same = (a.backdoored, a.target, a.candidate) == (b.backdoored, b.target, b.candidate)
    norms = np.allclose(a.evidence["l1_norms"], b.evidence["l1_norms"], rtol=1e-2)
    steps = kw["epochs"] * kw["batches_per_epoch"]
    tb, tl = statistics.median(times[True]), statistics.median(times[False])
    print(f"NC on {what}: {steps} steps x {model.num_classes} classes, {torch.get_num_threads()} thread(s), "
          f"{ROUNDS} alternating rounds")
    print(f"  batched (one forward per step): {' '.join(f'{t:.2f}' for t in times[True])} s (median {tb:.2f})")
    print(f"  per-class loop:                 {' '.join(f'{t:.2f}' for t in times[False])} s (median {tl:.2f})")
    print(f"  speed-up: {tl / tb:.2f}x (goal >= 5x); same verdict: {same}; norms agree (1%): {norms}")


def test_nc_batched_speed():
    main([])


if __name__ == "__main__":
    main(sys.argv[1:])
