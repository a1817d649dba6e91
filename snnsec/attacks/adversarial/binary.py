"""Spike-flip attacks that keep event frames binary, under an L0 budget (events flipped).

Generation (gradient-guided, in the style of Liang et al. TNNLS 2021 and SDA, Lun et al. CVPR
2025): at each iteration take the gradient ``g`` of the margin loss ``max_{j!=y} z_j - z_y``
with respect to the frames; flipping a 0 to 1 (inserting an event) changes the loss by about
``+g``, flipping a 1 to 0 (deleting one) by ``-g``. Flip the ``per_step`` coordinates with the
largest predicted gain in each still-correct sample, never the same coordinate twice, until the
sample is misclassified or the budget is spent. Reduction (SDA's second phase, simplified):
binary search for the shortest prefix of the flip sequence that is still adversarial, so the
reported L0 is not inflated by the step size.

Because a sample's flip sequence does not depend on the budget, one run with budget ``B``
gives the minimal flips found for every budget up to ``B``: a sample is broken at budget ``b``
iff its ``flips <= b``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from snnsec.attacks.adversarial.adapter import Counter
from snnsec.attacks.adversarial.adaptive import restart_statistics
from snnsec.attacks.adversarial.gradients import gradient_mode
from snnsec.harness import device_of, preserve_modes

__all__ = ["FlipResult", "SpikeFlip", "flips_to_reach"]

MODES = ("both", "insert", "delete")


@dataclass
class FlipResult:
    x_adv: torch.Tensor
    flips: torch.Tensor  # [B] events flipped (0 for samples wrong before the attack)
    success: torch.Tensor  # [B] bool: misclassified at the end
    events: torch.Tensor  # [B] events (ones) in the clean sample
    counts: dict = field(default_factory=dict)


def _margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, y[:, None], float("-inf"))
    return other.amax(1) - true


class SpikeFlip:
    """``atk(x, y) -> x_adv``: binary frames in, binary frames out, at most ``budget`` flips each.

    ``mode``: ``"both"`` (insert and delete), ``"insert"`` or ``"delete"`` only. ``gradient``:
    an estimator name from :mod:`~snnsec.attacks.adversarial.gradients`. :meth:`run` returns
    the per-sample flips as well.
    """

    def __init__(self, model: nn.Module, budget: int = 1000, per_step: int = 10, *, mode: str = "both",
                 gradient: str = "model", reduce: bool = True) -> None:
        if int(budget) < 1 or int(per_step) < 1:
            raise ValueError(f"SpikeFlip: budget and per_step must be >= 1, got {budget}, {per_step}")
        if mode not in MODES:
            raise ValueError(f"SpikeFlip: mode must be one of {MODES}, got {mode!r}")
        self.model = model
        self.budget = int(budget)
        self.per_step = int(per_step)
        self.mode = mode
        self.gradient = gradient
        self.reduce = bool(reduce)
        self.counter = Counter(model)

    def params(self) -> dict:
        return {"attack": "spikeflip", "threat": "l0", "budget": self.budget, "per_step": self.per_step,
                "mode": self.mode, "gradient": self.gradient, "reduce": self.reduce}

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.run(x, y).x_adv

    def run(self, x: torch.Tensor, y: torch.Tensor) -> FlipResult:
        if not bool(((x == 0) | (x == 1)).all()):
            raise ValueError("SpikeFlip: frames must be binary (0/1); load the data with binary=True")
        restart_statistics(self.model)
        home, dev = x.device, device_of(self.model)  # computed on the model's device, returned on x's
        x, y = x.to(dev), y.to(dev)
        B = x.shape[0]
        flat0 = x.detach().reshape(B, -1).clone()
        D = flat0.shape[1]
        order = torch.full((B, D), -1, dtype=torch.long, device=dev)  # step index at which a coordinate flipped
        n = torch.zeros(B, dtype=torch.long, device=dev)
        with preserve_modes(self.model), gradient_mode(self.model, self.gradient):
            self.model.eval()
            cur = flat0.clone()
            for _ in range(-(-self.budget // self.per_step) + 1):
                xa = cur.reshape(x.shape).requires_grad_(True)
                logits = self.counter(xa)
                wrong = logits.argmax(1) != y
                active = ~wrong & (n < self.budget)
                if not bool(active.any()):
                    break
                g, = torch.autograd.grad(_margin(logits, y)[active].sum(), xa)
                g = g.reshape(B, -1)
                gain = g * (1 - 2 * cur)
                if self.mode == "insert":
                    gain[cur == 1] = float("-inf")
                elif self.mode == "delete":
                    gain[cur == 0] = float("-inf")
                gain[order >= 0] = float("-inf")
                # coordinates with a zero gradient are still flipped in order when nothing better is
                # left (the restricted spike flipper's escape from flat regions), positive gain first
                for b in torch.nonzero(active).flatten().tolist():
                    k = min(self.per_step, self.budget - int(n[b]))
                    vals, idx = gain[b].topk(k)
                    idx = idx[torch.isfinite(vals)]
                    if idx.numel() == 0:
                        n[b] = self.budget  # nothing left to flip in this mode
                        continue
                    cur[b, idx] = 1 - cur[b, idx]
                    order[b, idx] = n[b] + torch.arange(idx.numel(), device=dev)
                    n[b] += idx.numel()
            with torch.no_grad():
                wrong = self.counter(cur.reshape(x.shape)).argmax(1) != y
                if self.reduce:
                    n = self._reduce(flat0, order, n, wrong, x.shape, y)
                final = flat0.clone()
                mask = (order >= 0) & (order < n[:, None])
                final[mask] = 1 - final[mask]
                x_adv = final.reshape(x.shape)
                success = self.counter(x_adv).argmax(1) != y
        # samples wrong before the attack never flipped anything: flips 0
        flips = torch.where(success, mask.sum(1), torch.zeros_like(n))
        return FlipResult(x_adv=x_adv.to(home), flips=flips.to(home), success=success.to(home),
                          events=flat0.sum(1).long().to(home), counts=self.counter.counts())

    def _reduce(self, flat0, order, n, wrong, shape, y) -> torch.Tensor:
        """Shortest adversarial prefix of each successful sample's flip sequence (binary search)."""
        lo = torch.zeros_like(n)
        hi = n.clone()
        todo = wrong & (hi - lo > 1)
        while bool(todo.any()):
            mid = (lo + hi) // 2
            trial = flat0.clone()
            m = (order >= 0) & (order < mid[:, None])
            trial[m] = 1 - trial[m]
            adv = self.counter(trial.reshape(shape)).argmax(1) != y
            hi = torch.where(todo & adv, mid, hi)
            lo = torch.where(todo & ~adv, mid, lo)
            todo = wrong & (hi - lo > 1)
        # keep the full sequence for samples the generation phase did not break
        return torch.where(wrong, hi, n)


def flips_to_reach(flips: torch.Tensor, success: torch.Tensor, clean_correct: torch.Tensor,
                   target_accuracy: float = 0.05) -> float:
    """Smallest budget at which robust accuracy (over all samples) is <= ``target_accuracy``.

    Returns ``inf`` if even the whole run did not get there.
    """
    n = clean_correct.numel()
    # samples wrong before the attack are broken at budget 0; samples never broken stay robust
    if float((clean_correct & ~success).sum()) / n > target_accuracy:
        return float("inf")
    for b in sorted(set(flips[clean_correct & success].double().tolist()) | {0.0}):
        acc = float((clean_correct & ~(success & (flips.double() <= b))).sum()) / n
        if acc <= target_accuracy:
            return b
    return float("inf")
