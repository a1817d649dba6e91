"""Anti-Backdoor Learning (Li et al., NeurIPS 2021): repair by training on the poisoned set.

1. Isolation: train with the Flooding loss ``|CE - b| + b`` (b = 0.5) for ``tuning_epochs``;
   poisoned samples are learned fastest, so they reach the lowest loss.
2. Isolate the ``isolation_ratio`` (1%) lowest-loss samples.
3. Keep training on the rest (``finetuning_epochs``).
4. Unlearn: gradient ascent (``-CE``) on the isolated samples for ``unlearning_epochs``.

Starts from the model given (a fresh one for the original protocol).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from snnsec.defenses._train import fit, per_sample_loss
from snnsec.defenses.base import (
    COUNT, NONNEGATIVE, NONNEGATIVE_COUNT, OPEN_FRACTION, POSITIVE, RepairDefense, Limit, Repair, check_frames, register)
from snnsec.harness import clone


@register
@dataclass
class ABL(RepairDefense):
    name = "abl"
    # ABL isolates and unlearns the poisoned samples of the suspect training set, training an
    # untrained copy of the architecture on it
    needs_training_set: ClassVar[bool] = True
    needs_fresh_model: ClassVar[bool] = True

    limits: ClassVar[dict[str, Limit]] = {
        "isolation_ratio": OPEN_FRACTION, "flooding": NONNEGATIVE, "tuning_epochs": COUNT,
        "finetuning_epochs": NONNEGATIVE_COUNT, "unlearning_epochs": COUNT, "lr": POSITIVE, "unlearning_lr": POSITIVE,
        "batch_size": COUNT}

    isolation_ratio: float = 0.01
    flooding: float = 0.5
    # Epoch counts scaled from the original 10 / 60 / 5 to what 2 CPU cores afford; the
    # isolation phase keeps its share of the budget.
    tuning_epochs: int = 5
    finetuning_epochs: int = 5
    unlearning_epochs: int = 5
    lr: float = 1e-3
    # The original's hard-coded unlearning lr (1e-4 for SGD); Adam here, so the same order.
    unlearning_lr: float = 1e-4
    batch_size: int = 32
    seed: int = 0
    progress: bool = False

    def __call__(self, model, x_train, y_train) -> Repair:
        x = check_frames(x_train, "abl: training samples")
        y = torch.as_tensor(y_train).long()
        model = clone(model)
        b = self.flooding
        fit(model, x, y, epochs=self.tuning_epochs, lr=self.lr, batch_size=self.batch_size, seed=self.seed,
            loss_fn=lambda lo, yy: (F.cross_entropy(lo, yy) - b).abs() + b, progress=self.progress)
        losses = per_sample_loss(model, x, y)
        n_iso = max(1, int(round(self.isolation_ratio * len(x))))
        iso = losses.argsort()[:n_iso]
        rest = torch.ones(len(x), dtype=torch.bool)
        rest[iso] = False
        fit(model, x[rest], y[rest], epochs=self.finetuning_epochs, lr=self.lr, batch_size=self.batch_size,
            seed=self.seed + 1, progress=self.progress)
        before = float(per_sample_loss(model, x[iso], y[iso]).mean())
        fit(model, x[iso], y[iso], epochs=self.unlearning_epochs, lr=self.unlearning_lr, batch_size=self.batch_size,
            seed=self.seed + 2, loss_fn=lambda lo, yy: -F.cross_entropy(lo, yy), progress=self.progress)
        after = float(per_sample_loss(model, x[iso], y[iso]).mean())
        return Repair(model=model, extra={"isolated": iso.sort().values.tolist(), "isolated_loss_before_unlearning": before,
                                          "isolated_loss_after_unlearning": after})
