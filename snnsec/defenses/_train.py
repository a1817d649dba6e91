"""Repairs train through the one training loop, :func:`snnsec.train.train`, on tensors."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from snnsec.harness import predict
from snnsec.train import TrainConfig, train


def fit(model, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float, batch_size: int = 32, seed: int = 0,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        transform: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple] | None = None,
        progress: bool = False) -> None:
    """Adam at a constant ``lr`` on (x, y); ``loss_fn(logits, y) -> scalar`` (default CE);
    ``transform(x, y, idx)`` rewrites a batch. Leaves the model in eval mode."""
    if len(x) == 0 or epochs <= 0:
        return
    # The repair papers fine-tune at a fixed learning rate, hence no cosine schedule here.
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, schedule="constant")
    criterion = loss_fn or F.cross_entropy

    def objective(m, xb, yb):
        logits = m(xb)
        return criterion(logits, yb), logits

    train(model, TensorDataset(x, y), None, config, progress=progress, loss_fn=objective, batch_transform=transform)
    model.eval()


def accuracy(model, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict(model, x, batch_size=64).argmax(1) == y).float().mean()) if len(x) else float("nan")


def per_sample_loss(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(predict(model, x, batch_size=64), y, reduction="none")
