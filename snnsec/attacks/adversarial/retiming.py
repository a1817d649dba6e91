"""Spike retiming: an attack that moves spikes in time and changes nothing else.

After "Spike Retiming Attacks" (ICLR 2026, arXiv 2602.03284; code ``yuyi-sd/Spike-Retiming-Attacks``,
``utils/attack.py``). Each pixel and polarity of binary frames ``[B, T, P, H, W]`` is a timeline;
a spike may move along it to an empty time bin, so frames stay binary, every pixel keeps its
spike count, and no two spikes merge. Budgets, per sample:

- ``max_shift`` (B-inf): no spike moves more than this many time bins;
- ``total_delay`` (B1): the shifts' absolute sizes sum to at most this fraction of the sample's spikes;
- ``moved`` (B0): at most this fraction of the sample's spikes move.

Search, as the reference's projected-in-the-loop attack: every spike has logits over its target
bins (a softmax, masked to ``|t - s| <= max_shift``); the soft retimed frames
``sum_s x[s] * pi[s, t]`` carry the gradient while the forward sees the feasible discrete frames
the budgeted projection makes of ``pi`` (straight-through). The loss ascended is the cross-entropy
minus an occupancy penalty (20 x mean relu(soft count - 1)^2, against merging) and the B1/B0
overshoot penalties (weights 10 and 5); logits take signed steps of 1.0, clamped to +-10, from 4
on the shifts ``|t - s| <= 1`` (with B0 or B1 alone: see below); 20 steps (40 with B1 or B0), no
restarts; the result is the projection of the last logits. Ours, where the reference differs:
the projection makes at most one move per timeline per round, the best first while the
budgets last, over up to T rounds (the reference scans all moves once and stops at the first
that would overrun a budget), ranking moves as the reference does (with B-inf alone a spike
moves to its most likely target when that is not where it is; with B0 or B1 the budget goes to
the most likely moves); budgets are fractions of each sample's spikes (the
reference's are absolute counts); samples are batched. The gradient is the model's own or the
estimator ``gradient`` names (the reference swaps every LIF's surrogate for PDSG: ``gradient="pdsg"``).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from snnsec.attacks.adversarial.gradients import gradient_mode
from snnsec.harness import device_of, preserve_modes

__all__ = ["SpikeRetiming", "check_budgets"]

# the reference's penalty weights and logit box (utils/attack.py)
_CAP_WEIGHT, _B1_WEIGHT, _B0_WEIGHT, _LOGIT_BOX, _INIT_LOGIT = 20.0, 10.0, 5.0, 10.0, 4.0


def check_budgets(max_shift: int | None, total_delay: float | None, moved: float | None) -> None:
    """Raises ValueError, naming the budget, unless at least one is given and each is in range."""
    if max_shift is None and total_delay is None and moved is None:
        raise ValueError("retiming: give at least one budget (max_shift, total_delay or moved)")
    if max_shift is not None and int(max_shift) < 1:
        raise ValueError(f"retiming: max_shift is a number of time bins >= 1, got {max_shift!r}")
    for name, v in (("total_delay", total_delay), ("moved", moved)):
        if v is not None and not (0 <= float(v) <= 1):
            raise ValueError(f"retiming: {name} is a fraction of the sample's spikes in [0, 1], got {v!r}")


class SpikeRetiming:
    """``SpikeRetiming(model, max_shift=2)(x, y) -> x_adv``: binary frames with spikes moved in time only."""

    def __init__(self, model: nn.Module, *, max_shift: int | None = 1, total_delay: float | None = None,
                 moved: float | None = None, steps: int | None = None, step_size: float = 1.0,
                 gradient: str = "model") -> None:
        check_budgets(max_shift, total_delay, moved)
        self.model = model
        self.max_shift = None if max_shift is None else int(max_shift)
        self.total_delay, self.moved = total_delay, moved
        self.steps = int(steps) if steps is not None else (20 if total_delay is None and moved is None else 40)
        self.step_size = float(step_size)
        self.gradient = gradient

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not bool(((x == 0) | (x == 1)).all()):
            raise ValueError("retiming: needs binary frames (a spike is a 1 in a time bin); load the data with binary=True")
        home, dev = x.device, device_of(self.model)
        x, y = x.to(dev), y.to(dev)
        lines = x.permute(0, 2, 3, 4, 1)  # [B, P, H, W, T]: one timeline per pixel and polarity
        T = lines.shape[-1]
        t = torch.arange(T, device=dev)
        dist = (t[None] - t[:, None]).abs()  # [s, t]
        allowed = dist <= (self.max_shift if self.max_shift is not None else T)
        spikes = lines.flatten(1).sum(1)
        b1 = self._budget(self.total_delay, spikes)
        b0 = self._budget(self.moved, spikes)
        init = _INIT_LOGIT if self.max_shift is not None else 0.0
        phi = torch.where(dist <= 1, init, 0.0).expand(*lines.shape, T).clone()
        source = lines.unsqueeze(-1)  # gradients only where a spike is
        with preserve_modes(self.model), gradient_mode(self.model, self.gradient):
            self.model.eval()
            for _ in range(self.steps):
                phi.requires_grad_(True)
                pi = phi.masked_fill(~allowed, -1e9).softmax(-1)
                soft = torch.einsum("...s,...st->...t", lines, pi)
                hard = _project(lines, pi.detach(), dist, allowed, b1, b0)
                inp = (hard + soft - soft.detach()).permute(0, 4, 1, 2, 3)
                loss = F.cross_entropy(self.model(inp), y) - _CAP_WEIGHT * F.relu(soft - 1).pow(2).mean()
                if b1 is not None:
                    s1 = (source * pi * dist).flatten(1).sum(1)
                    loss = loss - _B1_WEIGHT * (F.relu(s1 - b1) / b1.clamp(min=1)).mean()
                if b0 is not None:
                    s0 = (lines * (1 - pi.diagonal(dim1=-2, dim2=-1))).flatten(1).sum(1)
                    loss = loss - _B0_WEIGHT * (F.relu(s0 - b0) / b0.clamp(min=1)).mean()
                (g,) = torch.autograd.grad(loss, phi)
                phi = (phi.detach() + self.step_size * (g * source).sign()).clamp(-_LOGIT_BOX, _LOGIT_BOX)
            with torch.no_grad():
                out = _project(lines, phi.masked_fill(~allowed, -1e9).softmax(-1), dist, allowed, b1, b0)
        return out.permute(0, 4, 1, 2, 3).to(home)

    @staticmethod
    def _budget(fraction, spikes):
        return None if fraction is None else torch.floor(float(fraction) * spikes)


@torch.no_grad()
def _project(lines, pi, dist, allowed, b1, b0):
    """The discrete retiming ``pi`` asks for, within the budgets: moves of original spikes to
    empty bins, ranked as the module docstring says, at most one per timeline per round."""
    B, T = lines.shape[0], lines.shape[-1]
    orig = lines.bool()
    occupied = orig.clone()
    left = orig.clone()  # original spikes not moved yet
    out = lines.clone()
    if b1 is None and b0 is None:
        # B-inf alone: a spike moves when its most likely target is not where it is
        gain = pi - pi.diagonal(dim1=-2, dim2=-1).unsqueeze(-1)  # [..., s, t]
    else:
        # B0/B1, as the reference: the budget goes to the most likely moves (the penalty keeps the
        # logits of staying high for every spike, so ranking by gain would move none)
        gain = torch.where(dist > 0, pi, torch.zeros_like(pi))
    r1 = None if b1 is None else b1.clone()
    r0 = None if b0 is None else b0.clone()
    flat = lambda v: v.reshape(B, -1)  # noqa: E731
    for _ in range(T):
        feasible = left.unsqueeze(-1) & ~occupied.unsqueeze(-2) & allowed & (gain > 0)
        score = gain.masked_fill(~feasible, -math.inf) - 1e-6 * dist  # ties: the shorter move
        best, idx = score.flatten(-2).max(-1)  # per timeline
        ok = torch.isfinite(best)
        if not bool(ok.any()):
            break
        src, dst = idx // T, idx % T
        cost = dist[src, dst]
        take = flat(ok)
        if r1 is not None or r0 is not None:
            # per sample, the best timelines first, each taken while the budgets last
            order = flat(best).masked_fill(~flat(ok), -math.inf).argsort(1, descending=True)
            c_sorted = flat(cost).gather(1, order).double()
            ok_sorted = flat(ok).gather(1, order)
            within = ok_sorted.clone()
            if r1 is not None:
                within &= torch.cumsum(c_sorted * ok_sorted, 1) <= r1.unsqueeze(1)
            if r0 is not None:
                within &= torch.cumsum(ok_sorted.double(), 1) <= r0.unsqueeze(1)
            take = torch.zeros_like(within).scatter(1, order, within)
            if r1 is not None:
                r1 = r1 - (flat(cost).double() * take).sum(1)
            if r0 is not None:
                r0 = r0 - take.double().sum(1)
        take = take.reshape(ok.shape)
        if not bool(take.any()):
            break
        sel = take.nonzero(as_tuple=True)
        s, d = src[sel], dst[sel]
        out[sel + (s,)] = 0
        out[sel + (d,)] = 1
        occupied[sel + (s,)] = False
        occupied[sel + (d,)] = True
        left[sel + (s,)] = False
    return out
