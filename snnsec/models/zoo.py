"""Tiny configurations of the spikingjelly 2.0 model zoo for 2-channel event frames.

Sizes follow the measured table in the shared notes (``spikingjelly2-tonic-torchattacks.md`` §1):
64-d embeddings and one block per stage instead of the papers' 256-512-d, 4-8 blocks, so that
forward+backward at T=16 on a batch of 32 stays around a second or two on 2 CPU cores. All take
time-first ``[T, B, C, H, W]`` and keep their paper neurons (LIF tau 2, Sigmoid surrogate;
MS-ResNet: LIF with a Rect surrogate). Only modules that do not import torchvision are used.
"""

from __future__ import annotations

from snnsec.harness import SpikingClassifier


def _wrap(net, description, *, T, in_channels, num_classes, sensor_hw, readout, feature_module=None):
    return SpikingClassifier(net, T=T, in_channels=in_channels, num_classes=num_classes, sensor_hw=sensor_hw,
                             readout=readout, feature_module=feature_module, description=description)


def spikformer(*, in_channels, num_classes, sensor_hw, T, embed_dims=64, num_heads=4, mlp_ratio=4.0, depths=1,
               patch_size=None, cml=True, readout="mean"):
    """Spikformer; returns ``[T, B, K]``, averaged over T by the harness.

    spikingjelly's patch stem pools after BN and before the LIF (``Conv -> BN -> MaxPool -> LIF``),
    which is CML's downsampling (Zhou et al., arXiv:2305.05954, ``zhouchenlin2096/Spikingformer-CML``),
    so that is the default here. ``cml=False`` restores the original Spikformer's order (Zhou et al.,
    ICLR 2023, ``ZK-Zhou/spikformer``: ``Conv -> BN -> LIF -> MaxPool``, pooling spikes); the
    parameters are the same.
    """
    from spikingjelly.activation_based import layer
    from spikingjelly.activation_based.model.spikformer import Spikformer
    from torch import nn

    if patch_size is None:
        # the patch stem only accepts 4 or 16; 16 keeps 128x128 sensors at an 8x8 token grid
        patch_size = 16 if min(sensor_hw) >= 64 else 4
    net = Spikformer(T=T, in_channels=in_channels, img_size_h=sensor_hw[0], img_size_w=sensor_hw[1],
                     patch_size=patch_size, num_classes=num_classes, embed_dims=embed_dims, num_heads=num_heads,
                     mlp_ratio=mlp_ratio, depths=depths)
    if not cml:
        for stage in net.patch_embed.stages:
            conv, bn, *pool = stage.conv_bn.block
            if pool:
                stage.conv_bn.block = layer.SeqToANNContainer(conv, bn)
                stage.neuron = nn.Sequential(stage.neuron, layer.SeqToANNContainer(*pool))
    return _wrap(net, "spikformer" + ("" if cml else " (original downsampling, cml=False)"), T=T,
                 in_channels=in_channels, num_classes=num_classes, sensor_hw=sensor_hw, readout=readout)


def qkformer(*, in_channels, num_classes, sensor_hw, T, embed_dims=64, num_heads=(1, 2, 2), depths=(1, 1, 1),
             readout="mean"):
    """QKFormer; its head averages over T, so per-step features come from the last block."""
    from spikingjelly.activation_based.model.qkformer import QKFormer

    net = QKFormer(T=T, in_channels=in_channels, num_classes=num_classes, embed_dims=embed_dims,
                   num_heads=tuple(num_heads), depths=tuple(depths))
    return _wrap(net, "qkformer", T=T, in_channels=in_channels, num_classes=num_classes, sensor_hw=sensor_hw,
                 readout=readout, feature_module=net.stage3[-1])


def sdt(*, in_channels, num_classes, sensor_hw, T, embed_dims=64, num_heads=4, depths=1, pooling_stat=None,
        readout="mean"):
    """Spike-driven Transformer; per-step features are the head LIF's spikes."""
    from spikingjelly.activation_based.model.spike_driven_transformer import SpikeDrivenTransformer

    if pooling_stat is None:
        # one 2x pooling per '1': two give an 8x8 token grid at 34x34, four keep 128x128 at 8x8
        pooling_stat = "1111" if min(sensor_hw) >= 64 else "1100"

    net = SpikeDrivenTransformer(T=T, in_channels=in_channels, num_classes=num_classes, embed_dims=embed_dims,
                                 num_heads=num_heads, depths=depths, pooling_stat=pooling_stat)
    return _wrap(net, "sdt", T=T, in_channels=in_channels, num_classes=num_classes, sensor_hw=sensor_hw,
                 readout=readout, feature_module=net.head_lif)


def ms_resnet(*, in_channels, num_classes, sensor_hw, T, layers=(1, 1, 1), base_channels=16, stem_stride=None,
              readout="mean"):
    """MS-ResNet with the paper's Rect surrogate: input gradients are sparse (zero outside a window)."""
    from spikingjelly.activation_based.model.ms_resnet import MSResNet

    if stem_stride is None:
        stem_stride = 2 if min(sensor_hw) >= 64 else 1  # 128x128 sensors: halve in the stem
    net = MSResNet(T=T, in_channels=in_channels, num_classes=num_classes, layers=tuple(layers),
                   base_channels=base_channels, stem_kernel_size=3, stem_stride=stem_stride)
    return _wrap(net, "ms-resnet", T=T, in_channels=in_channels, num_classes=num_classes, sensor_hw=sensor_hw,
                 readout=readout)


def maxformer(*, in_channels, num_classes, sensor_hw, T, embed_dims=64, depths=(1, 1, 1), readout="mean"):
    """MaxFormer (downsampling stem); per-step features are the head LIF's spikes."""
    from spikingjelly.activation_based.model.maxformer import MaxFormer

    net = MaxFormer(T=T, in_channels=in_channels, num_classes=num_classes, embed_dims=embed_dims,
                    depths=tuple(depths))
    return _wrap(net, "maxformer", T=T, in_channels=in_channels, num_classes=num_classes, sensor_hw=sensor_hw,
                 readout=readout, feature_module=net.head_lif)
