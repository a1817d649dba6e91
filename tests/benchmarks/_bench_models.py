"""The benchmarks' common input: a freshly built backbone in eval mode with its BatchNorm statistics
calibrated on a random 20 %-dense spike batch, and that batch (seeded, so every run times the same work)."""

from __future__ import annotations

import torch

from snnsec import models
from snnsec.harness import calibrate_bn


def spike_batch_model(name: str, T: int, batch: int, hw=(34, 34)):
    torch.manual_seed(0)
    model = models.build(name, in_channels=2, num_classes=10, sensor_hw=hw, T=T)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(batch, T, 2, *hw, generator=g) < 0.2).float()
    y = torch.arange(batch) % 10
    calibrate_bn(model, x, passes=1)
    model.eval()  # attacks differentiate eval-mode models
    return model, x, y
