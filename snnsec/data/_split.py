"""Fixed stratified splits, for datasets that ship without a (usable) one."""

from __future__ import annotations

import numpy as np


def stratified_split(labels, *, test_fraction: float | None = None, test_per_class: int | None = None,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(train_idx, test_idx)``: per class, a seeded permutation of that class's
    samples (in their given order) puts the first ``test_per_class`` (or
    ``round(test_fraction * n_class)``) into test. numpy's PCG64 stream is stable across
    versions, so the split is the same on every machine.
    """
    if (test_fraction is None) == (test_per_class is None):
        raise ValueError("stratified_split: give exactly one of test_fraction, test_per_class")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = test_per_class if test_per_class is not None else int(round(test_fraction * len(idx)))
        if k >= len(idx):
            raise ValueError(f"stratified_split: class {c} has {len(idx)} samples, cannot hold out {k}")
        test.append(idx[rng.permutation(len(idx))[:k]])
    test_idx = np.sort(np.concatenate(test)) if test else np.zeros(0, dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    return train_idx, test_idx
