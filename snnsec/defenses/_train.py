"""The small tensor training loops repairs need (per-sample losses, gradient ascent)."""

from __future__ import annotations

import sys
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from snnsec.defenses.base import predict


def fit(model, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float, batch_size: int = 32, seed: int = 0,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        transform: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple] | None = None,
        after_step: Callable[[], None] | None = None, progress: bool = False, desc: str = "fit") -> None:
    """Adam on (x, y); ``loss_fn(logits, y) -> scalar`` (default CE); ``transform(x, y, idx)``
    rewrites a batch; ``after_step`` runs after every optimiser step (e.g. re-apply a prune mask)."""
    if len(x) == 0 or epochs <= 0:
        return
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    g = torch.Generator().manual_seed(int(seed))
    model.train()
    for _ in tqdm(range(epochs), desc=desc, disable=not (progress and sys.stderr.isatty()), leave=False):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            xb, yb = x[idx], y[idx]
            if transform is not None:
                xb, yb = transform(xb, yb, idx)
            logits = model(xb)
            loss = (loss_fn or F.cross_entropy)(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step()
    model.eval()


def accuracy(model, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict(model, x).argmax(1) == y).float().mean()) if len(x) else float("nan")


def per_sample_loss(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(predict(model, x), y, reduction="none")
