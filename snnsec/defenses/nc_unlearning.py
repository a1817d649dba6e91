"""NC unlearning: fine-tune on clean inputs of which a fraction are stamped with the trigger
Neural Cleanse reversed, keeping their correct labels (Wang et al. 2019; BackdoorBench's
``unlearning_ratio`` 0.2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from snnsec.defenses._train import fit
from snnsec.defenses.base import COUNT, FRACTION, POSITIVE, RepairDefense, Limit, Repair, check_frames, register
from snnsec.defenses.neural_cleanse import NeuralCleanse, stamp
from snnsec.harness import clone


@register
@dataclass
class NCUnlearning(RepairDefense):
    name = "nc-unlearning"

    limits: ClassVar[dict[str, Limit]] = {"ratio": FRACTION, "epochs": COUNT, "lr": POSITIVE, "batch_size": COUNT}

    ratio: float = 0.2
    # 5 epochs on the small clean subset instead of BackdoorBench's 100.
    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 32
    seed: int = 0
    nc: dict = field(default_factory=dict)  # NeuralCleanse parameters
    progress: bool = False

    def __call__(self, model, x_clean, y_clean, detection=None) -> Repair:
        """``detection``: a Neural Cleanse result to reuse; run one if absent. Unlearns the
        flagged target's trigger, or (nothing flagged) the smallest-norm label's."""
        x = check_frames(x_clean, "nc-unlearning: clean samples")
        y = torch.as_tensor(y_clean).long()
        if detection is None:
            detection = NeuralCleanse(**{"seed": self.seed, **self.nc})(model, x)
        norms = detection.evidence["l1_norms"]
        classes = detection.evidence["classes"]
        k = classes.index(detection.target) if detection.target is not None else min(range(len(norms)), key=norms.__getitem__)
        mask, pattern = detection.artifacts["masks"][k], detection.artifacts["patterns"][k]
        model = clone(model)
        g = torch.Generator().manual_seed(self.seed)
        chosen = torch.zeros(len(x), dtype=torch.bool)
        chosen[torch.randperm(len(x), generator=g)[: int(round(self.ratio * len(x)))]] = True

        def transform(xb, yb, idx):
            sel = chosen[idx]
            if sel.any():
                xb = xb.clone()
                xb[sel] = stamp(xb[sel], mask, pattern)
            return xb, yb

        fit(model, x, y, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, seed=self.seed, transform=transform,
            progress=self.progress)
        return Repair(model=model, extra={"unlearned_label": int(classes[k]), "flagged": bool(detection.backdoored)})
