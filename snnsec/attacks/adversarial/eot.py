"""Expectation over transformation for stochastic encoders (Athalye et al. 2018).

A rate-coded (Poisson/Bernoulli) classifier draws a new spike train every forward, so a single
gradient is noisy and a single prediction is a coin toss near the boundary. :class:`EOT`
averages the logits of ``n`` draws; attacking it gives the EOT gradient (the mean of the
per-draw gradients, through the encoder's straight-through estimator). Each draw uses its own
fixed seed (``seed + i``), so the averaged model is deterministic and the repeated-forward check
applies to it; evaluate with a different ``seed`` from the one attacked so the attack cannot
fit the evaluation draws.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["EOT", "is_stochastic"]


def is_stochastic(model: nn.Module) -> bool:
    """True for a classifier whose encoder draws fresh randomness every forward."""
    return getattr(model, "encoder", "direct") != "direct" and getattr(model, "encoder_seed", None) is None


class EOT(nn.Module):
    """``forward(x)`` = mean logits over ``n`` encoder draws with seeds ``seed .. seed + n - 1``."""

    def __init__(self, model: nn.Module, n: int = 10, seed: int = 0) -> None:
        super().__init__()
        if int(n) < 1:
            raise ValueError(f"EOT: n must be >= 1, got {n}")
        if not hasattr(model, "encoder_seed"):
            raise ValueError(f"EOT: {type(model).__name__} has no encoder_seed; wrap a SpikingClassifier")
        self.model = model
        self.n = int(n)
        self.seed = int(seed)
        self.num_classes = getattr(model, "num_classes", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        saved = self.model.encoder_seed
        try:
            outs = []
            for i in range(self.n):
                self.model.encoder_seed = self.seed + i
                outs.append(self.model(x))
        finally:
            self.model.encoder_seed = saved
        return torch.stack(outs).mean(0)
