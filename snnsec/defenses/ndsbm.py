"""NDSBM, the mitigation of TMPBD (arXiv 2510.06629; code ``Valkyriean/TMPBD``, ``mitigate.py``,
algorithm ``clamping``): repair.

Before the spiking neurons of every conv block, the block's input current (conv -> BN output)
is clamped to a learnable range ``[low, high]`` per time step and channel, both starting 10
away from 1 (the reference's ``1 -/+ init_dis``). The ranges are tuned on a small clean,
unlabelled set so that the model's temporal membrane potential (the per-class potential of its
last layer averaged over time, the quantity TMPBD's detection reads) stays what the original
model gives, while the penalty ``penalty * (||low|| + ||high||)`` pulls the bounds toward zero.
Clean inputs need only part of each range; a trigger drives some channels far outside it, and
the tightened clamps cut those currents off. The caller's labels only balance the set
(``samples_per_class`` per class, the reference's ``--nsample``).

Where we differ from the reference, and why:
- The reference tunes with every module in train mode, so BatchNorm normalises each sample by
  its own statistics and updates its running ones; here the model stays in eval mode, so the
  clamps are the only thing that changes (and the original's potentials are computed once).
  Measured on a static-trigger csnn (N-MNIST subset, 20 clean samples per class): with train-mode
  BatchNorm the tuned model fell to CA 0.12 (ASR 0.97); in eval mode CA stayed 0.955 (ASR 0.967).
- "Conv block" is any spiking neuron fed a feature map (``[T, B, C, H, W]`` multi-step or
  ``[B, C, H, W]`` single-step); the reference lists the five blocks of its gesture network by
  index. A single-step neuron gets one range per channel for all time steps.
- The target is the harness's per-class membrane tap (the logits for models without one); the
  reference takes the last LIF layer's ``v_seq`` before its voting layer's pooling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from snnsec.defenses.base import COUNT, NONNEGATIVE, POSITIVE, Limit, Repair, RepairDefense, check_frames, register, rng
from snnsec.defenses.membrane_margin import class_potentials
from snnsec.harness import clone, device_of, spiking_neurons


class BlockClamp(nn.Module):
    """A learnable ``[low, high]`` range on one spiking neuron's input, applied as a forward pre-hook."""

    def __init__(self, shape: tuple[int, ...], init_range: float) -> None:
        super().__init__()
        self.low = nn.Parameter(torch.full(shape, 1.0 - init_range))
        self.high = nn.Parameter(torch.full(shape, 1.0 + init_range))

    def clamp_input(self, module: nn.Module, args: tuple) -> tuple:
        return (torch.clamp(args[0], self.low, self.high), *args[1:])


def _feature_map_neurons(model: nn.Module, probe: torch.Tensor) -> list[tuple[nn.Module, tuple[int, ...]]]:
    """The spiking neurons fed a feature map, with the shape of one range for each."""
    shapes: dict[nn.Module, torch.Size] = {}
    neurons = [m for _, m, _ in spiking_neurons(model)]

    def record(module: nn.Module, args: tuple) -> None:
        shapes.setdefault(module, args[0].shape)

    hooks = [m.register_forward_pre_hook(record) for m in neurons]
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for h in hooks:
            h.remove()
    found = []
    for m in neurons:
        shape = shapes.get(m)
        multi = getattr(m, "step_mode", "s") == "m"
        if shape is None or len(shape) != (5 if multi else 4):
            continue
        # multi-step [T, B, C, H, W]: one range per (t, c); single-step [B, C, H, W]: per c
        found.append((m, (shape[0], 1, shape[2], 1, 1) if multi else (1, shape[1], 1, 1)))
    return found


def _balanced(y: torch.Tensor, per_class: int, generator: torch.Generator) -> torch.Tensor:
    picks = [idx[torch.randperm(len(idx), generator=generator)[:per_class]]
             for idx in (torch.nonzero(y == c).flatten() for c in y.unique())]
    return torch.cat(picks).sort().values


@register
@dataclass
class NDSBM(RepairDefense):
    name = "ndsbm"

    limits: ClassVar[dict[str, Limit]] = {
        "epochs": COUNT, "lr": POSITIVE, "penalty": NONNEGATIVE, "init_range": POSITIVE,
        "samples_per_class": COUNT, "batch_size": COUNT}

    # The reference's defaults: --nstep 50 epochs of Adam at lr 0.1, c = 1e-5, init_dis 10,
    # --nsample 20 clean samples per class, batch size 1.
    epochs: int = 50
    lr: float = 0.1
    penalty: float = 1e-5
    init_range: float = 10.0
    samples_per_class: int = 20
    batch_size: int = 1
    seed: int = 0
    progress: bool = False

    def __call__(self, model, x_clean, y_clean) -> Repair:
        from tqdm.auto import tqdm

        x = check_frames(x_clean, "ndsbm: clean samples")
        y = torch.as_tensor(y_clean).long()
        if len(x) != len(y) or not len(x):
            raise ValueError(f"ndsbm: expected as many labels as clean samples (at least one), got {len(x)} and {len(y)}")
        g = rng(self.seed)
        x = x[_balanced(y, self.samples_per_class, g)]
        K = int(model.num_classes)
        repaired = clone(model).eval()
        for p in repaired.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            target = torch.cat([class_potentials(repaired, x[i:i + 64], K)[0] for i in range(0, len(x), 64)])
        blocks = _feature_map_neurons(repaired, x[:1].to(device_of(repaired)))
        if not blocks:
            raise ValueError(f"ndsbm: {type(model).__name__} has no spiking neuron fed a feature map (conv block) to clamp")
        # held by the model, so the ranges travel with it (state_dict, deep copies, device moves)
        repaired.ndsbm_clamps = nn.ModuleList(BlockClamp(shape, self.init_range)
                                              for _, shape in blocks).to(device_of(repaired))
        for (neuron, _), clamp in zip(blocks, repaired.ndsbm_clamps):
            neuron.register_forward_pre_hook(clamp.clamp_input)
        params = list(repaired.ndsbm_clamps.parameters())
        opt = torch.optim.Adam(params, lr=self.lr)
        losses = []
        for _ in tqdm(range(self.epochs), desc="ndsbm", leave=False, disable=not self.progress):
            order = torch.randperm(len(x), generator=g)
            total = 0.0
            for i in range(0, len(x), self.batch_size):
                idx = order[i:i + self.batch_size]
                v = class_potentials(repaired, x[idx], K)[0]
                loss = F.mse_loss(v, target[idx]) + self.penalty * sum(p.norm() for p in params)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            losses.append(total / len(x))
        for p in params:
            p.requires_grad_(False)
        widths = [float((c.high - c.low).clamp_min(0).mean()) for c in repaired.ndsbm_clamps]
        return Repair(repaired, extra={"blocks": len(blocks), "samples": len(x), "mean_range_width": widths,
                                       "loss_first": losses[0], "loss_last": losses[-1]})
