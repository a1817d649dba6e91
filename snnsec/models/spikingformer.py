"""Spikingformer: a spiking transformer whose every convolution and matrix product sees spikes.

Zhou, Yu, Zhou, et al., "Spikingformer: Spike-driven Residual Learning for Transformer-based
Spiking Neural Network", arXiv:2304.11954 (2023); reference code
``zhouchenlin2096/Spikingformer``. Spikformer adds the spikes of a block to its input, so
the next block's convolutions multiply integers (2 where both fired) by float weights. In
Spikingformer every weight layer is pre-activated, ``LIF -> Conv -> BN``: the residual stream
carries real values, and a neuron turns it into spikes right before each weight, so every
product is spike-driven (accumulates only). Written here because no installed package has it.

Layout, as the reference code: a spiking tokenizer (the encoding ``Conv -> BN``, then four
pre-activated ``LIF [-> MaxPool] -> Conv -> BN`` stages, the last ``pools`` of them pooling;
no position-embedding residual), encoder blocks ``x = x + SSA(x); x = x + MLP(x)`` with spiking
self-attention (``Q K^T V`` of spikes, scale 0.125, attention LIF threshold 0.5) and a two-layer
MLP, then the mean over tokens and the linear head per time step (averaged over T by the
harness; the reference takes the head of the mean, the same by linearity). The head sees the
real-valued residual stream, as in the reference: only the blocks' products are spike-driven.
Neurons: LIF, hard reset, detached reset, Sigmoid surrogate (spikingjelly's default, as the
reference); tau 2 as the reference's CIFAR models, 1.5 with ``config="paper"`` (its DVS model).

``cml=True`` gives CML's downsampling (Zhou et al., "Enhancing the Performance of Transformer-based
Spiking Neural Networks by SNN-optimized Downsampling with Precise Gradient Backpropagation",
arXiv:2305.05954; ``zhouchenlin2096/Spikingformer-CML``): each MaxPool moves from between a LIF and
its convolution to right after the previous BN, so the network pools membrane inputs rather than
spikes (``Conv -> BN -> MaxPool -> LIF -> Conv``) and the pooling's gradient reaches the neuron
that produced the maximum. Parameters are the same; only the order changes.

The default is small (64-d, 1 block, 4 heads) so it trains on 2 CPU cores; ``config="paper"``
gives the paper's DVS configuration (256-d, 2 blocks, 16 heads, MLP ratio 4, tau 1.5).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from spikingjelly.activation_based import layer, neuron

from snnsec.harness import SpikingClassifier

PAPER = {"embed_dims": 256, "depths": 2, "num_heads": 16, "mlp_ratio": 4.0, "tau": 1.5}


def _lif(v_threshold: float = 1.0, tau: float = 2.0) -> nn.Module:
    return neuron.LIFNode(tau=tau, v_threshold=v_threshold, detach_reset=True, step_mode="m")


def _pool() -> nn.Module:
    return layer.SeqToANNContainer(nn.MaxPool2d(3, stride=2, padding=1))


def conv_bn(c_in: int, c_out: int, k: int = 1) -> nn.Module:
    """``Conv (k x k, no bias) -> BN`` per time step (SNN-ViT uses it too)."""
    return layer.SeqToANNContainer(nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False), nn.BatchNorm2d(c_out))


class Tokenizer(nn.Module):
    """The encoding ``Conv -> BN`` (widths E/8), then stages to E/4, E/2, E, E; the last ``pools``
    stages halve the grid. Original order ``LIF -> MaxPool -> Conv -> BN``; with ``cml`` the pool
    ends the previous stage instead (``... -> BN -> MaxPool``, then ``LIF -> Conv -> BN``)."""

    def __init__(self, in_channels: int, embed_dims: int, pools: int, cml: bool, tau: float) -> None:
        super().__init__()
        if not 0 <= pools <= 4:
            raise ValueError(f"spikingformer: pools must be 0..4, got {pools}")
        dims = [embed_dims // 8, embed_dims // 4, embed_dims // 2, embed_dims, embed_dims]
        pooled = [i >= 4 - pools for i in range(4)]  # stage i (0..3) downsamples
        parts = [conv_bn(in_channels, dims[0], 3)]
        if cml and pooled[0]:
            parts.append(_pool())
        for i in range(4):
            parts.append(_lif(tau=tau))
            if pooled[i] and not cml:
                parts.append(_pool())
            parts.append(conv_bn(dims[i], dims[i + 1], 3))
            if cml and i + 1 < 4 and pooled[i + 1]:
                parts.append(_pool())
        self.stages = nn.Sequential(*parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)


class SpikingSelfAttention(nn.Module):
    """``LIF`` on the block input, then Q, K, V as ``Conv1x1 -> BN -> LIF``, ``Q K^T V * 0.125``, a
    LIF at threshold 0.5, and the output ``Conv1x1 -> BN`` (pre-activated, as the MLP)."""

    def __init__(self, dim: int, num_heads: int, tau: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"spikingformer: embed_dims {dim} must be divisible by num_heads {num_heads}")
        self.heads, self.scale = num_heads, 0.125
        self.input_lif = _lif(tau=tau)
        self.q, self.k, self.v = (nn.Sequential(conv_bn(dim, dim), _lif(tau=tau)) for _ in range(3))
        self.attn_lif = _lif(v_threshold=0.5, tau=tau)
        self.proj = conv_bn(dim, dim)

    def _split(self, t: torch.Tensor) -> torch.Tensor:  # [T, B, C, H, W] -> [T, B, heads, N, C / heads]
        T, B, C, H, W = t.shape
        return t.flatten(3).transpose(-1, -2).reshape(T, B, -1, self.heads, C // self.heads).transpose(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B, C, H, W = x.shape
        s = self.input_lif(x)
        q, k, v = self._split(self.q(s)), self._split(self.k(s)), self._split(self.v(s))
        out = (q @ k.transpose(-2, -1)) * self.scale @ v
        out = out.transpose(2, 3).reshape(T, B, H * W, C).transpose(-1, -2).reshape(T, B, C, H, W)
        return self.proj(self.attn_lif(out))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, tau: float) -> None:
        super().__init__()
        self.net = nn.Sequential(_lif(tau=tau), conv_bn(dim, hidden), _lif(tau=tau), conv_bn(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, tau: float) -> None:
        super().__init__()
        self.attn = SpikingSelfAttention(dim, num_heads, tau)
        self.mlp = MLP(dim, int(dim * mlp_ratio), tau)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class TokenMean(nn.Module):
    """``[T, B, C, H, W] -> [T, B, C]``: the features the head reads (the taps' feature module)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(3).mean(3)


class Spikingformer(nn.Module):
    """``[T, B, P, H, W]`` frames -> ``[T, B, K]`` logits per time step."""

    def __init__(self, *, in_channels: int, num_classes: int, embed_dims: int, depths: int, num_heads: int,
                 mlp_ratio: float, pools: int, cml: bool, tau: float) -> None:
        super().__init__()
        self.tokenizer = Tokenizer(in_channels, embed_dims, pools, cml, tau)
        self.blocks = nn.Sequential(*(Block(embed_dims, num_heads, mlp_ratio, tau) for _ in range(depths)))
        self.features = TokenMean()
        self.head = layer.SeqToANNContainer(nn.Linear(embed_dims, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.blocks(self.tokenizer(x))))


def spikingformer(*, in_channels, num_classes, sensor_hw, T, config="small", embed_dims=64, depths=1, num_heads=4,
                  mlp_ratio=4.0, pools=None, cml=False, tau=2.0, readout="mean"):
    """Spikingformer (``config="paper"``: the paper's 256-d, 2-block DVS model; ``cml``: CML's downsampling)."""
    if config == "paper":
        embed_dims, depths, num_heads, mlp_ratio, tau = (PAPER[k] for k in ("embed_dims", "depths", "num_heads",
                                                                            "mlp_ratio", "tau"))
    elif config != "small":
        raise ValueError(f"spikingformer: config must be 'small' or 'paper', got {config!r}")
    if pools is None:
        # two 2x poolings give a 9x9 token grid at 34x34 (the reference's CIFAR layout); four keep
        # 128x128 sensors at 8x8 (its DVS layout)
        pools = 4 if min(sensor_hw) >= 64 else 2
    net = Spikingformer(in_channels=in_channels, num_classes=num_classes, embed_dims=embed_dims, depths=depths,
                        num_heads=num_heads, mlp_ratio=mlp_ratio, pools=pools, cml=bool(cml), tau=float(tau))
    return SpikingClassifier(net, T=T, in_channels=in_channels, num_classes=num_classes, sensor_hw=sensor_hw,
                             readout=readout, feature_module=net.features,
                             description="spikingformer" + (" (CML downsampling)" if cml else ""))
