"""Spikingformer: a spiking transformer whose every convolution and matrix product sees spikes.

Zhou, Yu, Zhou, et al., "Spikingformer: Spike-driven Residual Learning for Transformer-based
Spiking Neural Network", arXiv:2304.11954 (2023); reference code
``zhouchenlin2096/Spikingformer``. Spikformer adds the spikes of a block to its input, so
the next block's convolutions multiply integers (2 where both fired) by float weights. In
Spikingformer every weight layer is pre-activated, ``LIF -> Conv -> BN``: the residual stream
carries real values, and a neuron turns it into spikes right before each weight, so every
product is spike-driven (accumulates only). Written here because no installed package has it.

Layout, as the paper: a spiking tokenizer (the encoding ``Conv -> BN``, then ``LIF -> Conv ->
BN [-> MaxPool]`` stages and a relative position embedding added to its input), encoder
blocks ``x = x + SSA(x); x = x + MLP(x)`` with spiking self-attention (``Q K^T V`` of spikes,
scale 0.125, attention LIF threshold 0.5) and a two-layer MLP, then token averaging, a LIF and
the linear head per time step. Neurons: LIF, tau 2, hard reset, detached reset, Sigmoid
surrogate (spikingjelly's default, as the reference).

The default is small (64-d, 1 block, 4 heads) so it trains on 2 CPU cores; ``config="paper"``
gives the paper's DVS configuration (256-d, 2 blocks, 16 heads, MLP ratio 4).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from spikingjelly.activation_based import layer, neuron

from snnsec.harness import SpikingClassifier

PAPER = {"embed_dims": 256, "depths": 2, "num_heads": 16, "mlp_ratio": 4.0}


def _lif(v_threshold: float = 1.0) -> nn.Module:
    return neuron.LIFNode(tau=2.0, v_threshold=v_threshold, detach_reset=True, step_mode="m")


def _conv_bn(c_in: int, c_out: int, k: int = 1, pool: bool = False) -> nn.Module:
    parts = [nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False), nn.BatchNorm2d(c_out)]
    if pool:
        parts.append(nn.MaxPool2d(3, stride=2, padding=1))
    return layer.SeqToANNContainer(*parts)


class Tokenizer(nn.Module):
    """Encoding ``Conv -> BN``, then pre-activated ``LIF -> Conv -> BN (-> MaxPool)`` stages; a
    relative position embedding (``LIF -> Conv -> BN``) is added to the result."""

    def __init__(self, in_channels: int, embed_dims: int, pools: int) -> None:
        super().__init__()
        dims = [embed_dims // 8, embed_dims // 4, embed_dims // 2, embed_dims]
        self.encode = _conv_bn(in_channels, dims[0], 3, pool=pools >= 4)
        stages = []
        for i in range(1, 4):
            stages += [_lif(), _conv_bn(dims[i - 1], dims[i], 3, pool=pools >= 4 - i)]
        self.stages = nn.Sequential(*stages)
        self.rpe = nn.Sequential(_lif(), _conv_bn(embed_dims, embed_dims, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.encode(x))
        return x + self.rpe(x)


class SpikingSelfAttention(nn.Module):
    """``LIF`` on the block input, then Q, K, V as ``Conv1x1 -> BN -> LIF``, ``Q K^T V * 0.125``, a
    LIF at threshold 0.5, and the output ``Conv1x1 -> BN`` (pre-activated, as the MLP)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"spikingformer: embed_dims {dim} must be divisible by num_heads {num_heads}")
        self.heads, self.scale = num_heads, 0.125
        self.input_lif = _lif()
        self.q, self.k, self.v = (nn.Sequential(_conv_bn(dim, dim), _lif()) for _ in range(3))
        self.attn_lif = _lif(v_threshold=0.5)
        self.proj = _conv_bn(dim, dim)

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
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(_lif(), _conv_bn(dim, hidden), _lif(), _conv_bn(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.attn = SpikingSelfAttention(dim, num_heads)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class Spikingformer(nn.Module):
    """``[T, B, P, H, W]`` frames -> ``[T, B, K]`` logits per time step."""

    def __init__(self, *, in_channels: int, num_classes: int, sensor_hw, embed_dims: int, depths: int,
                 num_heads: int, mlp_ratio: float, pools: int) -> None:
        super().__init__()
        self.tokenizer = Tokenizer(in_channels, embed_dims, pools)
        self.blocks = nn.Sequential(*(Block(embed_dims, num_heads, mlp_ratio) for _ in range(depths)))
        self.head_lif = _lif()
        self.head = layer.SeqToANNContainer(nn.Linear(embed_dims, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.tokenizer(x))
        return self.head(self.head_lif(x.flatten(3).mean(3)))


def spikingformer(*, in_channels, num_classes, sensor_hw, T, config="small", embed_dims=64, depths=1, num_heads=4,
                  mlp_ratio=4.0, pools=None, readout="mean"):
    """Spikingformer (``config="paper"``: the paper's 256-d, 2-block DVS model)."""
    if config == "paper":
        embed_dims, depths, num_heads, mlp_ratio = (PAPER[k] for k in ("embed_dims", "depths", "num_heads", "mlp_ratio"))
    elif config != "small":
        raise ValueError(f"spikingformer: config must be 'small' or 'paper', got {config!r}")
    if pools is None:
        # two 2x poolings give a 9x9 token grid at 34x34; four keep 128x128 sensors at 8x8
        pools = 4 if min(sensor_hw) >= 64 else 2
    net = Spikingformer(in_channels=in_channels, num_classes=num_classes, sensor_hw=sensor_hw, embed_dims=embed_dims,
                        depths=depths, num_heads=num_heads, mlp_ratio=mlp_ratio, pools=pools)
    return SpikingClassifier(net, T=T, in_channels=in_channels, num_classes=num_classes, sensor_hw=sensor_hw,
                             readout=readout, feature_module=net.head_lif, description="spikingformer")
