"""Training settings and per-dataset defaults, importable without torch (``snnsec train
--help`` lists them; :mod:`snnsec.train` uses them)."""

from __future__ import annotations

from typing import Any

LOSSES = ("ce", "mse-rate")
# snnsec.compress's methods, named here so that `snnsec compress --help` imports no torch
COMPRESS_METHODS = ("binary", "quantize", "prune", "soft-prune")
# cosine: annealed to 0 over every optimiser step; cosine-epoch: one step per epoch
# (CosineAnnealingLR(T_max=epochs) stepped after each epoch, as the Sneaky Spikes reference)
SCHEDULES = ("cosine", "cosine-epoch", "constant")
# Training augmentation (see the module doc). Polarity flips are 0: ON/OFF order encodes the
# direction of motion, which classes such as left/right hand waves depend on.
# STCL's two views (snnsec.data.augment.EventAugment documents each field)
AUGMENT_DEFAULTS = {"max_shift": 2, "drop": 0.1, "time_jitter": 0.1, "flip_polarity": 0.5}
TRAIN_AUGMENT = {"max_shift": 2, "drop": 0.1, "time_jitter": 0.1, "flip_polarity": 0.0}


# Defaults of ``snnsec train`` per dataset, chosen so that the plain command reaches the
# project's acceptance (>= 95 % test accuracy with csnn) in about 5 minutes on 2 CPU cores.
# Measured with csnn, seed 0: ndigits 98.6 % (test accuracy >= 95 % from epoch 4 on),
# N-MNIST subset 97 % on its 100-sample test split, about 5-7 s per epoch.
_RECOMMENDED = {
    "ndigits": {"T": 16, "epochs": 10, "batch_size": 32, "lr": 1e-3},
    "nmnist": {"T": 16, "epochs": 10, "batch_size": 32, "lr": 1e-3},
}
_GENERIC = {"T": 16, "epochs": 10, "batch_size": 32, "lr": 1e-3}


def recommended(data: str | None = None) -> dict[str, Any]:
    """Training defaults (T, epochs, batch_size, lr) for dataset ``data``; all of them without it."""
    if data is None:
        return {k: dict(v) for k, v in _RECOMMENDED.items()}
    return dict(_RECOMMENDED.get(data.removesuffix("-resplit"), _GENERIC))
