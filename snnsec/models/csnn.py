"""Small convolutional SNNs built from spikingjelly layers (multi-step, time-first).

``csnn`` follows the Sneaky Spikes N-MNIST/DVS models in spirit: conv-BN-LIF blocks with max
pooling, an FC-BN-LIF hidden layer and a linear readout whose output is averaged over T. LIF with
tau 2, ATan surrogate and ``detach_reset=True`` as there. Widths are small (16/32 channels,
128 hidden) so one epoch over ~1,400 samples at T=16 takes seconds on 2 CPU cores.
"""

from __future__ import annotations

import torch.nn as nn
from spikingjelly.activation_based import functional, layer, neuron, surrogate

from snnsec.harness import SpikingClassifier

# flattened feature map side before the FC layer: 34x34 input gives 8x8 after two pools, so the
# adaptive pool is a no-op there and only shrinks larger sensors (128x128 -> 16x16 -> 8x8)
_POOLED_SIDE = 8


def _stem_stride(sensor_hw: tuple[int, int]) -> int:
    # 128x128 DVS sensors: halve resolution in the stem so the conv cost stays near the 34x34 one
    return 2 if min(sensor_hw) >= 64 else 1


def conv_backbone(
    in_channels: int,
    num_classes: int,
    sensor_hw: tuple[int, int],
    make_neuron,
    channels: tuple[int, ...] = (16, 32),
    hidden: int = 128,
) -> nn.Sequential:
    """conv3x3-BN-neuron-maxpool blocks, optional adaptive pool, FC-neuron, linear readout (step mode 'm')."""
    if not channels:
        raise ValueError("channels must list at least one conv width")
    stride = _stem_stride(sensor_hw)
    mods: list[nn.Module] = []
    c_in, h, w = in_channels, sensor_hw[0], sensor_hw[1]
    for i, c in enumerate(channels):
        s = stride if i == 0 else 1
        mods += [layer.Conv2d(c_in, c, 3, stride=s, padding=1, bias=False), layer.BatchNorm2d(c), make_neuron(),
                 layer.MaxPool2d(2)]
        h, w = (h + 2 - 3) // s + 1, (w + 2 - 3) // s + 1
        h, w = h // 2, w // 2
        c_in = c
    if min(h, w) < 1:
        raise ValueError(f"sensor {sensor_hw} is too small for {len(channels)} pooling blocks")
    if max(h, w) > _POOLED_SIDE:
        mods.append(layer.AdaptiveAvgPool2d((min(h, _POOLED_SIDE), min(w, _POOLED_SIDE))))
        h, w = min(h, _POOLED_SIDE), min(w, _POOLED_SIDE)
    # BN before the hidden neurons: without it the FC currents of a fresh net stay below threshold,
    # the hidden layer is silent and the logits are constant until training moves the weights
    mods += [layer.Flatten(), layer.Linear(c_in * h * w, hidden, bias=False), layer.BatchNorm1d(hidden), make_neuron(),
             layer.Linear(hidden, num_classes)]
    net = nn.Sequential(*mods)
    functional.set_step_mode(net, "m")
    return net


def csnn(*, in_channels, num_classes, sensor_hw, T, channels=(16, 32), hidden=128, tau=2.0, readout="mean"):
    """The fast default: LIF(tau, ATan(alpha=2), detach_reset=True)."""

    def make_neuron():
        return neuron.LIFNode(tau=tau, surrogate_function=surrogate.ATan(), detach_reset=True, step_mode="m")

    net = conv_backbone(in_channels, num_classes, sensor_hw, make_neuron, tuple(channels), hidden)
    return SpikingClassifier(net, T=T, in_channels=in_channels, num_classes=num_classes, sensor_hw=sensor_hw,
                             readout=readout, description="csnn")


def psn_csnn(*, in_channels, num_classes, sensor_hw, T, channels=(16, 32), hidden=128, neuron_type="sliding", k=2,
             readout="mean"):
    """csnn with parallel spiking neurons: SlidingPSN(k) (any T) or PSN(T) (exactly T steps)."""
    if neuron_type not in ("sliding", "psn"):
        raise ValueError(f"psn-csnn: neuron_type must be 'sliding' or 'psn', got {neuron_type!r}")

    def make_neuron():
        if neuron_type == "psn":
            return neuron.PSN(T=T, surrogate_function=surrogate.ATan())
        return neuron.SlidingPSN(k=k, surrogate_function=surrogate.ATan(), step_mode="m")

    net = conv_backbone(in_channels, num_classes, sensor_hw, make_neuron, tuple(channels), hidden)
    return SpikingClassifier(net, T=T, in_channels=in_channels, num_classes=num_classes, sensor_hw=sensor_hw,
                             readout=readout, description="psn-csnn")
