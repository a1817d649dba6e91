"""Activation Clustering (Chen et al., 2018) per class, on event-model representations.

Per label: PCA of the chosen representation to 10 dims, 2-means, and the smaller cluster is
poison when its relative size is below 0.35 (ART's ``analyze_by_relative_size``; the plain
"smaller" rule would flag a cluster in every clean class too). The continuous score for
AUROC is how much closer a sample sits to the small cluster than to the large one,
``(d_large - d_small) / (d_large + d_small)``, weighted by ``1 - 2 * relative size`` so an
even split (a clean class cut in two) scores near zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from snnsec.defenses._features import representation
from snnsec.defenses.base import COUNT, FRACTION, DatasetScores, DatasetInspection, Limit, check_frames, register


@register
@dataclass
class ActivationClustering(DatasetInspection):
    name = "ac"

    limits: ClassVar[dict[str, Limit]] = {"nb_dims": COUNT, "size_threshold": FRACTION}

    rep: str = "features"
    nb_dims: int = 10
    size_threshold: float = 0.35
    seed: int = 0

    def __call__(self, model, x_train, y_train) -> DatasetScores:
        from sklearn.cluster import KMeans
        from sklearn.decomposition import PCA

        x = check_frames(x_train, "ac: training samples")
        y = torch.as_tensor(y_train).long().numpy()
        feats = representation(model, x, self.rep).numpy().astype(np.float64)
        scores = np.zeros(len(y))
        flagged = np.zeros(len(y), dtype=bool)
        sizes = {}
        for c in np.unique(y):
            idx = np.flatnonzero(y == c)
            f = feats[idx]
            if len(idx) < 4 or np.allclose(f, f[0]):
                continue
            d = min(self.nb_dims, f.shape[1], len(idx) - 1)
            z = PCA(n_components=d, random_state=self.seed).fit_transform(f)
            km = KMeans(n_clusters=2, n_init=10, random_state=self.seed).fit(z)
            counts = np.bincount(km.labels_, minlength=2)
            small = int(np.argmin(counts))
            rel = counts[small] / len(idx)
            dist = np.linalg.norm(z[:, None] - km.cluster_centers_[None], axis=2)
            s = (dist[:, 1 - small] - dist[:, small]) / (dist.sum(1) + 1e-12)
            scores[idx] = s * (1 - 2 * rel)
            flagged[idx] = (km.labels_ == small) & (rel < self.size_threshold)
            sizes[int(c)] = float(rel)
        return DatasetScores(scores=scores, flagged=flagged, extra={"small_cluster_fraction": sizes})
