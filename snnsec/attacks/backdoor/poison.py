"""The poisoning wrapper: which training samples carry the trigger, and with what label.

Two ways to use it, with identical results:
- as a dataset (``pds[i] -> (frames, label)``), one sample at a time;
- as ``batch_transform(x, y, idx)`` for :func:`snnsec.train.train`, which triggers the
  poisoned rows of a materialised batch in one vectorised call (the fast path).

``poisoned_indices`` is the ground truth that detection defenses are scored against.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

MODES = ("all-to-one", "all-to-all")
LABEL_MODES = ("dirty", "clean")


def _targets(ds) -> torch.Tensor:
    t = getattr(ds, "targets", None)
    if t is None:
        t = [int(ds[i][1]) for i in range(len(ds))]
    return torch.as_tensor(np.asarray(t) if not isinstance(t, torch.Tensor) else t).long()


def poison_label(y: torch.Tensor, target: int, mode: str, num_classes: int) -> torch.Tensor:
    """The label a triggered sample of true class ``y`` should receive."""
    y = torch.as_tensor(y).long()
    if mode == "all-to-one":
        return torch.full_like(y, int(target))
    if mode == "all-to-all":
        return (y + 1) % int(num_classes)
    raise ValueError(f"poisoning mode: expected one of {MODES}, got {mode!r}")


def select_poison_indices(labels, rate: float, *, target: int = 0, label_mode: str = "dirty", seed: int = 0,
                          exclude_target: bool = False) -> np.ndarray:
    """Deterministically choose ``round(rate * N)`` sample indices to poison (sorted).

    dirty-label: any sample (Sneaky Spikes' choice, target class included), or with
    ``exclude_target`` only samples of other classes (Flashy Backdoor's choice: a poisoned
    sample then always changes label);
    clean-label: only samples already of the target class, whose labels stay untouched.
    """
    y = np.asarray(labels)
    n_total = len(y)
    if not 0.0 <= float(rate) <= 1.0:
        raise ValueError(f"poison rate: expected a fraction in [0, 1], got {rate!r}")
    if label_mode not in LABEL_MODES:
        raise ValueError(f"poisoning label mode: expected one of {LABEL_MODES}, got {label_mode!r}")
    n = int(round(float(rate) * n_total))
    if exclude_target and label_mode != "dirty":
        raise ValueError("poisoning: exclude_target applies to dirty-label poisoning only (clean-label poisons the target class)")
    if label_mode == "clean":
        pool = np.flatnonzero(y == int(target))
    else:
        pool = np.flatnonzero(y != int(target)) if exclude_target else np.arange(n_total)
    if n > len(pool):
        raise ValueError(
            f"poison rate {rate}: {n} samples requested but only {len(pool)} are eligible "
            f"({'target-class samples for clean-label' if label_mode == 'clean' else 'non-target samples' if exclude_target else 'samples'})"
        )
    rng = np.random.default_rng(int(seed))
    return np.sort(rng.choice(pool, size=n, replace=False)).astype(np.int64)


class PoisonedDataset(Dataset):
    """A view of ``base`` where ``poisoned_indices`` carry ``trigger`` and a poisoned label.

    ``inject="frames"`` applies the trigger to frames; ``inject="events"`` inserts it into
    the raw events before framing (needs ``base.events(i)`` and ``base.spec``); those
    poisoned frames are built once, on construction, so batches stay vectorised.
    """

    def __init__(self, base, trigger, *, rate: float = 0.1, target: int = 0, mode: str = "all-to-one",
                 label_mode: str = "dirty", seed: int = 0, inject: str = "frames", num_classes: int | None = None,
                 exclude_target: bool = False):
        if mode not in MODES:
            raise ValueError(f"poisoning mode: expected one of {MODES}, got {mode!r}")
        if label_mode == "clean" and mode != "all-to-one":
            raise ValueError("clean-label poisoning needs mode='all-to-one' (the samples keep their own label)")
        if exclude_target and mode != "all-to-one":
            raise ValueError("poisoning: exclude_target needs mode='all-to-one' (all-to-all has no single target)")
        if inject not in ("frames", "events"):
            raise ValueError(f"poisoning inject: expected 'frames' or 'events', got {inject!r}")
        self.base, self.trigger = base, trigger
        self.rate, self.target, self.mode = float(rate), int(target), mode
        self.label_mode, self.seed, self.inject = label_mode, int(seed), inject
        self.exclude_target = bool(exclude_target)
        spec = getattr(base, "spec", None)
        self.num_classes = int(num_classes or (spec.num_classes if spec is not None and spec.num_classes else 0) or int(_targets(base).max()) + 1)
        clean_targets = _targets(base)
        self.clean_targets = clean_targets
        self.poisoned_indices = select_poison_indices(clean_targets.numpy(), rate, target=target, label_mode=label_mode, seed=seed,
                                                      exclude_target=exclude_target)
        self.is_poisoned = torch.zeros(len(base), dtype=torch.bool)
        self.is_poisoned[torch.from_numpy(self.poisoned_indices)] = True
        new = clean_targets.clone()
        if label_mode == "dirty":
            idx = torch.from_numpy(self.poisoned_indices)
            new[idx] = poison_label(clean_targets[idx], target, mode, self.num_classes)
        self.targets = new
        self._event_frames: dict[int, torch.Tensor] = {}
        if inject == "events":
            self._event_frames = {int(i): self._frames_from_events(int(i)) for i in self.poisoned_indices}

    def _frames_from_events(self, i: int) -> torch.Tensor:
        from snnsec.data.frames import to_frames

        spec = self.base.spec
        ev = self.trigger.events(self.base.events(i), spec.sensor_size, spec.T, spec.slicing)
        return torch.as_tensor(to_frames(ev, spec.sensor_size, spec.T, spec.slicing, spec.binary), dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, _ = self.base[i]
        if self.is_poisoned[i]:
            x = self._event_frames[int(i)] if self.inject == "events" else self.trigger(torch.as_tensor(x))
        return x, int(self.targets[i])

    def batch_transform(self, x: torch.Tensor, y: torch.Tensor, idx) -> tuple[torch.Tensor, torch.Tensor]:
        """Poison the rows of a clean batch whose dataset indices ``idx`` are poisoned."""
        idx = torch.as_tensor(idx).long().cpu()
        rows = self.is_poisoned[idx]
        if not bool(rows.any()):
            return x, y
        x = x.clone()
        if self.inject == "events":
            x[rows.to(x.device)] = torch.stack([self._event_frames[int(i)] for i in idx[rows]]).to(x)
        else:
            x[rows.to(x.device)] = self.trigger(x[rows.to(x.device)])
        y = self.targets[idx].to(y.device, y.dtype)
        return x, y

    @property
    def spec(self):
        return getattr(self.base, "spec", None)

