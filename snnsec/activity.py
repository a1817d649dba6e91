"""Spiking activity: the mean firing rate of every spiking layer, from forward hooks.

A spiking layer is a module holding a surrogate (:func:`snnsec.harness.spiking_neurons`);
its output is its spike tensor, ``[T, B, ...]`` for multi-step neurons, ``[B, ...]`` per call
for single-step ones (called T times), and the first element of the pair snntorch neurons
return. Summing spikes and elements over every call gives spikes per neuron per time step
in both cases.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from snnsec.harness import device_of, preserve_modes, spiking_neurons

__all__ = ["LayerRate", "firing_rates"]

_WEIGHTED = {"conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d), "fc": (nn.Linear,)}


@dataclass(frozen=True)
class LayerRate:
    label: str  # "conv2": the spiking layer fed by the second convolution (else the module name)
    module: str  # qualified module name
    rate: float  # spikes per neuron per time step


@torch.no_grad()
def firing_rates(model: nn.Module, x: torch.Tensor, *, batch_size: int = 128) -> list[LayerRate]:
    """The firing rate of every spiking layer of ``model`` on inputs ``x``, in the order the
    layers first fire during a forward (network order). Each layer is labelled by the weight
    layer that ran last before it (``conv1``, ``conv2``, ``fc1``: the k-th convolution or
    linear layer to run), or by its module name where that is ambiguous. The model runs in
    eval mode (its modes are restored) and resets its state before each batch, as every
    forward does.
    """
    layers = spiking_neurons(model)
    if not layers:
        raise ValueError(f"firing_rates: {type(model).__name__} has no spiking neuron (no module holds a surrogate)")
    if len(x) == 0:
        raise ValueError("firing_rates: no inputs")
    totals: dict[str, list[float]] = {}  # insertion order = first call order
    fed_by: dict[str, str | None] = {}
    weighted: list[str] = []  # labels of the weight layers, in call order
    count = {kind: 0 for kind in _WEIGHTED}

    named: dict[nn.Module, str] = {}

    def weight_hook(kind):
        def record(module, _inputs, _output):
            if module not in named:
                count[kind] += 1
                named[module] = f"{kind}{count[kind]}"
            weighted.append(named[module])
        return record

    def neuron_hook(name):
        def record(_module, _inputs, output):
            s = output[0] if isinstance(output, (tuple, list)) else output
            fed_by.setdefault(name, weighted[-1] if weighted else None)
            acc = totals.setdefault(name, [0.0, 0.0])
            acc[0] += float(s.detach().double().sum())
            acc[1] += s.numel()
        return record

    hooks = [m.register_forward_hook(neuron_hook(name)) for name, m, _ in layers]
    hooks += [m.register_forward_hook(weight_hook(kind)) for m in model.modules()
              for kind, types in _WEIGHTED.items() if isinstance(m, types)]
    try:
        with preserve_modes(model):
            model.eval()
            dev = device_of(model)
            for i in range(0, len(x), batch_size):
                model(x[i:i + batch_size].to(dev))
    finally:
        for h in hooks:
            h.remove()
    labels = list(fed_by.values())
    return [LayerRate(label=fed_by[name] if fed_by[name] and labels.count(fed_by[name]) == 1 else name, module=name,
                      rate=s / n)
            for name, (s, n) in totals.items()]
