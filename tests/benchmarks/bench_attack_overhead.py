"""Harness overhead of an attack: snnsec's PGD-20 against a bare-model PGD-20 loop (goal: ratio <= 1.03).

Run with ``make bench`` (or ``python tests/benchmarks/bench_attack_overhead.py``). Both sides run
the same PGD (same start, steps, step size) on the same csnn weights and N-MNIST-sized frames:

* bare: the spikingjelly backbone called directly on time-first frames, ``reset_net`` by hand,
  mean over T, ``torch.autograd.grad``, sign step, projection, clamp;
* snnsec: :class:`snnsec.attacks.adversarial.Attack` ("pgd"), i.e. torchattacks through the
  counting wrapper, the packed attack view and :class:`SpikingClassifier` (validation, reset
  before and after every forward, mode bookkeeping, mode restore).

Runs alternate so drift in machine load hits both equally; the ratio is of the best times.
No timed assertions.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional


def _bare_pgd(backbone, x, y, eps, alpha, steps):
    seq = x.transpose(0, 1)  # [T, B, P, H, W]
    adv = (seq + torch.empty_like(seq).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        functional.reset_net(backbone)
        loss = F.cross_entropy(backbone(adv).mean(0), y)
        g, = torch.autograd.grad(loss, adv)
        adv = (seq + (adv.detach() + alpha * g.sign() - seq).clamp(-eps, eps)).clamp(0, 1)
    functional.reset_net(backbone)
    return adv.transpose(0, 1)


def measure(batch: int = 32, T: int = 8, steps: int = 20, repeats: int = 3) -> tuple[float, float]:
    from snnsec.attacks.adversarial import Attack
    from snnsec.models import build

    torch.manual_seed(0)
    model = build("csnn", in_channels=2, num_classes=10, sensor_hw=(34, 34), T=T).eval()
    x = (torch.rand(batch, T, 2, 34, 34) > 0.9).float()
    y = torch.arange(batch) % 10
    eps = 8 / 255
    alpha = 2.5 * eps / steps
    atk = Attack(model, "pgd", eps, steps=steps, seed=0)
    bare, ours = [], []
    for _ in range(repeats):
        torch.manual_seed(0)
        t0 = time.perf_counter()
        _bare_pgd(model.backbone, x, y, eps, alpha, steps)
        bare.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        atk(x, y)
        ours.append(time.perf_counter() - t0)
    return min(bare), min(ours)


def test_attack_overhead():
    bare, ours = measure()
    print(f"\n[bench_attack_overhead] PGD-20, 32 x [8, 2, 34, 34] csnn: bare loop {bare:.3f} s, snnsec {ours:.3f} s, "
          f"ratio {ours / bare:.3f} (goal <= 1.03)")


if __name__ == "__main__":
    test_attack_overhead()
