"""One batch-first classifier around any spiking backbone.

Everything the suite measures goes through :class:`SpikingClassifier`, so the SNN semantics
live here and nowhere else:

* **Input.** Event frames ``[B, T, P, H, W]`` (float, in [0, 1]) or static images ``[B, C, H, W]``
  turned into ``[B, T, C, H, W]`` by the classifier's encoder (``"direct"`` repeat, or
  ``"poisson"``/``"bernoulli"`` rate coding; see :func:`encode`). Output: logits ``[B, K]``.
* **Backbone kinds** (``kind=``). ``"multi-step"``: the backbone takes the whole time-first
  sequence ``[T, B, P, H, W]``. This covers spikingjelly multi-step nets (returning ``[T, B, K]``
  or ``[B, K]``), modules that run their own time loop (snntorch style, returning a
  ``(spike_record, membrane_record)`` pair of ``[T, B, K]`` tensors, or a dict with keys
  ``"spikes"``/``"membrane"``) and the plain-torch LIF net of :mod:`snnsec.models.plain`.
  ``"single-step"``: the backbone takes one frame ``[B, P, H, W]``; the classifier loops over T.
* **Readout** (``readout=``). ``"mean"`` (default): mean over T of the backbone's output (the
  membrane record for record-returning backbones, whose spike record is integer-valued and gives
  flat gradients). ``"membrane"``: mean of the membrane record. ``"spike-count"``: sum of the spike
  record over T. The last two need a record-returning backbone.
* **State.** Every forward resets the backbone before it runs and again after it (the autograd
  graph keeps what backward needs, so the early reset is safe): same input -> same logits, whatever
  ran before and whatever the batch size. spikingjelly nets are reset with
  ``functional.reset_net``, snntorch neurons with ``reset_mem()``, any other submodule that defines
  a ``reset()`` method with that method (the generic protocol for user modules).
* **Modes.** Surrogate gradients stay live in eval mode, and eval logits equal the plain eval
  logits. In spikingjelly 2.0.0 ``LIFNode``/``PSN``/``SlidingPSN`` do not branch on ``training``
  (checked: eval-mode input gradients are non-zero and outputs equal). ``ComplementaryLIFNode``
  does: in eval it spikes through ``surrogate.heaviside`` and the input gradient vanishes. For those
  (:data:`TRAINING_GATED_NEURONS`) the classifier switches just the neuron to train mode for the
  forward and restores it; their forward value is the same Heaviside step in both modes. (The
  OTTT/SLTT online-learning neurons gate on ``training`` too, but their train mode also changes
  what they return, so they are not supported.)
* **Attacks** use :meth:`SpikingClassifier.attack_view`, see :class:`AttackView` for the input
  domain. :func:`override_surrogate` swaps the surrogate of every spiking neuron;
  :meth:`SpikingClassifier.taps` exposes inner activations for defenses;
  :func:`preserve_modes` restores every module's training flag.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Callable, Iterator

import torch
import torch.nn as nn
from spikingjelly.activation_based import base as sj_base
from spikingjelly.activation_based import functional as sj_functional
from spikingjelly.activation_based import surrogate as sj_surrogate
from spikingjelly.activation_based.neuron.lif_variants import ComplementaryLIFNode
from snnsec.surrogates import SURROGATES

try:  # snntorch is optional (a test extra); without it its neurons simply do not occur
    import snntorch as _snntorch

    _SNNTORCH_NEURON: tuple[type, ...] = (_snntorch.SpikingNeuron,)
except ImportError:  # pragma: no cover - depends on the environment
    _SNNTORCH_NEURON = ()

__all__ = [
    "ENCODERS",
    "KINDS",
    "READOUTS",
    "SURROGATES",
    "TRAINING_GATED_NEURONS",
    "AttackView",
    "HeavisideWithSlope",
    "ModelessWrapper",
    "SlopeSurrogate",
    "SpikingClassifier",
    "StraightThrough",
    "calibrate_bn",
    "clone",
    "device_of",
    "invalidate_reset_cache",
    "encode",
    "inspection_mode",
    "make_surrogate",
    "override_surrogate",
    "predict",
    "preserve_modes",
    "reset_backbone",
    "spiking_neurons",
]

KINDS = ("multi-step", "single-step")
READOUTS = ("mean", "membrane", "spike-count")
ENCODERS = ("direct", "poisson", "bernoulli")
TRAINING_GATED_NEURONS: tuple[type, ...] = (ComplementaryLIFNode,)


# --------------------------------------------------------------------------------------------
# modes


@contextlib.contextmanager
def preserve_modes(model: nn.Module) -> Iterator[nn.Module]:
    """Restore the ``training`` flag of every module of ``model`` on exit (also on error)."""
    saved = [(m, m.training) for m in model.modules()]
    try:
        yield model
    finally:
        for m, flag in saved:
            m.training = flag


def calibrate_bn(model: nn.Module, x: torch.Tensor, passes: int = 3) -> None:
    """Replace BatchNorm running statistics by the cumulative statistics of ``passes`` forwards on ``x``.

    Freshly initialised BN makes deep layers of untrained nets silent in eval mode, so the logits
    are constant and input gradients are exactly zero (notes: MSResNet). Tests and benchmarks on
    untrained models calibrate first. Modes are restored afterwards.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    momenta = [b.momentum for b in bns]
    with preserve_modes(model):
        for b in bns:
            b.reset_running_stats()
            b.momentum = None
        model.train()
        x = x.to(device_of(model))
        with torch.no_grad():
            for _ in range(passes):
                model(x)
    for b, mom in zip(bns, momenta):
        b.momentum = mom
    reset_backbone(model)


# --------------------------------------------------------------------------------------------
# state


def reset_backbone(backbone: nn.Module) -> None:
    """Reset all neuron state in ``backbone`` (spikingjelly, snntorch, and generic ``reset()``)."""
    for fn in _resetters(backbone):
        fn()


def _resetters(backbone: nn.Module) -> list[Callable[[], None]]:
    modules = list(backbone.modules())
    has_sj = any(isinstance(m, sj_base.MemoryModule) for m in modules)
    fns: list[Callable[[], None]] = []
    if has_sj:
        # reset_net also calls reset() on non-spikingjelly modules that define it
        fns.append(lambda: sj_functional.reset_net(backbone))
    for m in modules:
        if _SNNTORCH_NEURON and isinstance(m, _SNNTORCH_NEURON):
            fns.append(m.reset_mem)
        elif not has_sj and callable(getattr(m, "reset", None)):
            fns.append(m.reset)
    return fns


# --------------------------------------------------------------------------------------------
# encoders


def encode(x: torch.Tensor, T: int, encoder: str = "direct", generator: torch.Generator | None = None) -> torch.Tensor:
    """Static images ``[B, C, H, W]`` in [0, 1] -> frames ``[B, T, C, H, W]``.

    ``"direct"`` repeats the image T times (differentiable). ``"poisson"`` and ``"bernoulli"`` are the
    same rate code: each pixel spikes at each step with probability equal to its intensity
    (clamped to [0, 1]). The draw is stochastic (seed it through ``generator`` or the global RNG);
    its gradient is passed straight through (d frames / d x = 1), the usual BPDA choice, so gradient
    attacks on a rate-coded model are EOT-style attacks on the expected input.
    """
    if x.ndim != 4:
        raise ValueError(f"encode: expected a static image batch [B, C, H, W], got shape {tuple(x.shape)}")
    if encoder not in ENCODERS:
        raise ValueError(f"encode: encoder must be one of {ENCODERS}, got {encoder!r}")
    rep = x.unsqueeze(1).expand(x.shape[0], T, *x.shape[1:])
    if encoder == "direct":
        return rep
    p = rep.clamp(0.0, 1.0)
    draw = torch.bernoulli(p.detach(), generator=generator)
    return p + (draw - p).detach()


# --------------------------------------------------------------------------------------------
# surrogates


class HeavisideWithSlope(torch.autograd.Function):
    """Spike forward; backward ``grad * slope``, the slope computed in the forward."""

    @staticmethod
    def forward(ctx, x, slope):
        ctx.save_for_backward(slope)
        return (x >= 0).to(x)

    @staticmethod
    def backward(ctx, grad):
        (slope,) = ctx.saved_tensors
        return grad * slope, None


class SlopeSurrogate(nn.Module):
    """A surrogate whose backward multiplies by a slope it computes in its forward from the potential
    it is handed (``h_t - theta``): the attack estimators ASSG and PDSG, and HART's recorder, whose
    spikes carry no gradient (slope None). Subclasses define :meth:`step_slope`, called once per time
    step, in order, with the detached potential. As the slope is all its backward needs, the lean LIF
    (:mod:`snnsec.lean_kernels`) runs the neuron's steps itself and hands each step's potential to
    :meth:`step_slope`, so an estimator's state and gradients stay the same."""

    spiking = True

    def step_slope(self, x: torch.Tensor) -> torch.Tensor | None:
        raise NotImplementedError(f"{type(self).__name__} must define step_slope")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slope = self.step_slope(x.detach())
        return (x >= 0).to(x) if slope is None else HeavisideWithSlope.apply(x, slope)


class _StraightThroughFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return (x >= 0).to(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class StraightThrough(nn.Module):
    """Heaviside forward, identity backward (straight-through estimator).

    Duck-types a spikingjelly surrogate (``spiking`` flag, callable on the membrane minus threshold),
    so spikingjelly neurons run it on their plain-autograd path.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spiking = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _StraightThroughFn.apply(x)

    def extra_repr(self) -> str:
        return "straight-through"


def make_surrogate(name: str, alpha: float | None = None, width: float | None = None) -> nn.Module:
    """A fresh surrogate module by name.

    ``"sigmoid"`` (spikingjelly Sigmoid, alpha 4), ``"atan"`` (ATan, alpha 2), ``"triangle"``
    (PiecewiseQuadratic: triangular gradient on |x| < 1/alpha, alpha 1), ``"rect"`` (Rect: box on
    |x| < 0.5/alpha, alpha 1), ``"ste"`` (:class:`StraightThrough`). For triangle/rect ``width`` is
    the full width of the gradient's support and sets alpha (2/width and 1/width).
    """
    if name not in SURROGATES:
        raise ValueError(f"surrogate must be one of {SURROGATES} or a module/factory, got {name!r}")
    if width is not None:
        if name not in ("triangle", "rect"):
            raise ValueError(f"surrogate {name!r}: width applies to 'triangle' and 'rect' only; use alpha")
        if alpha is not None:
            raise ValueError("give alpha or width, not both")
        if width <= 0:
            raise ValueError(f"surrogate width must be > 0, got {width}")
        alpha = (2.0 if name == "triangle" else 1.0) / width
    if name == "ste":
        if alpha is not None:
            raise ValueError("surrogate 'ste' takes no alpha")
        return StraightThrough()
    cls, default = {
        "sigmoid": (sj_surrogate.Sigmoid, 4.0),
        "atan": (sj_surrogate.ATan, 2.0),
        "triangle": (sj_surrogate.PiecewiseQuadratic, 1.0),
        "rect": (sj_surrogate.Rect, 1.0),
    }[name]
    return cls(alpha=default if alpha is None else float(alpha))


def _surrogate_attr(m: nn.Module) -> str | None:
    if _SNNTORCH_NEURON and isinstance(m, _SNNTORCH_NEURON):
        return "spike_grad"
    if isinstance(getattr(m, "surrogate_function", None), nn.Module):
        return "surrogate_function"
    return None


def _set_surrogate(m: nn.Module, attr: str, value) -> None:
    # snntorch keeps plain functions in spike_grad; once a module was assigned there it is a
    # registered child, and nn.Module refuses to overwrite a child with a function
    if attr in m._modules and not isinstance(value, nn.Module):
        del m._modules[attr]
    setattr(m, attr, value)


def spiking_neurons(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """``(name, module, attribute)`` for every spiking neuron: each module holding a surrogate.

    spikingjelly neurons and :mod:`snnsec.models.plain` neurons keep it in ``surrogate_function``,
    snntorch neurons in ``spike_grad``. A user neuron is found if it keeps an ``nn.Module``
    surrogate in ``surrogate_function`` and calls it on (membrane - threshold).
    """
    out = []
    for name, m in model.named_modules():
        attr = _surrogate_attr(m)
        if attr is not None:
            out.append((name, m, attr))
    return out


@contextlib.contextmanager
def override_surrogate(
    model: nn.Module,
    surrogate: str | nn.Module | Callable[[], nn.Module],
    *,
    alpha: float | None = None,
    width: float | None = None,
) -> Iterator[int]:
    """Swap the surrogate of every spiking neuron in ``model`` for the duration of the block.

    ``surrogate`` is a name (see :func:`make_surrogate`, with ``alpha``/``width``), a module (deep-copied
    per neuron) or a zero-argument factory. Each neuron gets its own instance (spikingjelly's default
    surrogate is one instance shared by all neurons, so mutating it in place would leak). The forward
    values stay the same Heaviside step; only gradients change. spikingjelly's reset cache is
    invalidated on entry and exit. Yields the number of neurons swapped; raises ValueError if
    ``model`` has none.
    """
    if isinstance(surrogate, str):
        factory = lambda: make_surrogate(surrogate, alpha=alpha, width=width)  # noqa: E731
    elif isinstance(surrogate, nn.Module):
        if alpha is not None or width is not None:
            raise ValueError("alpha/width apply only to a surrogate given by name")
        factory = lambda: copy.deepcopy(surrogate)  # noqa: E731
    elif callable(surrogate):
        factory = surrogate
    else:
        raise ValueError(f"surrogate must be a name {SURROGATES}, a module or a factory, got {surrogate!r}")
    neurons = spiking_neurons(model)
    if not neurons:
        raise ValueError(f"override_surrogate: {type(model).__name__} has no spiking neuron with a surrogate")
    saved = [(m, attr, getattr(m, attr)) for _, m, attr in neurons]
    invalidate_reset_cache(model)
    try:
        for m, attr, _ in saved:
            _set_surrogate(m, attr, factory())
        yield len(saved)
    finally:
        for m, attr, orig in saved:
            _set_surrogate(m, attr, orig)
        invalidate_reset_cache(model)


def invalidate_reset_cache(model: nn.Module) -> None:
    """Drop spikingjelly's and the classifiers' cached resetters: call it after swapping or
    changing a neuron."""
    sj_functional.invalidate_reset_cache(model)
    for m in model.modules():
        if isinstance(m, SpikingClassifier):
            sj_functional.invalidate_reset_cache(m.backbone)
            m._resetter_cache = None


# --------------------------------------------------------------------------------------------
# taps


class _Recorder(nn.Module):
    """Stands in for a neuron's surrogate during :meth:`SpikingClassifier.taps`.

    The neuron calls its surrogate on (pre-spike membrane - threshold) at every step; recording that
    argument gives the membrane potential with the forward value unchanged.
    """

    def __init__(self, inner: Callable, log: list, order: list) -> None:
        super().__init__()
        self.inner = inner
        self.spiking = getattr(inner, "spiking", True)
        self.log = log
        self.order = order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.log.append(x)
        self.order.append(self)
        return self.inner(x)


def _to_seq(parts: list[torch.Tensor], T: int, B: int, what: str) -> torch.Tensor:
    """Per-step or whole-sequence recordings -> ``[T, B, ...]``."""
    if len(parts) == T and T > 1:
        seq = torch.stack(parts)
    elif len(parts) == 1:
        seq = parts[0]
    else:
        raise RuntimeError(f"taps: {what} was called {len(parts)} times for T={T}; cannot align it with time")
    if seq.shape[:2] == (T, B):
        return seq
    if seq.shape[0] == T * B:  # time folded into batch, e.g. conv on x.flatten(0, 1)
        return seq.reshape(T, B, *seq.shape[1:])
    if seq.shape[0] == T and seq[0].numel() % B == 0:  # PSN flattens [T, B*N]
        return seq.reshape(T, B, -1)
    raise RuntimeError(f"taps: cannot read {what} of shape {tuple(seq.shape)} as [T={T}, B={B}, ...]")


def _appender(store: dict, seen: list, use_input: bool):
    # a forward hook must return None, or its value replaces the module's output
    def hook(mod, inputs, output):
        value = inputs[0] if use_input else output
        if isinstance(value, (tuple, list)):  # snntorch neurons return (spikes, membrane)
            value = value[0]
        store.setdefault(mod, []).append(value)
        seen.append(mod)

    return hook


def _pool_spatial(seq: torch.Tensor) -> torch.Tensor:
    """``[T, B, C, *spatial]`` -> ``[T, B, C]`` by averaging the spatial positions."""
    return seq.flatten(3).mean(-1) if seq.ndim > 3 else seq


# --------------------------------------------------------------------------------------------
# classifier


class SpikingClassifier(nn.Module):
    """Batch-first classifier: ``forward(x [B, T, P, H, W] in [0, 1]) -> logits [B, K]``.

    Args:
        backbone: the network. See the module docstring for ``kind`` and the output conventions.
        T, in_channels, num_classes, sensor_hw: the input contract; ``input_shape = (T, P, H, W)``.
            Inputs of any other shape are refused with a ValueError.
        kind: ``"multi-step"`` or ``"single-step"``.
        readout: ``"mean"``, ``"membrane"`` or ``"spike-count"``.
        encoder: used for static ``[B, C, H, W]`` input: ``"direct"``, ``"poisson"``, ``"bernoulli"``.
        encoder_seed: if set, every rate-coded forward draws from a generator seeded with it, so the
            model is deterministic (same input -> same spikes); if None the global RNG is used.
        feature_module: module whose per-step output is the penultimate representation (spatial dims
            averaged). Default: the input of the last ``nn.Linear`` that runs (the classifier head).
        description: one line, shown by ``snnsec models``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        T: int,
        in_channels: int,
        num_classes: int,
        sensor_hw: tuple[int, int],
        kind: str = "multi-step",
        readout: str = "mean",
        encoder: str = "direct",
        encoder_seed: int | None = None,
        feature_module: nn.Module | None = None,
        description: str = "",
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"SpikingClassifier: kind must be one of {KINDS}, got {kind!r}")
        if readout not in READOUTS:
            raise ValueError(f"SpikingClassifier: readout must be one of {READOUTS}, got {readout!r}")
        if encoder not in ENCODERS:
            raise ValueError(f"SpikingClassifier: encoder must be one of {ENCODERS}, got {encoder!r}")
        for field, value in (("T", T), ("in_channels", in_channels), ("num_classes", num_classes)):
            if int(value) < 1:
                raise ValueError(f"SpikingClassifier: {field} must be >= 1, got {value}")
        if len(sensor_hw) != 2 or min(sensor_hw) < 1:
            raise ValueError(f"SpikingClassifier: sensor_hw must be (H, W) with H, W >= 1, got {sensor_hw}")
        self.backbone = backbone
        self.T = int(T)
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.sensor_hw = (int(sensor_hw[0]), int(sensor_hw[1]))
        self.kind = kind
        self.readout = readout
        self.encoder = encoder
        self.encoder_seed = encoder_seed
        self.description = description
        # plain attributes (not submodules): keep the state_dict to the backbone's own tensors
        self.__dict__["_feature_module"] = feature_module
        self._resetter_cache: tuple | None = None
        self.arch: str | None = None
        self.arch_kwargs: dict = {}

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.T, self.in_channels, *self.sensor_hw)

    def extra_repr(self) -> str:
        return f"T={self.T}, input_shape={self.input_shape}, num_classes={self.num_classes}, kind={self.kind}, readout={self.readout}"

    # -- state ---------------------------------------------------------------------------------

    def _structure(self) -> tuple:
        """``(module ids, reset callables, training-gated neurons)``, recomputed when modules change."""
        # cached, but a defense that swaps a layer (fine-pruning, surgery) must not leave the new
        # one un-reset: compare module identities first (tens of microseconds)
        fingerprint = tuple(map(id, self.backbone.modules()))
        if self._resetter_cache is None or self._resetter_cache[0] != fingerprint:
            sj_functional.invalidate_reset_cache(self.backbone)
            gated = [m for m in self.backbone.modules() if isinstance(m, TRAINING_GATED_NEURONS)]
            self._resetter_cache = (fingerprint, _resetters(self.backbone), gated)
        return self._resetter_cache

    def reset(self) -> None:
        """Reset the backbone's neuron state (done automatically before and after every forward)."""
        for fn in self._structure()[1]:
            fn()

    # -- input ---------------------------------------------------------------------------------

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """Validate ``x`` and return frames ``[B, T, P, H, W]`` (encoding static images)."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise ValueError(f"SpikingClassifier: expected a float tensor, got {getattr(x, 'dtype', type(x))}")
        if x.ndim == 4:
            if tuple(x.shape[1:]) != self.input_shape[1:]:
                raise ValueError(
                    f"SpikingClassifier: static input must be [B, {self.in_channels}, {self.sensor_hw[0]}, "
                    f"{self.sensor_hw[1]}], got {tuple(x.shape)}"
                )
            gen = None
            if self.encoder != "direct" and self.encoder_seed is not None:
                gen = torch.Generator(device=x.device).manual_seed(self.encoder_seed)
            return encode(x, self.T, self.encoder, generator=gen)
        if x.ndim != 5 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"SpikingClassifier: expected frames [B, T, P, H, W] = [B, {', '.join(map(str, self.input_shape))}] "
                f"(or static images [B, C, H, W]), got {tuple(x.shape)}"
            )
        return x

    # -- forward -------------------------------------------------------------------------------

    def _run(self, frames: torch.Tensor):
        seq = frames.transpose(0, 1)  # [T, B, P, H, W]
        if self.kind == "single-step":
            outs = [self.backbone(seq[t]) for t in range(seq.shape[0])]
            if isinstance(outs[0], torch.Tensor):
                return torch.stack(outs)
            return tuple(torch.stack(o) for o in zip(*outs))
        return self.backbone(seq)

    def _readout(self, out) -> torch.Tensor:
        if isinstance(out, dict):
            spikes, membrane = out.get("spikes"), out.get("membrane")
            main = membrane if membrane is not None else out.get("out")
        elif isinstance(out, (tuple, list)):
            if len(out) != 2:
                raise RuntimeError(f"backbone returned a {len(out)}-tuple; expected (spike_record, membrane_record)")
            spikes, membrane = out
            main = membrane
        else:
            spikes = membrane = None
            main = out
        if self.readout == "spike-count":
            if spikes is None:
                raise ValueError("readout 'spike-count' needs a backbone that returns a spike record")
            return spikes.sum(0)
        if self.readout == "membrane":
            if membrane is None:
                raise ValueError("readout 'membrane' needs a backbone that returns a membrane record")
            main = membrane
        if main is None:
            raise RuntimeError("backbone output has no membrane record or 'out' entry")
        return main.mean(0) if main.ndim == 3 else main

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = self.frames(x)
        _, resetters, gated_all = self._structure()
        gated = [m for m in gated_all if not m.training]
        for m in gated:
            m.training = True
        try:
            for fn in resetters:
                fn()
            logits = self._readout(self._run(frames))
        finally:
            for m in gated:
                m.training = False
            for fn in resetters:
                fn()
        if logits.shape != (frames.shape[0], self.num_classes):
            raise RuntimeError(
                f"backbone produced logits of shape {tuple(logits.shape)}, expected [{frames.shape[0]}, {self.num_classes}]"
            )
        return logits

    # -- taps ----------------------------------------------------------------------------------

    def last_conv(self) -> tuple[str, nn.Conv2d]:
        """``(qualified name, module)`` of the last ``nn.Conv2d`` in the backbone, in execution order.

        Fine-pruning prunes this layer's output channels (e.g. with a forward hook or by zeroing
        ``module.weight[c]``); ``taps(x)["last_conv"]`` gives their time-averaged activations.
        """
        order = self._conv_order()
        if not order:
            raise ValueError(f"{type(self.backbone).__name__} has no nn.Conv2d layer")
        return order[-1]

    def _conv_order(self) -> list[tuple[str, nn.Conv2d]]:
        names = {m: n for n, m in self.backbone.named_modules() if isinstance(m, nn.Conv2d)}
        seen: list[nn.Module] = []
        hooks = [m.register_forward_hook(_appender({}, seen, use_input=False)) for m in names]
        try:
            # eval so that the probe forward cannot touch BatchNorm running statistics
            with preserve_modes(self), torch.no_grad():
                self.eval()
                self(torch.zeros(1, *self.input_shape, device=device_of(self)))
        finally:
            for h in hooks:
                h.remove()
        order: list[tuple[str, nn.Conv2d]] = []
        for m in seen:
            if not order or order[-1][1] is not m:
                order = [e for e in order if e[1] is not m] + [(names[m], m)]
        return order

    def taps(self, x: torch.Tensor, return_logits: bool = False):
        """Named inner activations for one forward on ``x``.

        Keys (``*_seq`` per time step ``[B, T, ...]``, the others time-averaged):

        * ``"features"`` ``[B, D]``, ``"features_seq"`` ``[B, T, D]``: penultimate representation
          (``feature_module``'s output, else the input of the last Linear layer; spatial dims averaged).
          For heads that average over T before the Linear, only ``"features"`` is exact per sample and
          ``"features_seq"`` is absent unless a ``feature_module`` was given.
        * ``"membrane"`` ``[B, N]``, ``"membrane_seq"`` ``[B, T, N]``: pre-spike membrane potential
          (the value compared with the threshold at each step, before reset) of the last spiking
          layer that runs, flattened over its neurons. Read from the argument of the neuron's
          surrogate plus its ``v_threshold``/``threshold``; for PSN-type neurons (threshold folded
          into a bias) the argument itself.
        * ``"last_conv"`` ``[B, C]``, ``"last_conv_seq"`` ``[B, T, C]``: output channels of the last
          Conv2d, spatially averaged (see :meth:`last_conv`). Absent for backbones without Conv2d.

        This is one ordinary forward (in train mode BatchNorm statistics update as usual).
        Tensors keep their autograd graph; wrap in ``torch.no_grad()`` if you do not need it.
        With ``return_logits=True`` returns ``(taps, logits)``.
        """
        frames = self.frames(x)
        T, B = frames.shape[1], frames.shape[0]
        feat_parts: list[torch.Tensor] = []
        conv_parts: dict[nn.Module, list[torch.Tensor]] = {}
        conv_seen: list[nn.Module] = []
        hooks = []
        fm = self._feature_module
        if fm is not None:
            hooks.append(fm.register_forward_hook(_appender({fm: feat_parts}, [], use_input=False)))
            linear_inputs = None
        else:
            linear_inputs = {}
            linear_seen: list[nn.Module] = []
            for m in self.backbone.modules():
                if isinstance(m, nn.Linear):
                    hooks.append(m.register_forward_hook(_appender(linear_inputs, linear_seen, use_input=True)))
        for m in self.backbone.modules():
            if isinstance(m, nn.Conv2d):
                hooks.append(m.register_forward_hook(_appender(conv_parts, conv_seen, use_input=False)))
        logs: dict[nn.Module, list[torch.Tensor]] = {}
        order: list[nn.Module] = []
        swapped = []
        for _, m, attr in spiking_neurons(self.backbone):
            rec = _Recorder(getattr(m, attr), logs.setdefault(m, []), order)
            swapped.append((m, attr, rec))
            _set_surrogate(m, attr, rec)
        try:
            logits = self(frames)
        finally:
            for h in hooks:
                h.remove()
            for m, attr, rec in swapped:
                _set_surrogate(m, attr, rec.inner)
            invalidate_reset_cache(self)
        out: dict[str, torch.Tensor] = {}
        if fm is not None:
            seq = _pool_spatial(_to_seq(feat_parts, T, B, "feature_module"))
            out["features_seq"] = seq.transpose(0, 1)
            out["features"] = seq.mean(0)
        elif linear_inputs:
            head = linear_seen[-1]
            parts = linear_inputs[head]
            if len(parts) == 1 and parts[0].ndim == 2 and parts[0].shape[0] == B and T > 1:
                out["features"] = parts[0]  # the head averages over T itself: no per-step features
            else:
                seq = _pool_spatial(_to_seq(parts, T, B, "the head's input"))
                out["features_seq"] = seq.transpose(0, 1)
                out["features"] = seq.mean(0)
        if order:
            rec = order[-1]
            neuron = next(m for m, _, r in swapped if r is rec)
            log = rec.log
            if _SNNTORCH_NEURON and isinstance(neuron, _SNNTORCH_NEURON):
                # snntorch calls spike_grad twice a step: on the previous membrane (to compute its
                # reset), then on the new one (to fire); keep the firing calls
                log = log[1::2]
            seq = _to_seq(log, T, B, "the last spiking layer").reshape(T, B, -1)
            thr = getattr(neuron, "v_threshold", getattr(neuron, "threshold", None))
            if isinstance(thr, (int, float)) or (isinstance(thr, torch.Tensor) and thr.numel() == 1):
                seq = seq + thr
            out["membrane_seq"] = seq.transpose(0, 1)
            out["membrane"] = seq.mean(0)
        if conv_seen:
            seq = _pool_spatial(_to_seq(conv_parts[conv_seen[-1]], T, B, "the last Conv2d"))
            out["last_conv_seq"] = seq.transpose(0, 1)
            out["last_conv"] = seq.mean(0)
        return (out, logits) if return_logits else out

    # -- attacks -------------------------------------------------------------------------------

    def attack_view(self) -> "AttackView":
        """A view taking ``[B, T*P, H, W]`` for torchattacks (see :class:`AttackView`)."""
        return AttackView(self)


class ModelessWrapper(nn.Module):
    """A wrapper with no training flag of its own: it reads and sets the wrapped module's (the
    child named by ``_wrapped``). torchattacks restores the mode it finds on the model it is
    given; a wrapper's own flag would be a stale copy (a fresh module says True and would leave an
    eval model in train mode after every attack). train()/eval() still reach the wrapped module
    through the child-module recursion."""

    _wrapped = "model"

    @property
    def training(self) -> bool:
        return self._modules[self._wrapped].training

    @training.setter
    def training(self, mode: bool) -> None:
        pass


class AttackView(ModelessWrapper):
    """``forward(x [B, T*P, H, W]) -> logits [B, K]``: time packed into channels for torchattacks.

    torchattacks' L2 attacks (PGDL2, CW, DeepFool, ...) assume 4-D images, so time is packed into
    channels, ``x.view(B, T, P, H, W)`` inside (frame t, polarity p is channel ``t*P + p``). The
    view shares the model's parameters and modes; mode changes torchattacks makes on it reach the
    model (wrap attacks in :func:`preserve_modes` to be sure they are undone). Any module taking
    frames works: the frame shape is the classifier's ``input_shape`` or, for other modules, that
    of the last frames given to :meth:`pack`; static images ``[B, C, H, W]`` pass through.

    Attack domain: torchattacks clamps adversarial inputs to [0, 1]. snnsec.data produces binary
    frames by default (``binary=True``: a pixel is 1 if it saw at least one event in the bin), so
    [0, 1] is the natural box and a perturbed frame is a relaxed (fractional) event frame. For count
    frames (``binary=False``) the suite maps counts into [0, 1] *before* the model sees them (the
    data layer's choice: clip to binary or divide by a fixed maximum count); the attack budget eps is
    then relative to that scaled domain, and reports must say which one was used. CW needs inputs
    strictly inside (0, 1) (atanh(+-1) is infinite): rescale exactly binary inputs for it.
    """

    _wrapped = "classifier"

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier
        shape = getattr(classifier, "input_shape", None)
        # a classifier's frame shape is fixed; another module's is taken from the frames packed for it
        self._fixed = shape is not None
        self._shape: tuple[int, ...] | None = tuple(int(v) for v in shape) if self._fixed else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._shape is None:
            return self.classifier(x)
        T, P, H, W = self._shape
        if x.ndim != 4 or tuple(x.shape[1:]) != (T * P, H, W):
            raise ValueError(f"AttackView: expected [B, {T * P}, {H}, {W}] (T*P channels), got {tuple(x.shape)}")
        return self.classifier(x.reshape(x.shape[0], T, P, H, W))

    def pack(self, frames: torch.Tensor) -> torch.Tensor:
        """``[B, T, P, H, W]`` -> ``[B, T*P, H, W]``; static images ``[B, C, H, W]`` unchanged."""
        if frames.ndim == 5:
            if not self._fixed:
                self._shape = tuple(frames.shape[1:])
            return frames.flatten(1, 2)
        if frames.ndim == 4 and not self._fixed:
            self._shape = None
            return frames
        raise ValueError(f"attack input must be frames [B, T, P, H, W]"
                         f"{'' if self._fixed else ' or static images [B, C, H, W]'}, got {tuple(frames.shape)}")

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T*P, H, W]`` -> ``[B, T, P, H, W]`` (static images unchanged)."""
        return x if self._shape is None else x.reshape(x.shape[0], *self._shape)


# --------------------------------------------------------------------------------------------
# inference: the one place that runs a model for predictions


def device_of(model: nn.Module) -> torch.device:
    """Where the model's parameters live (the CPU for a model without any)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@contextlib.contextmanager
def torch_rng_restored() -> Iterator[None]:
    """torch's generators (the CPU's, and every GPU's once CUDA is in use) as they were before the block.
    A process that has not touched CUDA keeps it that way (no context opened on every GPU)."""
    gpus = list(range(torch.cuda.device_count())) if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=gpus):
        yield


@contextlib.contextmanager
def inspection_mode(model: nn.Module) -> Iterator[nn.Module]:
    """eval() with frozen weights for the duration; modes and ``requires_grad`` restored after."""
    grads = {p: p.requires_grad for p in model.parameters()}
    with preserve_modes(model):
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        try:
            yield model
        finally:
            for p, g in grads.items():
                p.requires_grad_(g)


@torch.no_grad()
def predict(model: nn.Module, frames: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """Logits ``[N, K]`` (on the CPU) for frames ``[N, T, P, H, W]``, in eval mode; modes restored.
    Each batch is a fresh forward: the model resets its state (:class:`SpikingClassifier`)."""
    if len(frames) == 0:
        raise ValueError("predict: no frames given")
    from snnsec.lean_kernels import lean_kernels

    device = device_of(model)
    with preserve_modes(model), lean_kernels(model):
        model.eval()
        return torch.cat([model(frames[i:i + int(batch_size)].to(device).float()).cpu()
                          for i in range(0, len(frames), int(batch_size))])


def clone(model: nn.Module) -> nn.Module:
    """A deep copy; neuron state left by the last forward (non-leaf tensors) is reset first."""
    reset_backbone(model)
    return copy.deepcopy(model)
