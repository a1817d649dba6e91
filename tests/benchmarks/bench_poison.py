"""Epoch time with the poisoning wrapper against without it (goal: <= 5 % overhead).

Run with ``make bench``. Trains the same small model on the same frames for one epoch,
alternating clean and poisoned runs, and prints the ratio of the best times. No timed
assertions: the number is for a human to read.
"""

from __future__ import annotations

import time

import torch

from snnsec.attacks.backdoor.poison import PoisonedDataset
from snnsec.attacks.backdoor.triggers import MovingTrigger, SmartTrigger, StaticTrigger


class Frames(torch.utils.data.Dataset):
    def __init__(self, n=160, T=8, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = (torch.rand(n, T, 2, 34, 34, generator=g) > 0.9).float()
        self.targets = torch.arange(n) % 10

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.targets[i])

    def frames_tensor(self):
        return self.x


def _epoch(ds, transform) -> float:
    from snnsec.models import build
    from snnsec.train import TrainConfig, train

    torch.manual_seed(0)
    model = build("csnn", in_channels=2, num_classes=10, sensor_hw=(34, 34), T=ds.x.shape[1])
    t0 = time.perf_counter()
    train(model, ds, None, TrainConfig(epochs=1, batch_size=32, seed=0), progress=False, batch_transform=transform)
    return time.perf_counter() - t0


class _Timed:
    """Wraps batch_transform and adds up the time spent inside it."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, x, y, idx):
        t0 = time.perf_counter()
        out = self.fn(x, y, idx)
        self.seconds += time.perf_counter() - t0
        return out


def test_poisoning_overhead():
    ds = Frames()
    cases = {"static": StaticTrigger(), "moving": MovingTrigger(), "smart": SmartTrigger().fit(ds.x)}
    for name, trig in cases.items():
        pds = PoisonedDataset(ds, trig, rate=0.1, target=0, seed=0)
        clean, poisoned, inside = [], [], []
        for _ in range(2):  # alternate so drift in machine load hits both equally
            clean.append(_epoch(ds, None))
            timed = _Timed(pds.batch_transform)
            poisoned.append(_epoch(ds, timed))
            inside.append(timed.seconds)
        ratio = min(poisoned) / min(clean)
        # On a shared machine the epoch ratio is noisy; the time inside the wrapper is not.
        print(f"\n[bench_poison] {name}: clean epoch {min(clean):.3f} s, poisoned {min(poisoned):.3f} s, "
              f"ratio {ratio:.3f} ({100 * (ratio - 1):+.1f} %); time in the wrapper {1000 * min(inside):.1f} ms "
              f"= {100 * min(inside) / min(clean):.2f} % of a clean epoch (goal <= 5 %)")

    # The trigger itself on a whole batch, for scale.
    x = ds.x[:32]
    t0 = time.perf_counter()
    for _ in range(100):
        StaticTrigger()(x)
    print(f"[bench_poison] static trigger on a 32-sample batch: {(time.perf_counter() - t0) * 10:.3f} ms")
