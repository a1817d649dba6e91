"""``plain-lif``: a convolutional LIF net in plain torch, with no SNN framework.

It exists so that the suite is tested against a model whose dynamics and surrogate are written
out here, independent of spikingjelly and snntorch. The dynamics are spikingjelly's ``LIFNode``
defaults (decay_input, hard reset to 0, threshold 1): ``H = v + (x - v) / tau``,
``s = Heaviside(H - 1)``, ``v = H * (1 - s)`` with the reset spike detached (``detach_reset``).
The membrane state lives in local variables of one forward, so the net holds no state between
calls by construction.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from snnsec.harness import SpikingClassifier


class _ATanSpike(torch.autograd.Function):
    """Heaviside forward; backward ``alpha / 2 / (1 + (pi/2 * alpha * x)^2)`` (spikingjelly's ATan)."""

    @staticmethod
    def forward(ctx, x, alpha):
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        a = ctx.alpha
        return grad * (a / 2) / (1 + (math.pi / 2 * a * x) ** 2), None


class ATanSurrogate(nn.Module):
    """Module form of the ATan surrogate (so :func:`snnsec.harness.override_surrogate` can swap it)."""

    def __init__(self, alpha: float = 2.0) -> None:
        super().__init__()
        self.alpha = float(alpha)
        self.spiking = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ATanSpike.apply(x, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class LIF(nn.Module):
    """Multi-step LIF layer: ``[T, B, ...]`` currents -> ``[T, B, ...]`` spikes."""

    def __init__(self, tau: float = 2.0, v_threshold: float = 1.0, detach_reset: bool = True) -> None:
        super().__init__()
        self.tau = float(tau)
        self.v_threshold = float(v_threshold)
        self.detach_reset = detach_reset
        self.surrogate_function = ATanSurrogate()

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        v = torch.zeros_like(x_seq[0])
        spikes = []
        for x in x_seq:
            h = v + (x - v) / self.tau
            s = self.surrogate_function(h - self.v_threshold)
            v = h * (1 - (s.detach() if self.detach_reset else s))
            spikes.append(s)
        return torch.stack(spikes)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, v_threshold={self.v_threshold}, detach_reset={self.detach_reset}"


class SeqApply(nn.Module):
    """Apply a stateless module to every time step at once by folding T into the batch."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        y = self.module(x_seq.flatten(0, 1))
        return y.reshape(x_seq.shape[0], x_seq.shape[1], *y.shape[1:])


def plain_lif(*, in_channels, num_classes, sensor_hw, T, channels=(16, 32), hidden=128, tau=2.0, readout="mean"):
    """Same topology as ``csnn`` (conv-BN-LIF-pool x2, FC-BN-LIF, linear readout)."""
    from snnsec.models.csnn import _POOLED_SIDE, _stem_stride

    stride = _stem_stride(sensor_hw)
    mods: list[nn.Module] = []
    c_in, h, w = in_channels, sensor_hw[0], sensor_hw[1]
    for i, c in enumerate(channels):
        s = stride if i == 0 else 1
        mods += [SeqApply(nn.Sequential(nn.Conv2d(c_in, c, 3, stride=s, padding=1, bias=False), nn.BatchNorm2d(c))),
                 LIF(tau), SeqApply(nn.MaxPool2d(2))]
        h, w = ((h - 1) // s + 1) // 2, ((w - 1) // s + 1) // 2
        c_in = c
    if min(h, w) < 1:
        raise ValueError(f"sensor {sensor_hw} is too small for {len(channels)} pooling blocks")
    head: list[nn.Module] = []
    if max(h, w) > _POOLED_SIDE:
        h, w = min(h, _POOLED_SIDE), min(w, _POOLED_SIDE)
        head.append(nn.AdaptiveAvgPool2d((h, w)))
    head += [nn.Flatten(), nn.Linear(c_in * h * w, hidden, bias=False), nn.BatchNorm1d(hidden)]
    mods += [SeqApply(nn.Sequential(*head)), LIF(tau), nn.Linear(hidden, num_classes)]
    return SpikingClassifier(nn.Sequential(*mods), T=T, in_channels=in_channels, num_classes=num_classes,
                             sensor_hw=sensor_hw, readout=readout, description="plain-lif")
