"""Leaner CPU kernels (CUDA tensors keep spikingjelly's and torch's) for the two layers that dominate a spiking CNN's forward, same values.

Profiled on a csnn (N-MNIST, T = 8, chunks of 8, one core), two layers take most of a forward
(on the small Spikformer the pool of its patch stem is 12 % of an attack's forward and backward):

- **spikingjelly's multi-step LIF** steps through its reference implementation, which allocates
  every intermediate, stacks the steps and, under autograd, records a dozen nodes per step.
  :func:`lif_steps` runs the same arithmetic, operation for operation in the reference's order
  (charge ``v + (x - (v - v_reset)) / tau``, fire ``(h - v_threshold) >= 0``, reset
  ``s * v_reset + (1 - s) * h`` or ``h - s * v_threshold``), into preallocated buffers: every
  rounding is the reference's, so spikes and membranes are bitwise equal. Forwards that build a
  graph go through :class:`_LIFGraph`, whose hand-written backward through time applies the
  operations autograd applies to the reference's graph, so input gradients are bitwise equal too
  (``detach_reset`` and a built-in surrogate; other neurons fall back). On ``[8, 8, 16, 34, 34]``:
  forward 2.1x, forward and backward 1.9x. Where a C compiler is found, both run as one C loop
  per step (``lean_lif.c``, :mod:`snnsec.native`) with the same operations in the same order,
  bitwise equal again (signs of zero included): the forward another 3.4x on
  ``[8, 50, 16, 34, 34]``; the demo's backdoored audit 1.33x as a whole.
- **``max_pool2d``**: torch's NCHW CPU kernel scans each window plane by plane. Without a graph,
  the maximum of the k x k strided views (padded with -inf) gives the same values: a maximum is
  exact whatever the order it is taken in (only the sign of a zero could differ, which no
  comparison or sum sees). With a graph, torch's channels-last kernel gives the same values and
  the same first-maximum indices, and torch's NCHW backward runs from them. Best of 30 beside two
  single-threaded jobs, one thread: csnn's 2 x 2 pool on ``[64, 16, 34, 34]`` 9.2 -> 0.7 ms
  (no graph), 10.4 -> 3.2 ms (forward and backward); Spikformer's 3 x 3 stride-2 pool on
  ``[64, 32, 34, 34]`` 24 -> 7.2 ms and 19.7 -> 8.2 ms.

:func:`lean_kernels` swaps the classes of eligible modules for the block and restores them:
exactly ``LIFNode`` in multi-step mode with a spiking surrogate of spikingjelly or an attack's
estimator (Heaviside forward; checked at every call, as are the neuron's own step functions, so an attack's estimator
or a quantized membrane swapped in later is never bypassed) and no reduced-precision storage, and
``nn.MaxPool2d`` (spikingjelly's included) with dilation 1, no ``ceil_mode``, no indices. Subclasses (a membrane-quantized LIF, a parametric LIF) and every other
neuron keep their own kernels. ``tests/test_lean_kernels.py`` holds the equalities, and every
registered model's logits and input gradients are checked equal with and without them.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
import torch.nn as nn

from snnsec import native
from snnsec.harness import HeavisideWithSlope, SlopeSurrogate, invalidate_reset_cache

__all__ = ["LeanLIF", "LeanMaxPool", "lean_kernels"]


def _needs_graph(*tensors) -> bool:
    return torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)


def lif_steps(x_seq: torch.Tensor, v: torch.Tensor, tau: float, decay_input: bool, v_threshold: float,
              v_reset: float | None, store_v_seq: bool = False, store_h: bool = False):
    """spikingjelly's reference LIF (``spikingjelly/_ops/lif/reference.py``) without a graph:
    ``(spikes [T, ...], final v, v per step or None, charged h per step or None)``; ``v`` is not
    modified."""
    if x_seq.dtype == torch.float32 and (lib := native.lif_library()) is not None:
        return _native_lif_steps(lib, x_seq, v, tau, decay_input, v_threshold, v_reset, store_v_seq, store_h)
    reset_value = 0.0 if v_reset is None else v_reset
    spikes = torch.empty_like(x_seq)
    v_seq = torch.empty_like(x_seq) if store_v_seq else None
    h_seq = torch.empty_like(x_seq) if store_h else None
    v = v.clone()
    tmp = torch.empty_like(v)
    for t in range(x_seq.shape[0]):
        h = h_seq[t] if h_seq is not None else torch.empty_like(v)
        torch.sub(v, reset_value, out=tmp)
        if decay_input:  # v + (x - (v - r)) / tau
            torch.sub(x_seq[t], tmp, out=h)
            h.div_(tau).add_(v)
        else:  # v - (v - r) / tau + x
            tmp.div_(tau)
            torch.sub(v, tmp, out=h)
            h.add_(x_seq[t])
        s = spikes[t]
        torch.sub(h, v_threshold, out=tmp)
        torch.ge(tmp, 0, out=s)
        if v_reset is None:  # h - s * v_threshold
            torch.mul(s, v_threshold, out=tmp)
            torch.sub(h, tmp, out=v)
        else:  # s * v_reset + (1 - s) * h
            torch.mul(s, v_reset, out=v)
            tmp.copy_(s).neg_().add_(1.0)
            v.add_(tmp.mul_(h))
        if v_seq is not None:
            v_seq[t].copy_(v)
    return spikes, v, v_seq, h_seq


def _native_lif_steps(lib, x_seq, v, tau, decay_input, v_threshold, v_reset, store_v_seq, store_h):
    x_seq = x_seq.contiguous()
    v = v.clone(memory_format=torch.contiguous_format)
    spikes = torch.empty_like(x_seq)
    v_seq = torch.empty_like(x_seq) if store_v_seq else None
    h_seq = torch.empty_like(x_seq) if store_h else None
    steps, n = x_seq.shape[0], v.numel()
    native.run_split(lambda lo, hi: lib.snnsec_lif_forward(
        x_seq.data_ptr(), v.data_ptr(), spikes.data_ptr(), _pointer(h_seq), _pointer(v_seq), steps, n, lo, hi, tau,
        int(decay_input), v_threshold, int(v_reset is not None), 0.0 if v_reset is None else v_reset),
        n, torch.get_num_threads())
    return spikes, v, v_seq, h_seq


def _native_lif_backward(lib, h_seq, spikes, g_spikes, g_v, params, slopes):
    from spikingjelly._ops.surrogate import _surrogate_gradient

    tau, decay_input, v_threshold, v_reset, surrogate_id, alpha = params
    h_seq, spikes = h_seq.contiguous(), spikes.contiguous()
    g_s = None if g_spikes is None else g_spikes.contiguous()
    g_v = None if g_v is None else g_v.contiguous()
    # ATan's derivative needs no transcendental, so the C loop computes it
    atan = slopes is None and surrogate_id == 1
    sg = None if slopes is None else slopes.contiguous()
    if g_s is not None and sg is None and not atan:  # torch's vectorised exp, step by step as the reference
        sg = torch.empty_like(h_seq)
        for t in range(h_seq.shape[0]):
            sg[t] = _surrogate_gradient(h_seq[t] - v_threshold, alpha, surrogate_id)
    g_x, carry = torch.empty_like(h_seq), torch.empty_like(h_seq[0])
    steps, n = h_seq.shape[0], carry.numel()
    native.run_split(lambda lo, hi: lib.snnsec_lif_backward(
        _pointer(g_s), _pointer(sg), h_seq.data_ptr(), spikes.data_ptr(), _pointer(g_v), g_x.data_ptr(),
        carry.data_ptr(), steps, n, lo, hi, tau, int(decay_input), int(v_reset is not None), v_threshold, int(atan),
        math.pi / 2 * alpha if atan else 0.0, alpha / 2 if atan else 0.0), n, torch.get_num_threads())
    return g_x


def _pointer(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class _LIFGraph(torch.autograd.Function):
    """The reference LIF with ``detach_reset`` and a built-in spikingjelly surrogate, forward by
    :func:`lif_steps` and backward through time by hand, each gradient computed by the operation
    autograd applies to the reference's graph, in the same order, so input gradients are bitwise
    the reference's: ``g_h = g_s * sg(h - theta) + g_v' * (1 - s)`` (soft reset: ``+ g_v'``),
    ``g_x = g_h / tau`` and ``g_v = g_h + (-(g_h / tau))`` with ``decay_input``, else ``g_x = g_h``
    and ``g_v = g_h + ((-g_h) / tau)``. A backward that itself builds a graph (``create_graph``,
    e.g. the dynamic trigger's look-ahead step) differentiates spikingjelly's own LIF instead,
    as spikingjelly's operator does."""

    @staticmethod
    def forward(ctx, x_seq, v, tau, decay_input, v_threshold, v_reset, surrogate, surrogate_id, alpha):
        spikes, v_last, _, h_seq = lif_steps(x_seq, v, tau, decay_input, v_threshold, v_reset, store_h=True)
        slopes = _step_slopes(surrogate, h_seq, v_threshold)
        if isinstance(surrogate, SlopeSurrogate) and slopes is None:
            ctx.mark_non_differentiable(spikes)  # as the reference's: no slope, no gradient through spikes
        # an unused output (the final membrane, mostly) gets no gradient, not zeros: the reference
        # adds nothing there, and a zero added would turn a -0 gradient into +0
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x_seq, v, h_seq, spikes, slopes)
        ctx.params = (tau, decay_input, v_threshold, v_reset, surrogate_id, alpha)
        ctx.surrogate = surrogate
        return spikes, v_last

    @staticmethod
    def backward(ctx, g_spikes, g_v):
        from spikingjelly._ops.surrogate import _surrogate_gradient

        x_seq, v0, h_seq, spikes, slopes = ctx.saved_tensors
        tau, decay_input, v_threshold, v_reset, surrogate_id, alpha = ctx.params
        if isinstance(ctx.surrogate, SlopeSurrogate):
            g_spikes = None if slopes is None else g_spikes
        if torch.is_grad_enabled():
            surrogate = _Replay(slopes) if isinstance(ctx.surrogate, SlopeSurrogate) else ctx.surrogate
            return (_reference_input_gradient(x_seq, v0, ctx.params, surrogate, g_spikes, g_v),
                    None, None, None, None, None, None, None, None)
        if (lib := native.lif_library()) is not None:
            return (_native_lif_backward(lib, h_seq, spikes, g_spikes, g_v, ctx.params, slopes),
                    None, None, None, None, None, None, None, None)
        g_x = torch.empty_like(h_seq)
        keep = None if v_reset is None else torch.rsub(spikes, 1.0)  # 1 - s, all steps at once
        carry = None if g_v is None else g_v.clone()
        from_v = torch.empty_like(h_seq[0])
        for t in range(h_seq.shape[0] - 1, -1, -1):
            if g_spikes is None:
                g_h = None
            elif slopes is not None:
                g_h = g_spikes[t] * slopes[t]
            else:
                g_h = g_spikes[t] * _surrogate_gradient(h_seq[t] - v_threshold, alpha, surrogate_id)
            if carry is not None:
                src = carry if keep is None else torch.mul(carry, keep[t], out=from_v)
                g_h = src.clone() if g_h is None else g_h.add_(src)
            if g_h is None:
                g_x[t] = 0.0
                continue
            if decay_input:  # g_x = g_h / tau; g_v = g_h + (-(g_h / tau)), i.e. g_h - g_x
                torch.div(g_h, tau, out=g_x[t])
                carry = g_h.sub_(g_x[t])
            else:  # g_x = g_h; g_v = g_h + ((-g_h) / tau)
                g_x[t] = g_h
                carry = g_h.add_(torch.neg(g_h).div_(tau))
        return g_x, None, None, None, None, None, None, None, None


def _step_slopes(surrogate, h_seq: torch.Tensor, v_threshold: float) -> torch.Tensor | None:
    """Hands each step's potential to an estimator (:class:`~snnsec.harness.SlopeSurrogate`), in
    order, as the reference's loop does; its slopes ``[T, ...]``, or None (HART's recorder, or a
    built-in surrogate)."""
    if not isinstance(surrogate, SlopeSurrogate):
        return None
    steps = [surrogate.step_slope(h_seq[t] - v_threshold) for t in range(h_seq.shape[0])]
    if all(s is None for s in steps):
        return None
    if any(s is None or s.shape != h_seq.shape[1:] for s in steps):
        raise ValueError(f"{type(surrogate).__name__}.step_slope must give a slope shaped like the potential "
                         f"{tuple(h_seq.shape[1:])} at every step, or None at every step")
    return torch.stack(steps)


class _Replay:
    """The slopes an estimator gave in the forward, handed back step by step, so that differentiating
    the reference for a second order does not update the estimator's state a second time."""

    def __init__(self, slopes: torch.Tensor | None) -> None:
        self.steps = None if slopes is None else iter(slopes)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x >= 0).to(x) if self.steps is None else HeavisideWithSlope.apply(x, next(self.steps))


def _reference_input_gradient(x_seq, v0, params, surrogate, g_spikes, g_v):
    """d(spikes, v) / d(x_seq) through spikingjelly's own multi-step LIF, as a graph."""
    from spikingjelly.activation_based import functional

    tau, decay_input, v_threshold, v_reset, _, _ = params
    spikes, v_last, _ = functional.lif_multi_step(x_seq, v0, tau, decay_input, v_threshold, v_reset, surrogate,
                                                  True, False)
    pairs = [(o, g) for o, g in ((spikes, g_spikes), (v_last, g_v)) if g is not None]
    (g_x,) = torch.autograd.grad([o for o, _ in pairs], x_seq, [g for _, g in pairs], create_graph=True,
                                 allow_unused=True)
    return torch.zeros_like(x_seq) if g_x is None else g_x


class LeanLIF:
    """Mixin over spikingjelly's ``LIFNode``: :func:`lif_steps` for forwards that build no graph,
    :class:`_LIFGraph` for those that do (``detach_reset``, float32; else spikingjelly's own). The
    surrogate is a built-in of spikingjelly or an attack's estimator
    (:class:`~snnsec.harness.SlopeSurrogate`: ASSG, PDSG, HART's recorder), which gets each step's
    potential in order, as in the reference's loop, and whose slopes the backward multiplies by."""

    def multi_step_forward(self, x_seq: torch.Tensor, *args, **kwargs):
        from spikingjelly._ops.surrogate import _surrogate_spec
        from spikingjelly.activation_based import neuron

        # checked per call: an estimator swapped in later (ASSG's statistics, HART's recorder) or
        # a subclass's own step (quantized membranes) must see every forward
        own_steps = (type(self).single_step_functional_forward is neuron.LIFNode.single_step_functional_forward
                     and type(self).multi_step_functional_forward is neuron.LIFNode.multi_step_functional_forward)
        estimator = isinstance(self.surrogate_function, SlopeSurrogate)
        if (args or kwargs or x_seq.device.type != "cpu" or not own_steps
                or not (estimator or _heaviside_surrogate(self)) or not x_seq.dtype.is_floating_point):
            return super().multi_step_forward(x_seq, *args, **kwargs)
        v = self.materialize_states((x_seq,), tuple(self._memories.values()), "m")[0]
        if not isinstance(v, torch.Tensor) or v.dtype != x_seq.dtype or v.shape != x_seq.shape[1:]:
            return super().multi_step_forward(x_seq)
        if not _needs_graph(x_seq, v):
            spikes, v, v_seq, h_seq = lif_steps(x_seq, v, self.tau, self.decay_input, self.v_threshold,
                                                self.v_reset, self.store_v_seq, store_h=estimator)
            _step_slopes(self.surrogate_function, h_seq, self.v_threshold)  # the estimator sees every step
            self._memories["v"] = v
            self.v_seq = v_seq
            return spikes
        spec = (None, None) if estimator else _surrogate_spec(self.surrogate_function)
        if (spec is None or not self.detach_reset or self.store_v_seq or v.requires_grad
                or x_seq.dtype != torch.float32):
            return super().multi_step_forward(x_seq, *args, **kwargs)
        spikes, v = _LIFGraph.apply(x_seq, v, self.tau, self.decay_input, self.v_threshold, self.v_reset,
                                    self.surrogate_function, *spec)
        self._memories["v"] = v
        self.v_seq = None
        return spikes


def _window_max(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
                padding: tuple[int, int]) -> torch.Tensor:
    """``max_pool2d``'s values as the maximum of the k x k strided views of ``x`` padded with
    -inf (torch's own padding value for a maximum)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    if ph or pw:
        x = torch.nn.functional.pad(x, (pw, pw, ph, ph), value=float("-inf"))
    oh, ow = (x.shape[-2] - kh) // sh + 1, (x.shape[-1] - kw) // sw + 1
    rows = x[..., 0:sh * (oh - 1) + 1:sh, :]
    for i in range(1, kh):
        rows = torch.maximum(rows, x[..., i:i + sh * (oh - 1) + 1:sh, :])
    out = rows[..., 0:sw * (ow - 1) + 1:sw]
    for j in range(1, kw):
        out = torch.maximum(out, rows[..., j:j + sw * (ow - 1) + 1:sw])
    return out.contiguous()


class _MaxPoolGraph(torch.autograd.Function):
    """torch's ``max_pool2d`` with its indices, computed on a channels-last copy, and torch's own
    backward from those indices on the NCHW gradient. The channels-last kernel scans each window in
    the NCHW kernel's order and keeps the first maximum, so values and indices are equal (asserted
    in the tests) and the backward is the very kernel autograd runs for the reference. A backward
    that builds a graph records that kernel's own derivative."""

    @staticmethod
    def forward(ctx, x, kernel, stride, padding):
        out, indices = torch.nn.functional.max_pool2d(x.contiguous(memory_format=torch.channels_last), kernel,
                                                      stride, padding, return_indices=True)
        indices = indices.contiguous()
        ctx.save_for_backward(x, indices)
        ctx.window = (list(kernel), list(stride), list(padding))
        return out.contiguous()

    @staticmethod
    def backward(ctx, g_out):
        x, indices = ctx.saved_tensors
        kernel, stride, padding = ctx.window
        g_x = torch.ops.aten.max_pool2d_with_indices_backward(g_out.contiguous(), x, kernel, stride, padding,
                                                              [1, 1], False, indices)
        return g_x, None, None, None


class LeanMaxPool(nn.MaxPool2d):
    """Max pooling (dilation 1, no ``ceil_mode``, no indices returned) without torch's NCHW CPU
    kernel, which scans each window per plane: the maximum of the strided views for forwards
    that build no graph, :class:`_MaxPoolGraph` for those that do. Sits before ``nn.MaxPool2d``
    in the class order so that a subclass's own forward (spikingjelly's step-mode handling) still
    runs around it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (3, 4) or x.device.type != "cpu" or not x.dtype.is_floating_point:
            return super().forward(x)
        window = _pair(self.kernel_size), _pair(self.stride or self.kernel_size), _pair(self.padding)
        if not _needs_graph(x):
            return _window_max(x, *window)
        if x.dim() != 4:
            return super().forward(x)
        return _MaxPoolGraph.apply(x, *window)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _heaviside_surrogate(m: nn.Module) -> bool:
    from spikingjelly.activation_based import surrogate

    sf = getattr(m, "surrogate_function", None)
    return isinstance(sf, surrogate.SurrogateFunctionBase) and sf.spiking


def _lean_lif_class(m: nn.Module) -> type | None:
    from spikingjelly.activation_based import neuron

    if type(m) is not neuron.LIFNode or getattr(m, "_neuron_precision", None) is not None:
        return None
    eligible = _heaviside_surrogate(m) or isinstance(getattr(m, "surrogate_function", None), SlopeSurrogate)
    return _subclass(LeanLIF, type(m)) if eligible else None


def _lean_pool_class(m: nn.Module) -> type | None:
    if not isinstance(m, nn.MaxPool2d) or isinstance(m, LeanMaxPool):
        return None
    kernel, padding = _pair(m.kernel_size), _pair(m.padding)
    # torch refuses padding over half the kernel; such a module keeps torch's kernel and its error
    if (m.return_indices or m.ceil_mode or _pair(m.dilation) != (1, 1)
            or any(p > k // 2 for k, p in zip(kernel, padding))):
        return None
    return LeanMaxPool if type(m) is nn.MaxPool2d else _subclass(type(m), LeanMaxPool)


_CLASSES: dict[tuple[type, type], type] = {}


def _subclass(first: type, second: type) -> type:
    key = (first, second)
    if key not in _CLASSES:
        name = (first if first not in (LeanLIF, LeanMaxPool) else second).__name__
        _CLASSES[key] = type(f"Lean{name}", (first, second), {})
    return _CLASSES[key]


@contextlib.contextmanager
def lean_kernels(model: nn.Module, enabled: bool = True) -> Iterator[int]:
    """Within the block, eligible LIF neurons and max pools of ``model`` (module docstring) take
    the lean kernels; yields how many modules were swapped. A copy made inside the block keeps
    the lean classes (same numbers); blocks nest (an already lean module is left as it is)."""
    swapped: list[tuple[nn.Module, type]] = []
    if enabled:
        for m in model.modules():
            cls = _lean_lif_class(m) or _lean_pool_class(m)
            if cls is not None:
                swapped.append((m, type(m)))
                m.__class__ = cls
    if swapped:
        invalidate_reset_cache(model)
    try:
        yield len(swapped)
    finally:
        for m, cls in swapped:
            m.__class__ = cls
        if swapped:
            invalidate_reset_cache(model)
