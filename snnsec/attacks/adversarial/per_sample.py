"""Per-sample results that do not depend on which other samples share a batch.

An evaluation that attacks only the samples still robust (a cascade) or regroups them into other
batches must give every sample exactly the result it would get in the full run. Two things tie a
sample's result to its batch-mates, and this module removes both:

- **Numerics.** A convolution or matrix product picks its blocking (and so its summation order)
  from the batch size: on the 2-core test machine a csnn's logits for the same sample differ in the
  last bits between batches of 5 and of 64, and one flipped spike changes an attack's path.
  :class:`FixedBatch` runs every forward in chunks of one fixed size (the last padded with zeros),
  so each sample always meets the same kernels; its output depends on its own input only.
- **Random draws.** PGD's random start, APGD's and Square's starting points are drawn for the whole
  batch from the global generator, so sample *i* gets the *i*-th slice of the stream.
  :func:`keyed_draws` gives each sample its own generator, seeded by the evaluation's seed and the
  sample's key (its index in the evaluated set), for every draw shaped like the batch; draws not
  shaped like it (Square's window positions and signs, the same for every sample) keep coming
  from the global generator, whose stream no longer depends on the batch size. The model's own
  forward runs outside the keyed draws (:func:`model_forward`): they are the attack's starting
  points, and a mode that sees every operation of a forward costs a Python call per operation.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from snnsec.harness import ModelessWrapper

__all__ = ["FixedBatch", "keyed_draws", "model_forward"]


class FixedBatch(ModelessWrapper):
    """``model`` run in chunks of exactly ``size`` samples: per-sample outputs (and input gradients)
    independent of the batch they came in.

    The padding rows are zeros; they cost compute (a batch of 1 costs a chunk) and nothing else,
    since no per-sample model mixes rows in eval mode (a training-mode BatchNorm would, and is
    refused). ``input_shape`` and ``num_classes`` are the model's; training flags are the model's.

    A module whose state or statistics involve more than one row defines ``select_chunk(k, rows)``,
    called before chunk ``k`` of every forward with the number of real (not padding) rows in it,
    and once after the forward with ``(0, None)`` (the whole batch is the model's again). ASSG keeps
    its statistics over an attack's iterations per chunk (without that, chunk k would inherit chunk
    k - 1's); PDSG takes its sigma over the real rows only. An estimator with batch statistics
    (PDSG, as in its reference) still gives a sample a result that depends on its chunk-mates. One
    level only: a FixedBatch inside another would take the outer one's padding for samples.
    """

    def __init__(self, model: nn.Module, size: int) -> None:
        super().__init__()
        if int(size) < 1:
            raise ValueError(f"FixedBatch: chunk size must be >= 1, got {size}")
        self.model = model
        self.size = int(size)
        for attr in ("input_shape", "num_classes"):
            if hasattr(model, attr):
                setattr(self, attr, getattr(model, attr))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if any(m.training for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
            raise RuntimeError("FixedBatch: the model is in training mode, where BatchNorm mixes samples; call .eval()")
        pad = (-n) % self.size
        if pad:
            x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))])
        stateful = [m.select_chunk for m in self.model.modules() if callable(getattr(m, "select_chunk", None))]
        out = []
        try:
            for k, i in enumerate(range(0, x.shape[0], self.size)):
                for select in stateful:
                    select(k, min(self.size, n - i))
                out.append(self.model(x[i:i + self.size]))
        finally:
            for select in stateful:
                select(0, None)
        return torch.cat(out)[:n]


def _mix(seed: int, key: int, draw: int) -> int:
    # splitmix-style constants: nearby (seed, key, draw) triples get unrelated generator seeds
    h = (seed * 0x9E3779B97F4A7C15 + key * 0xBF58476D1CE4E5B9 + draw * 0x94D049BB133111EB) & (2**64 - 1)
    h ^= h >> 31
    return h & (2**63 - 1)


class _KeyedDraws(TorchFunctionMode):
    """Every random tensor of rank ``rank`` whose first dimension is the number of keys is drawn
    row by row, row ``i`` from a generator seeded by ``(seed, keys[i], number of such draws so far)``."""

    def __init__(self, keys: list[int], seed: int, rank: int) -> None:
        super().__init__()
        self.keys, self.seed, self.rank, self.draws = keys, int(seed), int(rank), 0

    def _batch_shaped(self, shape) -> bool:
        return len(shape) == self.rank and int(shape[0]) == len(self.keys)

    def _generators(self, device) -> Iterator[torch.Generator]:
        self.draws += 1
        for k in self.keys:
            yield torch.Generator(device=device).manual_seed(_mix(self.seed, k, self.draws))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if kwargs.get("generator") is None:
            if func in (torch.rand, torch.randn):
                shape = tuple(args[0]) if len(args) == 1 and not isinstance(args[0], int) else tuple(args)
                if self._batch_shaped(shape):
                    dev = kwargs.get("device") or "cpu"
                    out = torch.empty(shape, dtype=kwargs.get("dtype") or torch.get_default_dtype(), device=dev)
                    fill = torch.Tensor.uniform_ if func is torch.rand else torch.Tensor.normal_
                    for row, g in zip(out, self._generators(out.device)):
                        fill(row, generator=g)
                    return out
            elif func in (torch.rand_like, torch.randn_like) and self._batch_shaped(args[0].shape):
                out = torch.empty_like(args[0], **kwargs)
                fill = torch.Tensor.uniform_ if func is torch.rand_like else torch.Tensor.normal_
                for row, g in zip(out, self._generators(out.device)):
                    fill(row, generator=g)
                return out
            elif func in (torch.Tensor.uniform_, torch.Tensor.normal_) and self._batch_shaped(args[0].shape):
                t = args[0]
                for row, g in zip(t, self._generators(t.device)):
                    func(row, *args[1:], generator=g, **kwargs)
                return t
        return func(*args, **kwargs)


@contextlib.contextmanager
def keyed_draws(keys, seed: int, rank: int) -> Iterator[None]:
    """Within the block, batch-shaped random draws (rank ``rank``, one row per key) come from
    per-sample generators: sample ``keys[i]`` gets the same random start in any batch, at any position.

    Covers ``torch.rand``/``randn``/``rand_like``/``randn_like`` and ``Tensor.uniform_``/``normal_``
    (what torchattacks' random starts use); other random functions draw as usual.
    """
    with _KeyedDraws([int(k) for k in keys], seed, rank):
        yield


@contextlib.contextmanager
def model_forward() -> Iterator[None]:
    """Suspends the innermost :func:`keyed_draws` for the block (a model's forward inside an attack);
    does nothing outside one."""
    from torch.overrides import _get_current_function_mode, _pop_mode_temporarily

    if isinstance(_get_current_function_mode(), _KeyedDraws):
        with _pop_mode_temporarily():
            yield
    else:
        yield
