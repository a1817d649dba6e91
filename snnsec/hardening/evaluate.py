"""Evaluation of hardened models: accuracy at reduced inference time, robust accuracy, backdoor ASR."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable

import torch

from snnsec.harness import device_of, preserve_modes


def inference_steps(T: int, steps: Iterable[int] = (1, 2, 4)) -> list[int]:
    """The sorted distinct steps ``t <= T`` to evaluate, always including ``T`` itself."""
    out = sorted({int(t) for t in steps if 1 <= int(t) <= int(T)} | {int(T)})
    bad = [t for t in steps if not 1 <= int(t) <= int(T)]
    if bad:
        raise ValueError(f"inference steps: expected 1 <= t <= T={T}, got {bad}")
    return out


@contextmanager
def first_steps(model, t: int):
    """Within the block, ``model`` takes inputs of ``t`` time steps (``model.T = t``), then ``T`` again.

    The harness refuses inputs whose T differs from the model's; a causal network whose state is
    reset before every forward computes on the first ``t`` steps exactly what it computes on the
    first ``t`` steps of a longer input, so this is "stop the trained-at-T model after t steps".
    Backbones that need exactly T steps (PSN with a fixed T) fail inside with their own error.
    """
    T = model.T
    model.T = int(t)
    try:
        yield model
    finally:
        model.T = T


@torch.no_grad()
def accuracy_at_steps(model, x: torch.Tensor, y: torch.Tensor, steps: Iterable[int] = (1, 2, 4), *,
                      batch_size: int = 64) -> dict[int, float]:
    """``{t: accuracy}`` of ``model`` given only the first ``t`` time steps of each sample.

    The readout is the time average of the first ``t`` outputs (see :func:`first_steps`).
    """
    T = x.shape[1]
    ts = inference_steps(T, steps)
    correct = {t: 0 for t in ts}
    y = torch.as_tensor(y).long()
    device = device_of(model)
    with preserve_modes(model):
        model.eval()
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
            for t in ts:
                with first_steps(model, t):
                    correct[t] += int((model(xb[:, :t]).argmax(1) == yb).sum())
    return {t: correct[t] / max(len(x), 1) for t in ts}


def eps_label(eps: float) -> str:
    """``2/255`` for eps = 2/255, else the plain number: metric names stay readable."""
    k = float(eps) * 255
    return f"{k:g}/255" if abs(k - round(k)) < 1e-6 else f"{float(eps):g}"
