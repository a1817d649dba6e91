"""Fine-Pruning (Liu, Dolan-Gavitt, Garg, RAID 2018): repair.

Rank the output channels of the last convolution by their mean activation on clean data,
prune the most dormant first (in steps of 1% of the channels, as BackdoorBench) while clean
accuracy stays within ``max_acc_drop`` (relative, BackdoorBench's 10%) of the original, then
fine-tune on the clean data with the pruned channels held at zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from snnsec.defenses._train import accuracy, fit
from snnsec.defenses.base import (
    COUNT, FRACTION, NONNEGATIVE_COUNT, OPEN_FRACTION, POSITIVE, RepairDefense, Limit, Repair, check_frames, register)
from snnsec.harness import clone, inspection_mode


def last_conv(model) -> torch.nn.Conv2d:
    # The harness may name it; otherwise the last Conv2d in module order is the last conv layer
    # of every feed-forward architecture we ship (spikingjelly's layer.Conv2d subclasses it).
    finder = getattr(model, "last_conv", None)
    if callable(finder):
        return finder()[1]
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    if not convs:
        raise ValueError(f"fine-pruning: {type(model).__name__} has no Conv2d layer to prune")
    return convs[-1]


@register
@dataclass
class FinePruning(RepairDefense):
    name = "fine-pruning"

    limits: ClassVar[dict[str, Limit]] = {
        "max_acc_drop": FRACTION, "step": OPEN_FRACTION, "finetune_epochs": NONNEGATIVE_COUNT, "lr": POSITIVE,
        "batch_size": COUNT}

    max_acc_drop: float = 0.1
    step: float = 0.01
    # 5 epochs instead of BackdoorBench's 100: the clean subset is small and CPU time scarce.
    finetune_epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 32
    seed: int = 0
    progress: bool = False

    def __call__(self, model, x_clean, y_clean) -> Repair:
        x = check_frames(x_clean, "fine-pruning: clean samples")
        y = torch.as_tensor(y_clean).long()
        model = clone(model)
        conv = last_conv(model)
        C = conv.out_channels
        acts = []
        hook = conv.register_forward_hook(lambda m, i, o: acts.append(o.detach().transpose(0, -3).reshape(o.shape[-3], -1).mean(1).cpu()))
        base_acc = accuracy(model, x, y)
        hook.remove()
        order = torch.stack(acts).mean(0).argsort()  # most dormant first
        keep = torch.ones(C)
        conv.register_forward_hook(lambda m, i, o: o * keep.view(-1, 1, 1).to(o))  # o's device and dtype
        n_step = max(1, int(round(self.step * C)))
        pruned, acc = 0, base_acc
        with inspection_mode(model):
            for n in range(n_step, C, n_step):
                keep.fill_(1)
                keep[order[:n]] = 0
                a = accuracy(model, x, y)
                if a < base_acc * (1 - self.max_acc_drop):
                    break
                pruned, acc = n, a
            keep.fill_(1)
            keep[order[:pruned]] = 0
        fit(model, x, y, epochs=self.finetune_epochs, lr=self.lr, batch_size=self.batch_size, seed=self.seed,
            progress=self.progress)
        # The mask hook stays on the returned copy: pruned channels remain pruned.
        return Repair(model=model, extra={"pruned_channels": int(pruned), "channels": int(C), "acc_after_prune": acc,
                                          "acc_before": base_acc})
