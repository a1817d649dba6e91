"""Neural Cleanse (Wang et al., S&P 2019) for event frames ``[T, P, H, W]``.

For each candidate target k, find the smallest mask m (over H x W, shared over time) and a
pattern p (one per polarity) such that the stamped input ``(1 - m) * x + m * p`` is classified
as k; an L1 penalty with an adaptive cost keeps m small. A label whose mask norm is a small-side
outlier (MAD anomaly index > 2) is the backdoor target.

All K candidates are optimised together: the K stamped copies of one clean batch go through the
network in ONE forward per step, and each class has its own cost schedule (Adam is elementwise,
so this is the per-class optimisation run side by side). ``batched=False`` runs the classic loop
with identical numbers. Batching pays where per-call overhead dominates (accelerators, small
models: 1.4x on the 12x12 test net); on CPU the FLOPs are the same and a large csnn batch is
less cache-friendly (0.65x on a 34x34 T=8 csnn, 1 thread; tests/benchmarks/bench_nc_batched.py).

``temporal=True`` (registered as ``nc-temporal``) gives every frame its own mask and adds a
temporal-smoothness penalty ``sum_t |m_{t+1} - m_t|``, for moving triggers.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from snnsec.defenses.base import Defense, Detection, check_frames, inspection_mode, register, rng

MAD_CONSISTENCY = 1.4826


def mad_anomaly(norms) -> tuple[np.ndarray, float, float]:
    """Small-side anomaly index (median - l) / (1.4826 * MAD) of each norm, with median and MAD."""
    n = np.asarray(norms, dtype=np.float64)
    med = float(np.median(n))
    mad = MAD_CONSISTENCY * float(np.median(np.abs(n - med)))
    return (med - n) / max(mad, 1e-12), med, mad


def _atanh_param(v: torch.Tensor) -> torch.Tensor:
    return torch.atanh((v - 0.5) * (2 - 1e-4))


@register
@dataclass
class NeuralCleanse(Defense):
    name = "nc"
    kind = "model"

    # 96 Adam steps (12 epochs x 8 batches of 16) instead of the original 1000 epochs x 31 batches:
    # on 2 CPU cores an audit has ~1 min, and event masks converge far sooner than 32x32 RGB ones.
    epochs: int = 12
    batches_per_epoch: int = 8
    batch_size: int = 16
    lr: float = 0.1
    init_cost: float = 1e-3
    cost_multiplier: float = 2.0
    patience: int = 5
    # 0.99 asks every one of 16 stamped samples to flip; the per-epoch ASR is averaged over
    # batches_per_epoch batches as in the original.
    attack_succ_threshold: float = 0.99
    early_stop_patience: int = 25  # 5 x patience, as the original
    anomaly_threshold: float = 2.0
    temporal: bool = False
    smooth: float = 1.0  # weight of the temporal-smoothness term relative to L1 (temporal only)
    batched: bool = True
    seed: int = 0
    progress: bool = False

    def __call__(self, model, x_clean, classes=None) -> Detection:
        x = check_frames(x_clean, "nc: clean samples")
        if len(x) == 0:
            raise ValueError("nc: needs clean samples (got none)")
        K = int(getattr(model, "num_classes", 0)) or int(model(x[:1]).shape[1])
        classes = list(range(K)) if classes is None else [int(c) for c in classes]
        with inspection_mode(model):
            if self.batched:
                res = self._reverse(model, x, classes)
            else:
                parts = [self._reverse(model, x, [k]) for k in classes]
                res = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
        norms = res["norm"].numpy()
        anomaly, med, mad = mad_anomaly(norms)
        flagged = [classes[i] for i in np.flatnonzero(anomaly > self.anomaly_threshold)]
        best = int(np.argmax(anomaly))
        backdoored = bool(flagged)
        return Detection(
            method=self.name, backdoored=backdoored, target=classes[best] if backdoored else None,
            statistic=float(anomaly[best]), scores=anomaly.tolist(), candidate=classes[best],
            evidence={"l1_norms": norms.tolist(), "median": med, "mad": mad, "flagged": flagged,
                      "reached": res["reached"].bool().tolist(), "classes": classes,
                      "anomaly_threshold": self.anomaly_threshold},
            artifacts={"masks": res["mask"], "patterns": res["pattern"]},
        )

    # ------------------------------------------------------------------ core

    def _reverse(self, model, x: torch.Tensor, classes: list[int]) -> dict[str, torch.Tensor]:
        """Optimise masks/patterns for ``classes`` side by side; one forward per step."""
        G = len(classes)
        N, T, P, H, W = x.shape
        Tm = T if self.temporal else 1
        g = rng(self.seed)
        # Every class starts from the same random init and sees the same batches whether it runs
        # alone or batched, so both paths give the same numbers up to float summation order.
        m0 = torch.rand(1, Tm, 1, H, W, generator=g).expand(G, -1, -1, -1, -1)
        p0 = torch.rand(1, 1, P, H, W, generator=g).expand(G, -1, -1, -1, -1)
        m_param = _atanh_param(m0).clone().requires_grad_(True)
        p_param = _atanh_param(p0).clone().requires_grad_(True)
        opt = torch.optim.Adam([m_param, p_param], lr=self.lr, betas=(0.5, 0.9))
        target = torch.tensor(classes).repeat_interleave(min(self.batch_size, N))
        cost = torch.full((G,), self.init_cost)
        up = torch.zeros(G, dtype=torch.long)
        down = torch.zeros(G, dtype=torch.long)
        best_norm = torch.full((G,), float("inf"))
        best_mask = torch.zeros(G, Tm, H, W)
        best_pattern = torch.zeros(G, P, H, W)
        stale = torch.zeros(G, dtype=torch.long)
        active = torch.ones(G, dtype=torch.bool)
        up_mult, down_mult = self.cost_multiplier, self.cost_multiplier ** 1.5

        bar = tqdm(range(self.epochs), desc=f"nc[{','.join(map(str, classes)) if G < 4 else G}]",
                   disable=not (self.progress and sys.stderr.isatty()), leave=False)
        for _ in bar:
            acc_sum = torch.zeros(G)
            reg_sum = torch.zeros(G)
            for _b in range(self.batches_per_epoch):
                idx = torch.randperm(N, generator=g)[: min(self.batch_size, N)]
                xb = x[idx]
                mask = (torch.tanh(m_param) + 1) / 2  # [G, Tm, 1, H, W]
                pattern = (torch.tanh(p_param) + 1) / 2  # [G, 1, P, H, W]
                stamped = (1 - mask[:, None]) * xb[None] + (mask * pattern)[:, None]
                logits = model(stamped.reshape(G * len(idx), T, P, H, W))
                ce = F.cross_entropy(logits, target, reduction="none").view(G, -1).mean(1)
                if self.temporal:
                    l1 = mask.sum(dim=(2, 3, 4)).mean(1)
                    tv = (mask[:, 1:] - mask[:, :-1]).abs().sum(dim=(1, 2, 3, 4))
                    reg = l1 + self.smooth * tv / max(Tm - 1, 1)
                else:
                    l1 = reg = mask.sum(dim=(1, 2, 3, 4))
                loss = (ce + cost * reg).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    acc_sum += (logits.argmax(1) == target).float().view(G, -1).mean(1)
                    reg_sum += l1.detach()
            acc = acc_sum / self.batches_per_epoch
            l1_epoch = reg_sum / self.batches_per_epoch
            with torch.no_grad():
                mask = ((torch.tanh(m_param) + 1) / 2)[:, :, 0]
                pattern = ((torch.tanh(p_param) + 1) / 2)[:, 0]
                ok = (acc >= self.attack_succ_threshold) & (l1_epoch < best_norm) & active
                improved = ok & (l1_epoch < best_norm * 0.99)
                best_norm = torch.where(ok, l1_epoch, best_norm)
                best_mask[ok] = mask[ok]
                best_pattern[ok] = pattern[ok]
                stale = torch.where(improved | torch.isinf(best_norm), torch.zeros_like(stale), stale + 1)
                succ = acc >= self.attack_succ_threshold
                up = torch.where(succ, up + 1, torch.zeros_like(up))
                down = torch.where(succ, torch.zeros_like(down), down + 1)
                raise_ = up >= self.patience
                lower = (down >= self.patience) & ~raise_
                cost = torch.where(raise_ & active, cost * up_mult, cost)
                cost = torch.where(lower & active, cost / down_mult, cost)
                up[raise_] = 0
                down[lower] = 0
                active &= stale < self.early_stop_patience
            if not bool(active.any()):
                break
        reached = torch.isfinite(best_norm)
        with torch.no_grad():
            last_mask = ((torch.tanh(m_param) + 1) / 2)[:, :, 0]
            last_pattern = ((torch.tanh(p_param) + 1) / 2)[:, 0]
            norm = torch.where(reached, best_norm, last_mask.sum(dim=(2, 3)).mean(1) if self.temporal else last_mask.sum(dim=(1, 2, 3)))
            best_mask[~reached] = last_mask[~reached]
            best_pattern[~reached] = last_pattern[~reached]
        return {"norm": norm.detach(), "mask": best_mask.detach(), "pattern": best_pattern.detach(), "reached": reached}


@register
@dataclass
class TemporalNeuralCleanse(NeuralCleanse):
    name = "nc-temporal"
    temporal: bool = True



def stamp(x: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """Apply a reversed trigger: mask ``[Tm, H, W]`` (Tm = 1 or T), pattern ``[P, H, W]``."""
    m = mask[None, :, None]
    return (1 - m) * x + m * pattern[None, None]
