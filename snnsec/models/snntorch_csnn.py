"""``snntorch-csnn``: an snntorch net that runs its own time loop and returns spike/membrane records.

Topology as ``csnn``; snntorch ``Leaky`` neurons (beta 0.5, i.e. tau 2 as in csnn; ATan surrogate
in ``spike_grad``). The output layer is a ``Leaky`` too, so the backbone returns
``(spike_record, membrane_record)``, each ``[T, B, K]``; readouts: ``"mean"``/``"membrane"`` (mean
output membrane, the default) or ``"spike-count"``. State is reset by the harness with each
neuron's ``reset_mem()``.
"""

from __future__ import annotations

import snntorch as snn
import torch
import torch.nn as nn
from snntorch import surrogate as snn_surrogate

from snnsec.harness import SpikingClassifier

# beta = 1 - 1/tau with csnn's tau = 2, so the two nets share time constants
_BETA = 0.5


class SnnTorchCSNN(nn.Module):
    def __init__(self, in_channels, num_classes, sensor_hw, channels=(16, 32), hidden=128, beta=_BETA):
        super().__init__()
        from snnsec.models.csnn import _POOLED_SIDE, _stem_stride

        stride = _stem_stride(sensor_hw)
        convs, lifs = [], []
        c_in, h, w = in_channels, sensor_hw[0], sensor_hw[1]
        for i, c in enumerate(channels):
            s = stride if i == 0 else 1
            convs.append(nn.Sequential(nn.Conv2d(c_in, c, 3, stride=s, padding=1, bias=False), nn.BatchNorm2d(c)))
            lifs.append(snn.Leaky(beta=beta, spike_grad=snn_surrogate.atan(alpha=2.0)))
            h, w = ((h - 1) // s + 1) // 2, ((w - 1) // s + 1) // 2
            c_in = c
        if min(h, w) < 1:
            raise ValueError(f"sensor {sensor_hw} is too small for {len(channels)} pooling blocks")
        self.convs, self.conv_lifs = nn.ModuleList(convs), nn.ModuleList(lifs)
        self.pool = nn.MaxPool2d(2)
        self.squeeze = nn.AdaptiveAvgPool2d((min(h, _POOLED_SIDE), min(w, _POOLED_SIDE)))
        h, w = min(h, _POOLED_SIDE), min(w, _POOLED_SIDE)
        self.fc = nn.Sequential(nn.Linear(c_in * h * w, hidden, bias=False), nn.BatchNorm1d(hidden))
        self.fc_lif = snn.Leaky(beta=beta, spike_grad=snn_surrogate.atan(alpha=2.0))
        self.out = nn.Linear(hidden, num_classes)
        self.out_lif = snn.Leaky(beta=beta, spike_grad=snn_surrogate.atan(alpha=2.0))

    def forward(self, x_seq: torch.Tensor):
        mems = [lif.init_leaky() for lif in self.conv_lifs]
        mem_fc, mem_out = self.fc_lif.init_leaky(), self.out_lif.init_leaky()
        spk_rec, mem_rec = [], []
        for x in x_seq:
            for i, (conv, lif) in enumerate(zip(self.convs, self.conv_lifs)):
                x, mems[i] = lif(conv(x), mems[i])
                x = self.pool(x)
            x, mem_fc = self.fc_lif(self.fc(self.squeeze(x).flatten(1)), mem_fc)
            spk, mem_out = self.out_lif(self.out(x), mem_out)
            spk_rec.append(spk)
            mem_rec.append(mem_out)
        return torch.stack(spk_rec), torch.stack(mem_rec)


def snntorch_csnn(*, in_channels, num_classes, sensor_hw, T, channels=(16, 32), hidden=128, beta=_BETA,
                  readout="mean"):
    net = SnnTorchCSNN(in_channels, num_classes, sensor_hw, tuple(channels), hidden, beta)
    return SpikingClassifier(net, T=T, in_channels=in_channels, num_classes=num_classes, sensor_hw=sensor_hw,
                             readout=readout, feature_module=net.fc_lif, description="snntorch-csnn")
