"""STRIP (Gao et al., ACSAC 2019) for event data: input inspection.

Superimpose the input with N random clean samples and measure the entropy of the
predictions; a triggered input keeps predicting its target whatever is laid over it, so its
entropy is low. Superimposing event data means the union of the two event streams: on
binary frames that is the clipped sum (``mode="clip"``), on count frames the plain sum
(``mode="sum"``); :func:`union_events` does it on raw event arrays before framing.
The threshold is the entropy quantile at the chosen false-rejection rate on held-out clean
inputs (empirical, not the original's normal fit: event-model entropies are skewed).
:meth:`Strip.row_groups` gives the rows the report's entropy histogram reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from snnsec.defenses.base import (
    COUNT, OPEN_FRACTION, InputInspection, InputScores, Limit, batched, check_frames, register, rng)
from snnsec.harness import device_of, inspection_mode


def superimpose(x: torch.Tensor, overlays: torch.Tensor, mode: str = "clip") -> torch.Tensor:
    if mode == "clip":
        return (x + overlays).clamp_(0, 1)
    if mode == "sum":
        return x + overlays
    raise ValueError(f"strip: superimpose mode must be 'clip' or 'sum', got {mode!r}")


def union_events(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Union of two event streams, ``b``'s timestamps rescaled onto ``a``'s time span."""
    if len(b) and len(a):
        b = b.copy()
        ta, tb = a["t"].astype(np.float64), b["t"].astype(np.float64)
        span_b = max(tb.max() - tb.min(), 1.0)
        b["t"] = (ta.min() + (tb - tb.min()) / span_b * (ta.max() - ta.min())).astype(a["t"].dtype)
    out = np.concatenate([a, b])
    return out[np.argsort(out["t"], kind="stable")]


@register
@dataclass
class Strip(InputInspection):
    name = "strip"

    # N=64 (TrojanZoo's default) instead of the original 100: every input costs N forwards.
    limits: ClassVar[dict[str, Limit]] = {"n_overlays": COUNT, "frr": OPEN_FRACTION, "batch_size": COUNT}

    n_overlays: int = 64
    frr: float = 0.05
    mode: str = "clip"
    batch_size: int = 256
    seed: int = 0

    def fit(self, model, x_clean, x_holdout=None) -> "Strip":
        """``x_clean`` is the overlay pool; the threshold comes from ``x_holdout`` (default: the pool)."""
        self._model = model
        self._pool = check_frames(x_clean, "strip: clean pool")
        held = self._pool if x_holdout is None else check_frames(x_holdout, "strip: holdout")
        self._clean_entropy = self.entropy(held)
        self.threshold = float(np.quantile(self._clean_entropy, self.frr))
        return self

    @torch.no_grad()
    def entropy(self, x) -> np.ndarray:
        x = check_frames(x, "strip: inputs")
        if not hasattr(self, "_pool"):
            raise ValueError("strip: call .fit(model, clean_samples) first")
        g = rng(self.seed)
        out = []
        per = max(1, self.batch_size // self.n_overlays)
        with inspection_mode(self._model):
            for s in batched(len(x), per):
                xb = x[s]
                idx = torch.randint(len(self._pool), (len(xb), self.n_overlays), generator=g)
                mixed = superimpose(xb[:, None], self._pool[idx], self.mode).flatten(0, 1)
                p = torch.softmax(self._model(mixed.to(device_of(self._model))).float().cpu(), 1).clamp_min(1e-12)
                h = -(p * p.log()).sum(1).view(len(xb), self.n_overlays).mean(1)
                out.append(h)
        return torch.cat(out).numpy()

    def __call__(self, x) -> InputScores:
        h = self.entropy(x)
        return InputScores(scores=-h, flagged=h < self.threshold, extra={"entropy": h, "threshold": self.threshold})

    def row_groups(self, scores: InputScores, triggered) -> list[dict]:
        """Row groups (:mod:`snnsec.bench`) for the entropy histograms: one ``strip_entropy``
        row per group (clean, triggered; value = mean, ``extra.entropies`` = every entropy in
        nats, to 4 decimals) and the ``strip_threshold``."""
        h = np.asarray(scores.extra["entropy"], dtype=np.float64)
        t = np.asarray(triggered).astype(bool)
        if t.shape != h.shape:
            raise ValueError(f"strip: {t.shape[0] if t.ndim else 0} triggered flags for {len(h)} inputs")
        groups = [{"metrics": {"strip_entropy": float(h[t == g].mean())},
                   "extra": {"triggered": bool(g), "entropies": np.round(h[t == g], 4).tolist()}}
                  for g in (False, True) if (t == g).any()]
        return groups + [{"metrics": {"strip_threshold": float(scores.extra["threshold"])}}]
