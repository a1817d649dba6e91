"""Input-adaptive gradient estimators from 2024-2025 work on reliable SNN evaluation.

Each replaces only the backward of the spike function (forward values unchanged) and reads the
membrane potential the neuron hands its surrogate (``h_t - theta``, the charged potential
before spike and reset). spikingjelly 2.0 calls a surrogate it does not know once per time step
on its plain-autograd path, so these work with its IF/LIF/PLIF neurons in multi-step mode and
with any neuron that calls its surrogate per step; PSN neurons (one call on the whole sequence)
are refused.

* **PDSG** (potential-dependent surrogate gradient; CVPR 2025, reference ``ryime/PDSG-SDA``,
  ``utils/attack.py`` ``PDSG_LIFNode``): a Gaussian centred ``sigma / 2`` above the threshold,
  ``sigma`` the standard deviation of the potentials seen since the forward began (time steps so
  far, batch and space), per channel (per feature for linear layers); no hyperparameter. Under
  ``per_sample.FixedBatch`` the batch is the chunk's real rows (:meth:`PDSG.select_chunk`), not
  its zero padding: at most the evaluation's chunk (8 samples), where the reference takes its
  whole batch. Run here against the reference's ``PDSG_LIFNode`` (swapped in by its ``set_PDSG``)
  and its PGD on the same csnn checkpoint (N-MNIST re-split, 10 epochs, clean .965) and 200
  samples, PGD-10 with step eps/4: robust accuracy .905 / .785 at 8 / 16/255 (snnsec) against
  .905 / .770 (reference, batches of 8) and .905 / .785 (reference, one batch of 200).
* **ASSG** (adaptive sharpness surrogate gradient; arXiv 2512.22522, reference
  ``craree/Towards-Reliable-Evaluation-of-Adversarial-Robustness-for-Spiking-Neural-Networks``,
  ``my_node.py`` ``ASSGrad``): spikingjelly's ATan surrogate with an elementwise sharpness
  ``alpha = a / (M + 1.5 D + 1e-4)``, ``a = 2 tan(pi omega) / pi``, where ``M`` and ``D`` are
  exponential averages (0.9) over the attack's iterations of ``|h - theta|`` and its absolute
  deviation, per sample, neuron and time step. The statistics restart for every attacked batch
  (:meth:`ASSG.restart_statistics`, called by the attack adapter) and are kept per chunk of it
  (:meth:`ASSG.select_chunk`, called by ``per_sample.FixedBatch``). Run here against the
  reference's ``ASSG_SAPGD`` on the same csnn checkpoint and 200 N-MNIST samples, omega 0.43,
  8/255, 100 steps: robust accuracy .600 (snnsec) and .610 (reference; the random starts differ).
* **HART** (ICLR 2024, reference ``hzc1208/HART_Attack``, ``models/layers.py`` ``LIFSpike`` mode
  ``avg``): no gradient through the membrane across time, the per-step surrogate
  ``(1/gamma^2) max(0, gamma - |h - theta|)`` at the step's own potential, and every step's input
  gradient replaced by its average over time: ``dL/dx_t' = mean_t dL/ds_t g'(h_t - theta) dh_t/dx_t``
  (rate and temporal information in one gradient). Installed as a forward hook, like BPTR and RGA.
  Run here against the reference's ``LIFSpike`` in mode ``avg`` (its ``ZIF`` surrogate and
  ``GradAvg``; fed ``x / tau`` with its decay ``1 - 1/tau``, which makes its forward equal to
  spikingjelly's LIF, checked) and its PGD, same checkpoint and samples as PDSG's, gamma 0.5, PGD-10
  with step eps/4: .915 / .840 at 8 / 16/255 (snnsec) against .910 / .850 (reference). The
  reference tunes gamma on the test set per attack; here gamma is a parameter (a sweep of it and
  the per-sample worst case instead).
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
import torch.nn as nn

from snnsec.attacks.adversarial.gradients import SpikesWithGrad, multi_step_neurons, neuron_constants
from snnsec.harness import SlopeSurrogate, override_surrogate, spiking_neurons

# ASSG: the reference's EMA rates, relaxation of the deviation term and stabiliser
_ASSG_B1, _ASSG_B2, _ASSG_RELAX, _ASSG_STAB = 0.9, 0.9, 1.5, 1e-4


def _refuse_psn(model: nn.Module, what: str) -> None:
    for name, m, _ in spiking_neurons(model):
        if "PSN" in type(m).__name__:
            raise ValueError(f"{what} reads the potential step by step; {name} is a {type(m).__name__}, which calls its "
                             "surrogate once on the whole sequence")


class PDSG(SlopeSurrogate):
    """The PDSG surrogate of one neuron (see the module doc)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []
        self.rows: int | None = None

    def reset(self) -> None:  # every forward starts the potential history anew
        self.seen = []

    def select_chunk(self, index: int, rows: int | None) -> None:
        self.rows = rows

    def step_slope(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x if self.rows is None else x[:self.rows])
        h = torch.stack(self.seen)  # [t + 1, B, C, ...] or [t + 1, B, N]
        keep = 2  # the channel (or feature) axis of the stacked potentials
        dims = [d for d in range(h.dim()) if d != keep]
        n = math.prod(h.shape[d] for d in dims)
        sigma = h.std(dim=dims, keepdim=True)[0] if n > 1 else torch.ones_like(h[0, :1])
        sigma = torch.where(torch.isfinite(sigma) & (sigma > 0), sigma, torch.ones_like(sigma))
        return torch.exp(-((x - sigma / 2) ** 2) / (2 * sigma ** 2)) / (math.sqrt(2 * math.pi) * sigma)


class ASSG(SlopeSurrogate):
    """The ASSG surrogate of one neuron (see the module doc); ``omega`` in (0, 0.5)."""

    def __init__(self, omega: float) -> None:
        super().__init__()
        if not 0 < omega < 0.5:
            raise ValueError(f"assg: omega must be in (0, 0.5), got {omega!r}")
        self.a = 2 * math.tan(math.pi * omega) / math.pi
        self.t = 0
        self.chunk = 0
        # per (chunk, time step): an attack's batch runs in fixed chunks (per_sample.FixedBatch),
        # each with its own samples' statistics
        self.M: dict[tuple[int, int], torch.Tensor] = {}
        self.D: dict[tuple[int, int], torch.Tensor] = {}

    def reset(self) -> None:  # a new forward: time steps count from 0 again; statistics stay
        self.t = 0

    def select_chunk(self, index: int, rows: int | None) -> None:
        self.chunk = int(index)

    def restart_statistics(self) -> None:
        """A new batch is attacked: its statistics start from M = 1, D = 0."""
        self.t, self.chunk, self.M, self.D = 0, 0, {}, {}

    def step_slope(self, x: torch.Tensor) -> torch.Tensor:
        key = (self.chunk, self.t)
        self.t += 1
        ax = x.abs()
        M, D = self.M.get(key), self.D.get(key)
        if M is None or M.shape != ax.shape:  # first call, or a batch of another size
            M, D = torch.ones_like(ax), torch.zeros_like(ax)
        M = _ASSG_B1 * M + (1 - _ASSG_B1) * ax
        D = _ASSG_B2 * D + (1 - _ASSG_B2) * (ax - M).abs()
        self.M[key], self.D[key] = M, D
        alpha = self.a / (M + _ASSG_RELAX * D + _ASSG_STAB)
        return alpha / (2 * (1 + (math.pi / 2 * alpha * x) ** 2))


def restart_statistics(model: nn.Module) -> None:
    """Start every input-adaptive estimator's statistics afresh (ASSG): called before each batch
    an attack or a check works on, so no batch inherits another's."""
    for m in model.modules():
        restart = getattr(m, "restart_statistics", None)
        if callable(restart):
            restart()


def pdsg_mode(model: nn.Module):
    _refuse_psn(model, "pdsg")
    return override_surrogate(model, PDSG)


def assg_mode(model: nn.Module, omega: float):
    _refuse_psn(model, "assg")
    ASSG(omega)  # range-checked before any neuron is touched
    return override_surrogate(model, lambda: ASSG(omega))


# ----------------------------------------------------------------------------------- HART


class _Recording(SlopeSurrogate):
    """Stands in for a neuron's surrogate under HART: records ``h_t - theta``, spikes forward
    (with no gradient: HART's hook gives the neuron's output its own)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def reset(self) -> None:
        self.seen = []

    def step_slope(self, x: torch.Tensor) -> None:
        self.seen.append(x)
        return None


def _hart_hook(recorder: _Recording, gamma: float):
    def hook(module, inputs, output):
        x = inputs[0]
        if x.ndim < 2 or output.shape != x.shape:
            raise ValueError(f"hart: neuron {type(module).__name__} must map [T, B, ...] to spikes of the same shape")
        if len(recorder.seen) != x.shape[0]:
            raise ValueError(f"hart: neuron {type(module).__name__} called its surrogate {len(recorder.seen)} times "
                             f"for {x.shape[0]} time steps")
        u = torch.stack(recorder.seen)
        slope = torch.clamp(gamma - u.abs(), min=0) / gamma ** 2 * neuron_constants(module)[1]  # times dh_t/dx_t
        return SpikesWithGrad.apply(x, output.detach(), slope.to(x), True)

    return hook


@contextlib.contextmanager
def hart_mode(model: nn.Module, gamma: float) -> Iterator[int]:
    multi_step_neurons(model, "hart")
    _refuse_psn(model, "hart")
    recorders: dict[nn.Module, _Recording] = {}

    def factory() -> _Recording:
        return _Recording()

    with override_surrogate(model, factory) as n:
        for _, m, attr in spiking_neurons(model):
            recorders[m] = getattr(m, attr)
        handles = [m.register_forward_hook(_hart_hook(rec, gamma)) for m, rec in recorders.items()]
        try:
            yield n
        finally:
            for h in handles:
                h.remove()
