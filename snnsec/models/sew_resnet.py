"""SEW-ResNet: spike-element-wise residual blocks, written here without torchvision.

Fang, Yu, Chen, Huang, Masquelier, Tian, "Deep Residual Learning in Spiking Neural Networks",
NeurIPS 2021. spikingjelly's ``model.sew_resnet`` imports torchvision (a CUDA build here,
which fails to load with CPU torch), so the blocks are written here to the paper: a basic block
is ``Conv3x3 -> BN -> SN -> Conv3x3 -> BN -> SN`` and its output spikes are joined with the
block's input spikes by the connect function ``g``: ``ADD`` (``A + S``, the paper's choice on
ImageNet and DVS Gesture), ``AND`` (``A * S``) or ``IAND`` (``(1 - A) * S``). A shortcut that
changes the shape is ``Conv1x1 -> BN -> SN``. With ``ADD`` the next block's convolution takes
integers (2 where both fired): the non-spike input the Spikingformer paper points out, and
that ``snnsec.energy``'s spike-driven check lists.

The default is small (three stages of one block, 16/32/64 channels, stem without max pooling)
so it trains on 2 CPU cores; ``config="sew18"`` gives SEW-ResNet-18's layout (2, 2, 2, 2 blocks,
64 to 512 channels, 7x7 stride-2 stem and max pooling). ``neuron``: ``"lif"`` (tau 2, as the other
backbones here), ``"plif"`` (the paper's DVS neuron, learnable tau from 2) or ``"if"`` (its
ImageNet neuron); detached reset and the ATan surrogate for all three.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from spikingjelly.activation_based import layer, neuron, surrogate

from snnsec.harness import SpikingClassifier

CONNECT = ("ADD", "AND", "IAND")
NEURONS = ("lif", "plif", "if")
SEW18 = {"layers": (2, 2, 2, 2), "widths": (64, 128, 256, 512)}


def _sn(kind: str) -> nn.Module:
    common = {"surrogate_function": surrogate.ATan(), "detach_reset": True, "step_mode": "m"}
    if kind == "plif":
        return neuron.ParametricLIFNode(init_tau=2.0, **common)
    if kind == "if":
        return neuron.IFNode(**common)
    return neuron.LIFNode(tau=2.0, **common)


def _conv_bn_sn(c_in: int, c_out: int, k: int, stride: int, sn: str) -> nn.Sequential:
    return nn.Sequential(layer.SeqToANNContainer(nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False),
                                                 nn.BatchNorm2d(c_out)), _sn(sn))


class SEWBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, connect: str, sn: str) -> None:
        super().__init__()
        self.conv1 = _conv_bn_sn(c_in, c_out, 3, stride, sn)
        self.conv2 = _conv_bn_sn(c_out, c_out, 3, 1, sn)
        self.shortcut = _conv_bn_sn(c_in, c_out, 1, stride, sn) if stride != 1 or c_in != c_out else nn.Identity()
        self.connect = connect

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, identity = self.conv2(self.conv1(x)), self.shortcut(x)
        if self.connect == "ADD":
            return out + identity
        if self.connect == "AND":
            return out * identity
        return (1.0 - out) * identity


class SEWResNet(nn.Module):
    """``[T, B, P, H, W]`` frames -> ``[T, B, K]`` logits per time step."""

    def __init__(self, *, in_channels: int, num_classes: int, layers, widths, connect: str, stem: str, sn: str) -> None:
        super().__init__()
        if connect not in CONNECT:
            raise ValueError(f"sew-resnet: connect must be one of {CONNECT}, got {connect!r}")
        if sn not in NEURONS:
            raise ValueError(f"sew-resnet: neuron must be one of {NEURONS}, got {sn!r}")
        if len(layers) != len(widths):
            raise ValueError(f"sew-resnet: {len(layers)} stages in layers but {len(widths)} widths")
        if stem == "imagenet":
            self.stem = nn.Sequential(_conv_bn_sn(in_channels, widths[0], 7, 2, sn),
                                      layer.SeqToANNContainer(nn.MaxPool2d(3, stride=2, padding=1)))
        else:
            self.stem = _conv_bn_sn(in_channels, widths[0], 3, 1, sn)
        blocks, c = [], widths[0]
        for i, (n, w) in enumerate(zip(layers, widths)):
            for j in range(n):
                blocks.append(SEWBlock(c, w, 2 if (i > 0 and j == 0) else 1, connect, sn))
                c = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = layer.SeqToANNContainer(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = layer.SeqToANNContainer(nn.Linear(c, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.blocks(self.stem(x))))


def sew_resnet(*, in_channels, num_classes, sensor_hw, T, config="small", layers=(1, 1, 1), widths=(16, 32, 64),
               connect="ADD", neuron="lif", readout="mean"):
    """SEW-ResNet (``config="sew18"``: SEW-ResNet-18's layout)."""
    stem = "small"
    if config == "sew18":
        layers, widths, stem = SEW18["layers"], SEW18["widths"], "imagenet"
    elif config != "small":
        raise ValueError(f"sew-resnet: config must be 'small' or 'sew18', got {config!r}")
    net = SEWResNet(in_channels=in_channels, num_classes=num_classes, layers=tuple(layers), widths=tuple(widths),
                    connect=connect, stem=stem, sn=neuron)
    return SpikingClassifier(net, T=T, in_channels=in_channels, num_classes=num_classes, sensor_hw=sensor_hw,
                             readout=readout, description=f"sew-resnet ({connect})")
