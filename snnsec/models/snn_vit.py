"""SNN-ViT: a spiking vision transformer with saccadic spatio-temporal attention (SSSA), small.

Wang et al., "Spiking Vision Transformer with Saccadic Attention", ICLR 2025 (arXiv:2502.12677).
No official code was found (searched by name and author), so this follows the paper's
equations as summarised in its review record and in secondary notes; what is a reading rather
than the paper's text is said where it happens. Written here because no installed package has it.

- **GL-SPS** (global-local spiking patch splitting): each stage sums a 3x3 convolution and a
  dilated 3x3 one (dilation 2: the wider, "global" view), then ``BN -> LIF``; the last two stages
  pool (34x34 -> 9x9 tokens, as Spikformer's patch-4 stem).
- **SSSA** (the attention): Q, K, V are spikes (``Conv1x1 -> BN -> LIF``). Dot products of spike
  vectors measure relevance badly (their magnitudes differ), so the spatial relevance of a query
  token is the match of firing-rate distributions: with ``q_n`` the rate of token n over a head's
  channels and ``k_m`` likewise, the row sum of the cross-attention ``q_n * sum_m k_m``; the linear
  form (SSSA-V2) computes the key sum first, O(N D). The saccadic neuron then mixes salience
  across time with a learnable lower-triangular ``T x T`` matrix (causal: a step sees only earlier
  ones; started at the identity) and fires ``S = H(M q k - theta)`` per token, time step and head;
  the output is ``Conv1x1 -> BN -> LIF`` of ``V * S``: each step keeps the tokens it looks at.
  Readings of ours: rates are means (not sums) so the salience lies in [0, 1]; the threshold
  ``theta`` is learnable per head, started at 0.001, where about a third of the tokens fire at
  initialisation (on 20 %-dense frames the salience's upper quartile starts at 0.0027; silent
  tokens, salience 0, never do); the saccadic spike's surrogate is spikingjelly's Sigmoid, as
  every neuron here, and stays the model's own under an attack's surrogate override.
- Blocks ``x = x + SSSA(x); x = x + MLP(x)`` (Spikformer's layout: the residual adds spikes), then
  the token mean and a linear head per step.

The temporal matrix makes the model need exactly the T it was built with (as the full PSN).
Small by default (64-d, 1 block, 4 heads) so it trains on 2 CPU cores.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from spikingjelly.activation_based import layer, neuron, surrogate

from snnsec.harness import SpikingClassifier
from snnsec.models.spikingformer import TokenMean, conv_bn


def _lif() -> nn.Module:
    return neuron.LIFNode(tau=2.0, detach_reset=True, step_mode="m")


class GlobalLocalConv(nn.Module):
    """``conv3x3(x) + dilated conv3x3(x)`` (dilation 2), then BN, per time step."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.local = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.wide = nn.Conv2d(c_in, c_out, 3, padding=2, dilation=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [T, B, C, H, W]
        flat = x.flatten(0, 1)
        out = self.bn(self.local(flat) + self.wide(flat))
        return out.reshape(*x.shape[:2], *out.shape[1:])


class GLSPS(nn.Module):
    """Four ``GlobalLocalConv -> LIF`` stages to widths E/8, E/4, E/2, E; the last ``pools`` pool."""

    def __init__(self, in_channels: int, embed_dims: int, pools: int) -> None:
        super().__init__()
        dims = [in_channels, embed_dims // 8, embed_dims // 4, embed_dims // 2, embed_dims]
        parts = []
        for i in range(4):
            parts += [GlobalLocalConv(dims[i], dims[i + 1]), _lif()]
            if i >= 4 - pools:
                parts.append(layer.SeqToANNContainer(nn.MaxPool2d(3, stride=2, padding=1)))
        self.stages = nn.Sequential(*parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)


class SaccadicAttention(nn.Module):
    """SSSA (linear form): per head, salience ``q_n * mean_m k_m`` of spike rates, mixed causally over
    time by ``tril(M)``, a saccadic spike per token, ``V`` kept where it fired (module docstring)."""

    def __init__(self, dim: int, num_heads: int, T: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"snn-vit: embed_dims {dim} must be divisible by num_heads {num_heads}")
        self.heads = num_heads
        self.q, self.k, self.v = (nn.Sequential(conv_bn(dim, dim), _lif()) for _ in range(3))
        self.time_mix = nn.Parameter(torch.eye(T))
        self.threshold = nn.Parameter(torch.full((num_heads,), 1e-3))
        self.saccade = surrogate.Sigmoid()
        self.proj = nn.Sequential(conv_bn(dim, dim), _lif())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [T, B, C, H, W]
        T, B, C, H, W = x.shape
        if T != self.time_mix.shape[0]:
            raise ValueError(f"snn-vit: built for T={self.time_mix.shape[0]}, got T={T} (the saccadic time mix is T x T)")
        split = lambda t: t.reshape(T, B, self.heads, C // self.heads, H * W)  # noqa: E731
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        salience = q.mean(3) * k.mean((3, 4)).unsqueeze(-1)  # [T, B, heads, N]
        mixed = torch.einsum("ts,sbhn->tbhn", torch.tril(self.time_mix), salience)
        look = self.saccade(mixed - self.threshold.view(1, 1, -1, 1))
        return self.proj((v * look.unsqueeze(3)).reshape(T, B, C, H, W))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(conv_bn(dim, hidden), _lif(), conv_bn(hidden, dim), _lif())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, T: int) -> None:
        super().__init__()
        self.attn = SaccadicAttention(dim, num_heads, T)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class SNNViT(nn.Module):
    """``[T, B, P, H, W]`` frames -> ``[T, B, K]`` logits per time step."""

    def __init__(self, *, in_channels: int, num_classes: int, T: int, embed_dims: int, depths: int, num_heads: int,
                 mlp_ratio: float, pools: int) -> None:
        super().__init__()
        self.patch_split = GLSPS(in_channels, embed_dims, pools)
        self.blocks = nn.Sequential(*(Block(embed_dims, num_heads, mlp_ratio, T) for _ in range(depths)))
        self.features = TokenMean()
        self.head = layer.SeqToANNContainer(nn.Linear(embed_dims, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.blocks(self.patch_split(x))))


def snn_vit(*, in_channels, num_classes, sensor_hw, T, embed_dims=64, depths=1, num_heads=4, mlp_ratio=4.0, pools=None,
            readout="mean"):
    """SNN-ViT with saccadic spatio-temporal attention (module docstring); needs exactly ``T`` steps."""
    if pools is None:
        # two 2x poolings give a 9x9 token grid at 34x34; four keep 128x128 sensors at 8x8
        pools = 4 if min(sensor_hw) >= 64 else 2
    net = SNNViT(in_channels=in_channels, num_classes=num_classes, T=T, embed_dims=embed_dims, depths=depths,
                 num_heads=num_heads, mlp_ratio=mlp_ratio, pools=pools)
    return SpikingClassifier(net, T=T, in_channels=in_channels, num_classes=num_classes, sensor_hw=sensor_hw,
                             readout=readout, feature_module=net.features, description="snn-vit (SSSA)")
