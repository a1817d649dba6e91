"""Representations that dataset inspections cluster: per sample, per class."""

from __future__ import annotations

import torch

from snnsec.defenses.base import taps

REPRESENTATIONS = ("features", "counts")


def representation(model, x: torch.Tensor, rep: str) -> torch.Tensor:
    """``features``: time-averaged penultimate activity [N, D]; ``counts``: the population
    spike count of the penultimate layer in each time bin [N, T] (what a flash or a
    time-windowed trigger changes most)."""
    if rep == "features":
        return taps(model, x, ("features",))["features"]
    if rep == "counts":
        return taps(model, x, ("features_seq",))["features_seq"].sum(2)
    raise ValueError(f"representation: expected one of {REPRESENTATIONS}, got {rep!r}")
