"""Spectral Signatures (Tran, Li, Madry, NeurIPS 2018) per class.

Per label: centre the representation, take the top right-singular vector v, score each
sample by its squared projection on v, and flag the top ``1.5 * eps`` fraction of the class
(eps = the expected poison rate). For AUROC across classes the scores are divided by the
class's median score, so one class's scale does not swamp another's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from snnsec.defenses._features import representation
from snnsec.defenses.base import FRACTION, POSITIVE, DatasetScores, DatasetInspection, Limit, check_frames, register


@register
@dataclass
class SpectralSignatures(DatasetInspection):
    name = "ss"

    limits: ClassVar[dict[str, Limit]] = {"eps": FRACTION, "eps_multiplier": POSITIVE}

    rep: str = "features"
    eps: float = 0.1  # expected poison rate (the attack default); 1.5x of it is removed per class
    eps_multiplier: float = 1.5

    def __call__(self, model, x_train, y_train) -> DatasetScores:
        x = check_frames(x_train, "ss: training samples")
        y = torch.as_tensor(y_train).long().numpy()
        feats = representation(model, x, self.rep).numpy().astype(np.float64)
        scores = np.zeros(len(y))
        flagged = np.zeros(len(y), dtype=bool)
        for c in np.unique(y):
            idx = np.flatnonzero(y == c)
            f = feats[idx] - feats[idx].mean(0)
            if len(idx) < 2 or not np.any(f):
                continue
            v = np.linalg.svd(f, full_matrices=False)[2][0]
            s = (f @ v) ** 2
            cut = np.quantile(s, 1 - min(1.0, self.eps_multiplier * self.eps))
            flagged[idx] = s > cut
            scores[idx] = s / max(float(np.median(s)), 1e-12)
        return DatasetScores(scores=scores, flagged=flagged)
