"""Compressed SNNs: binary weights, low-bit weights and pruning, for any backbone.

Compression is a transform of a model: :func:`compress` puts a parametrization on the weight
of every convolution and linear layer, so the forward uses the compressed weight while the
optimiser updates the full-precision one through a straight-through gradient; a model
compressed after training is fine-tuned by the one training loop (:func:`snnsec.train.train`),
and one compressed before training is trained compressed. :func:`bake` then writes the
compressed weights into the plain layers, so a compressed checkpoint loads as its backbone
does and the audit and attacks see the weights the model runs with.

Methods (``METHODS``):

- ``binary``: ``alpha_c * sign(w)`` with one ``alpha_c = mean |w|`` per output channel, the
  scaled binary weights of XNOR-Net (Rastegari et al., ECCV 2016) that binary-weight SNNs use
  (the self-ensemble binary-weight SNN, Wei et al.; BESTformer, a binary spiking transformer);
- ``quantize``: ``bits``-bit symmetric uniform weights, one scale per output channel (the
  weight half of Q-SNN, Wei et al., "Q-SNNs: Quantized Spiking Neural Networks", ACM MM 2024);
- ``prune``: magnitude pruning, the ``sparsity`` fraction of smallest-magnitude weights of each
  layer set to zero by a fixed mask (Han et al., NeurIPS 2015);
- ``soft-prune``: soft-threshold pruning ``sign(w) * max(|w| - theta, 0)`` with a learnable
  threshold per layer (Chen et al., "A Unified Framework for Soft Threshold Pruning", ICLR
  2023, whose STDS prunes SNNs), started at the ``sparsity`` quantile of ``|w|`` so the
  set sparsity holds from the start; fine-tuning moves theta and with it the sparsity.

``binary`` and ``quantize`` keep the first (encoding) and last (readout) weight layers at full
precision by default, as binary and quantised networks usually do: they hold few weights and
cost most accuracy.

Low-bit membrane (Q-SNN's other half), ``membrane_bits=b`` with any method: every spiking
neuron stores its membrane potential on ``2**(b-1) - 1`` levels a side, as Q-SNN's released
code does (``models/layers.py``, ``LIFSpike``: charge, fire, reset, then quantize the state
carried to the next step; rounding with a straight-through gradient, clamping without). Two
departures, both so that the model is one fixed function of its input:

- the scale is fixed at ``v_threshold / (2**(b-1) - 1)``, the range ``[-v_threshold,
  v_threshold]``; the reference scales by the batch's largest ``|u|``, which makes a sample's
  spikes depend on its batch-mates (every per-sample number here assumes they do not) and
  is not a scale a chip can hold;
- the stored value is the membrane itself; the reference stores ``tanh(u)``, a squashing that
  changes the neuron's dynamics as well as its precision.

The neuron stays what it was (its class is subclassed, so ``isinstance`` checks, surrogates
and state names are unchanged); its state is quantized after each step. The checkpoint
records ``membrane_bits`` and :func:`snnsec.checkpoint.load` quantizes the rebuilt neurons
again: a number, not code, so loading stays safe. Neurons without a membrane state ``v``
stepped by spikingjelly's functional API (PSN, snntorch, :mod:`snnsec.models.plain`) are refused
by name.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from spikingjelly.activation_based import base as sj_base
from torch.nn.utils import parametrize

from snnsec.train_settings import COMPRESS_METHODS

__all__ = ["METHODS", "method_spec", "compress", "bake", "weight_layers", "stats", "quantize_membranes",
           "quantize_membrane"]

METHODS = COMPRESS_METHODS
_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _per_channel(w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (w.dim() - 1)))


def _straight_through(w: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    # the value of q exactly (w - w is 0), the gradient of w
    return q.detach() + (w - w.detach())


class BinaryWeight(nn.Module):
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        alpha = _per_channel(w, w.detach().abs().flatten(1).mean(1))
        return _straight_through(w, alpha * torch.where(w >= 0, 1.0, -1.0).to(w))


class QuantizedWeight(nn.Module):
    def __init__(self, bits: int) -> None:
        super().__init__()
        self.levels = 2 ** (int(bits) - 1) - 1

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        scale = _per_channel(w, w.detach().abs().flatten(1).amax(1).clamp_min(1e-12) / self.levels)
        return _straight_through(w, (w / scale).round().clamp(-self.levels, self.levels) * scale)


class MagnitudeMask(nn.Module):
    def __init__(self, w: torch.Tensor, sparsity: float) -> None:
        super().__init__()
        k = int(round(float(sparsity) * w.numel()))
        mask = torch.ones(w.numel(), dtype=w.dtype, device=w.device)
        if k:
            mask[w.detach().abs().flatten().argsort()[:k]] = 0
        self.register_buffer("mask", mask.view_as(w))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.mask


class SoftThreshold(nn.Module):
    def __init__(self, w: torch.Tensor, sparsity: float) -> None:
        super().__init__()
        k = int(round(float(sparsity) * w.numel()))
        # the k-th smallest |w| (kthvalue: quantile refuses tensors above 16M elements)
        theta = w.detach().abs().flatten().kthvalue(k).values if k else torch.zeros((), dtype=w.dtype)
        self.theta = nn.Parameter(theta.to(w))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        # a threshold driven below zero would grow every weight instead of pruning
        return torch.sign(w) * torch.relu(w.abs() - self.theta.clamp_min(0))


def quantize_membrane(v: torch.Tensor, v_threshold: float, bits: int) -> torch.Tensor:
    """``v`` on ``2**(bits-1) - 1`` levels a side of ``[-v_threshold, v_threshold]``; the
    rounding passes the gradient straight through, the clamp does not."""
    levels = 2 ** (int(bits) - 1) - 1
    u = (v / (float(v_threshold) / levels)).clamp(-levels, levels)
    return (u + (u.round() - u).detach()) * (float(v_threshold) / levels)


class MembraneQuantized:
    """Mixin over a spikingjelly neuron: its membrane state is quantized after every step.

    Stepping goes through the neuron's own ``single_step_functional_forward`` (charge, fire,
    reset), so its fused multi-step kernels are bypassed: slower, the same dynamics.
    """

    membrane_bits: int

    def single_step_functional_forward(self, inputs, states, **kwargs):
        outputs, states = super().single_step_functional_forward(inputs, states, **kwargs)
        return outputs, (quantize_membrane(states[0], self.v_threshold, self.membrane_bits), *states[1:])

    # spikingjelly's generic loop over single_step_functional_forward, in place of the neuron's
    # fused multi-step kernel (which would never see the quantization)
    multi_step_functional_forward = sj_base.MemoryModule.multi_step_functional_forward

    def extra_repr(self) -> str:
        return super().extra_repr() + f", membrane_bits={self.membrane_bits}"


_QUANTIZED_CLASSES: dict[type, type] = {}


def _quantizable(m: nn.Module) -> bool:
    from spikingjelly.activation_based.neuron.base_node import BaseNode

    return (isinstance(m, BaseNode) and next(iter(m._memories), None) == "v"
            and type(m).single_step_functional_forward is not BaseNode.single_step_functional_forward)


def refuse_requantizing(model: nn.Module, source: str = "membrane_bits") -> None:
    """Raise when ``model``'s membranes are quantized already (callers check before any work)."""
    if getattr(model, "membrane_bits", None):
        raise ValueError(f"{source}: the model's membranes are quantized already ({model.membrane_bits} bits, "
                         f"model.json field 'membrane_bits'); drop membrane_bits, or start from the full-precision "
                         f"checkpoint")


def quantize_membranes(model: nn.Module, bits: int) -> nn.Module:
    """Store every spiking neuron's membrane on ``bits`` bits (see the module doc), in place;
    ``model.membrane_bits`` records it. Refuses, naming them, neurons it cannot quantize."""
    from snnsec.harness import invalidate_reset_cache, spiking_neurons

    bits = _membrane_bits(bits)
    refuse_requantizing(model)
    neurons = spiking_neurons(model)
    if not neurons:
        raise ValueError(f"membrane_bits: {type(model).__name__} has no spiking neuron")
    other = [f"{n} ({type(m).__name__})" for n, m, _ in neurons if not _quantizable(m)]
    if other:
        raise ValueError(f"membrane_bits: cannot quantize the membrane of {', '.join(other[:4])}"
                         f"{' and more' if len(other) > 4 else ''}; it works on spikingjelly neurons with a membrane "
                         f"state v (LIF, IF, ParametricLIF, ...); drop membrane_bits for this model")
    for _, m, _ in neurons:
        cls = type(m)
        if cls not in _QUANTIZED_CLASSES:
            _QUANTIZED_CLASSES[cls] = type(f"MembraneQuantized{cls.__name__}", (MembraneQuantized, cls), {})
        m.__class__ = _QUANTIZED_CLASSES[cls]
        m.membrane_bits = bits
    invalidate_reset_cache(model)
    model.membrane_bits = bits
    return model


def _membrane_bits(bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"membrane_bits must be an integer in [2, 16], got {bits!r}")
    return bits


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every convolution and linear layer, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _WEIGHTED)]


def _check(method: str, params: dict[str, Any]) -> dict[str, Any]:
    allowed = {"binary": {"keep_ends"}, "quantize": {"bits", "keep_ends"}, "prune": {"sparsity"},
               "soft-prune": {"sparsity"}}
    allowed = {k: v | {"membrane_bits"} for k, v in allowed.items()}
    if method not in METHODS:
        raise ValueError(f"compress: method must be one of {', '.join(METHODS)}, got {method!r}")
    unknown = sorted(set(params) - allowed[method])
    if unknown:
        raise ValueError(f"compress {method}: unknown parameter(s) {unknown}; expected some of {sorted(allowed[method])}")
    out = dict(params)
    if method == "quantize":
        bits = out.setdefault("bits", 4)
        if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
            raise ValueError(f"compress quantize: bits must be an integer in [2, 16], got {bits!r}")
    if method in ("prune", "soft-prune"):
        s = out.setdefault("sparsity", 0.9)
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s < 1:
            raise ValueError(f"compress {method}: sparsity must be a fraction in [0, 1), got {s!r}")
    if out.get("membrane_bits") is not None:
        try:
            _membrane_bits(out["membrane_bits"])
        except ValueError as exc:
            raise ValueError(f"compress {method}: {exc}") from None
    if method in ("binary", "quantize"):
        out.setdefault("keep_ends", True)
        if not isinstance(out["keep_ends"], bool):
            raise ValueError(f"compress {method}: keep_ends must be true or false, got {out['keep_ends']!r}")
    return out


def method_spec(value) -> dict[str, Any] | None:
    """A compression as given (``"quantize:bits=4"``, ``{"method": "prune", "sparsity": 0.9}``, or
    ``None``/``""``/``"none"`` for none) -> ``{"method": ..., **params}`` with every default filled
    in and every value checked, or ``None``."""
    import json

    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    if isinstance(value, dict):
        given = dict(value)
        method = given.pop("method", None)
    else:
        method, _, rest = str(value).partition(":")
        given = {}
        for kv in filter(None, (s.strip() for s in rest.split(","))):
            k, sep, v = kv.partition("=")
            if not sep:
                raise ValueError(f"compress: expected METHOD:KEY=VALUE,..., got {value!r}")
            try:
                given[k.strip()] = json.loads(v)
            except json.JSONDecodeError:
                given[k.strip()] = v.strip()
    method = str(method).strip()
    return {"method": method, **_check(method, given)}


def compress(model: nn.Module, method: str, **params) -> nn.Module:
    """Compress ``model``'s weight layers in place (see the module doc); returns it, with
    ``model.compression = {"method": ..., **params}`` recording what was done."""
    params = _check(method, params)
    layers = weight_layers(model)
    if not layers:
        raise ValueError(f"compress: {type(model).__name__} has no convolution or linear layer")
    if getattr(model, "compression", None):
        raise ValueError(f"compress: the model is compressed already ({model.compression})")
    if params.get("keep_ends") and len(layers) <= 2:
        params["keep_ends"] = False  # no layer between the ends: all are compressed, and the record says so
    chosen = layers[1:-1] if params.get("keep_ends") else layers
    if params.get("membrane_bits") is not None:
        quantize_membranes(model, params["membrane_bits"])  # refuses before any weight is touched
    for _, m in chosen:
        w = m.weight
        if method == "binary":
            p = BinaryWeight()
        elif method == "quantize":
            p = QuantizedWeight(params["bits"])
        elif method == "prune":
            p = MagnitudeMask(w, params["sparsity"])
        else:
            p = SoftThreshold(w, params["sparsity"])
        parametrize.register_parametrization(m, "weight", p)
    model.compression = {"method": method, **params, "layers": [n for n, _ in chosen]}
    return model


def bake(model: nn.Module) -> nn.Module:
    """Write the compressed weights into the plain layers (parametrizations removed); the
    forward is unchanged and the state dict is the backbone's again."""
    for _, m in weight_layers(model):
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    return model


@torch.no_grad()
def stats(model: nn.Module) -> list[dict[str, Any]]:
    """Per weight layer: its sparsity (fraction of zero weights) and the most distinct values
    of any output channel (2 for binary weights, at most ``2**bits - 1`` for quantised ones)."""
    out = []
    for name, m in weight_layers(model):
        w = m.weight.detach()
        distinct = max(len(torch.unique(row)) for row in w.flatten(1))
        out.append({"layer": name, "weights": w.numel(), "sparsity": float((w == 0).float().mean()),
                    "distinct_per_channel": int(distinct)})
    return out
