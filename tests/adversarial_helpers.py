"""Small trained spiking models and broken stand-ins for the adversarial-evaluation tests."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from snnsec import models
from snnsec.harness import SpikingClassifier

T, P, H, W, K = 4, 2, 8, 8, 4


def quadrant_data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary frames [n, T, P, H, W]: class c fires densely in quadrant c, sparsely elsewhere."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % K
    p = torch.full((n, T, P, H, W), 0.08)
    for i, c in enumerate(y.tolist()):
        r, s = divmod(c, 2)
        p[i, :, :, r * 4:(r + 1) * 4, s * 4:(s + 1) * 4] = 0.5
    return torch.bernoulli(p, generator=g), y


def trained_csnn(seed: int = 0, steps: int = 60) -> tuple[SpikingClassifier, torch.Tensor, torch.Tensor]:
    """A csnn trained to ~100% on quadrant data; returns (model in eval mode, test x, test y)."""
    torch.manual_seed(seed)
    m = models.build("csnn", in_channels=P, num_classes=K, sensor_hw=(H, W), T=T, channels=(4, 8), hidden=32)
    x, y = quadrant_data(256, seed)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    m.train()
    for i in range(steps):
        idx = torch.arange(i * 32, (i + 1) * 32) % 256
        loss = F.cross_entropy(m(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    xt, yt = quadrant_data(48, seed + 1)
    return m, xt, yt


class _HardLIF(nn.Module):
    """Broken neuron: hard threshold whose backward passes a zero gradient."""

    def forward(self, x):  # x [T, B, ...]
        v = torch.zeros_like(x[0])
        out = []
        for t in range(x.shape[0]):
            v = 0.5 * v + x[t]
            s = (v >= 1.0).to(x)
            v = v * (1 - s)
            out.append(s + 0 * x[t])  # keeps a graph, gradient exactly 0
        return torch.stack(out)


class _Readout(nn.Module):
    def __init__(self, backbone_from: SpikingClassifier, neuron_cls) -> None:
        super().__init__()
        src = backbone_from.backbone
        self.layers = nn.ModuleList([m if not hasattr(m, "surrogate_function") else neuron_cls() for m in src])

    def forward(self, x):
        for m in self.layers:
            x = m(x)
        return x


def hard_threshold_copy(model: SpikingClassifier) -> SpikingClassifier:
    """The same trained weights with neurons whose spikes pass zero gradient."""
    import copy

    src = copy.deepcopy(model)
    bb = _Readout(src, _HardLIF)
    return SpikingClassifier(bb, T=T, in_channels=P, num_classes=K, sensor_hw=(H, W)).eval()


class Leaky(nn.Module):
    """Broken model: keeps a running input trace across forwards and never resets it."""

    def __init__(self, model: SpikingClassifier) -> None:
        super().__init__()
        self.model = model
        self.num_classes = model.num_classes
        self.trace = None

    def forward(self, x):
        m = x.detach().mean(0, keepdim=True)
        self.trace = m if self.trace is None else 0.5 * self.trace + m
        return self.model(x) + 3.0 * self.trace.flatten(1)[:, :K].sum(1, keepdim=True) * torch.arange(K).to(x)


class _ZeroGradFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return (x >= 0).to(x)

    @staticmethod
    def backward(ctx, grad):
        return torch.zeros_like(grad)


class ZeroSurrogate(nn.Module):
    """A surrogate that passes no gradient (a masked model), duck-typed as spikingjelly's."""

    def __init__(self) -> None:
        super().__init__()
        self.spiking = True

    def forward(self, x):
        return _ZeroGradFn.apply(x)


def masked_surrogate_copy(model: SpikingClassifier) -> SpikingClassifier:
    """The same model whose own surrogate passes zero gradient; an attack-time surrogate
    (``gradients=("atan",)``) replaces it and recovers the gradient."""
    import copy

    from snnsec.harness import spiking_neurons

    masked = copy.deepcopy(model)
    for _, m, attr in spiking_neurons(masked):
        setattr(m, attr, ZeroSurrogate())
    return masked.eval()
