"""Attack-time gradient estimators for spiking neurons.

The forward pass of a spiking neuron is a Heaviside step; what an attack sees is whatever
backward the neuron is given. One name selects one estimator:

* ``"model"``: the surrogate the model was built with (no change).
* a surrogate name, optionally with a parameter after a colon: ``"sigmoid"``, ``"atan"``,
  ``"sigmoid:8"``, ``"atan:1"`` (alpha), ``"triangle:0.5"``, ``"rect:2"`` (full width of the
  gradient's support), ``"ste"``. Swapped in with :func:`snnsec.harness.override_surrogate`.
* ``"bptr"``: backpropagation through rate (Ding et al., SNN-RAT): each neuron is treated as a
  ReLU of its firing rate, ``d s_t / d x_t = 1[mean_t s > 0]``.
* ``"rga"``: rate gradient approximation (Bu, Ding, Hao, Yu, CVPR 2023): the slope of the LIF
  rate as a function of the time-averaged input, piecewise constant, the same for every step.
* ``"pdsg"``, ``"assg:<omega>"``, ``"hart:<gamma>"``: the input-adaptive estimators of
  :mod:`snnsec.attacks.adversarial.adaptive` (PDSG, CVPR 2025; ASSG, 2025; HART, ICLR 2024).

BPTR and RGA need the whole time sequence at once, so they apply to neurons that run in
multi-step mode (input ``[T, B, ...]``); they are installed as forward hooks that keep the
neuron's output values and replace only the backward.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn as nn

from snnsec.attacks.catalog import ADAPTIVE_DEFAULTS, RATE_MODES, gradient_names
from snnsec.harness import override_surrogate, spiking_neurons

__all__ = ["DEFAULT_SWEEP", "RATE_MODES", "gradient_mode", "parse_gradient", "gradient_names"]


# Surrogates of the Özdenizci & Legenstein ensemble that this harness can build (triangle and rect
# at several widths, straight-through) plus the two smooth spikingjelly defaults and the rate
# estimators; per-sample worst case over all of them.
# The adaptive estimators at a few settings of their parameter stand in for the references'
# per-model searches: the per-sample worst case over the grid is at least as strong as its best point.
DEFAULT_SWEEP = ("sigmoid", "atan", "triangle:0.5", "triangle:1", "triangle:2", "rect:0.5", "rect:1", "rect:2",
                 "ste", "bptr", "rga", "pdsg", "assg:0.41", "assg:0.45", "hart:0.5", "hart:1")

# RGA constants from putshua/SNN_attack_RGA models/layers.py::RateBp (gamma, extension, desired slope)
_RGA_GAMMA, _RGA_EXT, _RGA_DES = 0.2, 1.0, 1.0


def parse_gradient(spec: str) -> tuple[str, float | None]:
    """``"triangle:0.5"`` -> ``("triangle", 0.5)``; validates the name."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"gradient estimator must be a name like 'atan' or 'triangle:0.5', got {spec!r}")
    name, _, param = spec.partition(":")
    if name not in gradient_names():
        raise ValueError(f"unknown gradient estimator {spec!r}; expected one of {list(gradient_names())} "
                         "(surrogates take ':alpha', triangle/rect ':width')")
    if not param:
        return name, None
    if name in ("model", "ste", "pdsg", *RATE_MODES):
        raise ValueError(f"gradient estimator {name!r} takes no parameter, got {spec!r}")
    try:
        value = float(param)
    except ValueError:
        raise ValueError(f"gradient estimator {spec!r}: parameter after ':' must be a number") from None
    if value <= 0 or (name == "assg" and value >= 0.5):
        raise ValueError(f"gradient estimator {spec!r}: parameter must be > 0" + (" and < 0.5" if name == "assg" else ""))
    return name, value


class SpikesWithGrad(torch.autograd.Function):
    """Forward returns the neuron's spikes unchanged; backward multiplies by ``slope`` (and, with
    ``over_time``, gives every step the time average of that product, as HART does)."""

    @staticmethod
    def forward(ctx, x, spikes, slope, over_time=False):
        ctx.save_for_backward(slope)
        ctx.over_time = over_time
        return spikes

    @staticmethod
    def backward(ctx, grad):
        (slope,) = ctx.saved_tensors
        g = grad * slope
        if ctx.over_time:
            g = g.mean(0, keepdim=True).expand_as(grad)
        return g, None, None, None


def neuron_constants(m: nn.Module) -> tuple[float, float, float]:
    """(leak factor per step, input scale dh/dx, threshold) of an IF/LIF/PLIF neuron."""
    thr = float(getattr(m, "v_threshold", 1.0))
    w = getattr(m, "w", None)
    tau = 1.0 / float(torch.sigmoid(w.detach())) if isinstance(w, torch.Tensor) else getattr(m, "tau", None)
    if tau is None:  # IF: no leak, input added as is
        return 1.0, 1.0, thr
    tau = float(tau)
    # spikingjelly LIF with decay_input: v <- v + (x - v)/tau = (1 - 1/tau) v + x/tau
    scale = 1.0 / tau if getattr(m, "decay_input", True) else 1.0
    return 1.0 - 1.0 / tau, scale, thr


def _rate_hook(mode: str):
    def hook(module, inputs, output):
        if not isinstance(output, torch.Tensor) or not inputs or not isinstance(inputs[0], torch.Tensor):
            return None
        x = inputs[0]
        if x.ndim < 2 or output.shape != x.shape:
            raise ValueError(f"{mode}: neuron {type(module).__name__} must map [T, B, ...] to spikes of the same shape")
        if mode == "bptr":
            slope = (output.detach().mean(0, keepdim=True) > 0).to(x)
        else:
            leak, scale, thr = neuron_constants(module)
            xbar = x.detach().mean(0, keepdim=True) * scale / thr
            hi = ((xbar >= 1 - leak) & (xbar <= 1 + _RGA_EXT)).to(x) * (_RGA_DES - _RGA_GAMMA + _RGA_GAMMA * leak) / (leak + _RGA_EXT)
            lo = ((xbar >= 0) & (xbar < 1 - leak)).to(x) * _RGA_GAMMA
            # chain rule back to the neuron's own input units
            slope = (hi + lo) * scale / thr
        return SpikesWithGrad.apply(x, output.detach(), slope.expand_as(x))

    return hook


def multi_step_neurons(model: nn.Module, mode: str) -> list[tuple[str, nn.Module, str]]:
    """The spiking neurons of ``model``, refused unless each takes the whole sequence per call
    (what an estimator installed as a forward hook needs)."""
    neurons = spiking_neurons(model)
    if not neurons:
        raise ValueError(f"{mode}: {type(model).__name__} has no spiking neuron")
    for name, m, attr in neurons:
        if getattr(m, "step_mode", "m") != "m":
            raise ValueError(f"{mode} needs multi-step neurons (whole sequence per call); {name} runs step_mode={m.step_mode!r}")
        if attr == "spike_grad":  # snntorch's neurons: one time step per call, returning spikes and membrane
            raise ValueError(f"{mode} needs multi-step neurons (whole sequence per call); {name} is a snntorch "
                             f"{type(m).__name__}, called once per time step (the estimators that work step by step "
                             "take it: model, a surrogate name, assg, pdsg)")
    return neurons


@contextlib.contextmanager
def _rate_gradients(model: nn.Module, mode: str) -> Iterator[int]:
    neurons = multi_step_neurons(model, mode)
    for name, m, _ in neurons:
        if mode == "rga" and not hasattr(m, "v_threshold"):
            raise ValueError(f"rga models IF/LIF neurons (threshold and leak); {name} is a {type(m).__name__}")
    handles = [m.register_forward_hook(_rate_hook(mode)) for _, m, _ in neurons]
    try:
        yield len(handles)
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def gradient_mode(model: nn.Module, spec: str) -> Iterator[str]:
    """Use estimator ``spec`` (see module docstring) for every spiking neuron of ``model`` in the block."""
    name, param = parse_gradient(spec)
    if name == "model":
        yield spec
        return
    if name in RATE_MODES:
        with _rate_gradients(model, name):
            yield spec
        return
    if name in ("pdsg", "assg", "hart"):
        from snnsec.attacks.adversarial import adaptive

        value = param if param is not None else ADAPTIVE_DEFAULTS.get(name)
        ctx = (adaptive.pdsg_mode(model) if name == "pdsg" else adaptive.assg_mode(model, value) if name == "assg"
               else adaptive.hart_mode(model, value))
        with ctx:
            yield spec
        return
    kw = {}
    if param is not None:
        kw = {"width": param} if name in ("triangle", "rect") else {"alpha": param}
    with override_surrogate(model, name, **kw):
        yield spec
