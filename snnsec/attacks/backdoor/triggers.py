"""Backdoor triggers as small transform objects (tonic style: a dataclass with ``__call__``).

A trigger applies to frames ``[T, P, H, W]`` or a batch ``[B, T, P, H, W]`` and returns new
frames. The fixed-pattern triggers (static, moving, smart, flash, framed, strobe) also
apply to raw events before framing (``trigger.events(...)``), inserting a real event stream.

Everything random about a trigger (a random position, the smart trigger's walk) is a
function of its ``seed`` and the sensor size only, so the poisoned training set and the
triggered test set always get the same trigger; the reference code drew them separately.
``trigger.to_spec()`` -> dict and :func:`trigger_from_spec` rebuild a trigger by name.

Every trigger class is registered by name in :data:`TRIGGERS` and carries capability flags that
callers read instead of names: ``learned`` (trained jointly with the victim, as the dynamic
generator: no poison rate, not made by name), ``injects_events`` (``trigger.events(...)`` inserts
it into raw events), ``needs_fit`` (fitted on the clean training frames first, as the smart
trigger) and ``has_weights`` (``trigger.save(path)`` writes state that a checkpoint keeps beside it).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

import numpy as np
import torch

from snnsec.attacks.backdoor import functional as F

TRIGGERS: dict[str, type] = {}


def register_trigger(cls):
    for flag in ("learned", "injects_events", "needs_fit", "has_weights"):
        if not isinstance(getattr(cls, flag, None), bool):
            raise ValueError(f"trigger {cls.__name__}: set the capability flag {flag!r} (a bool)")
    TRIGGERS[cls.name] = cls
    return cls


def trigger_class(name: str) -> type:
    """The registered trigger class called ``name`` (its flags tell how to build and apply it)."""
    if name not in TRIGGERS:
        raise ValueError(f"trigger: unknown name {name!r}; expected one of {trigger_names()}")
    return TRIGGERS[name]


def _as_tensor(frames) -> torch.Tensor:
    if isinstance(frames, np.ndarray):
        return torch.from_numpy(frames)
    if not isinstance(frames, torch.Tensor):
        raise ValueError(f"trigger input: expected a tensor or array of frames, got {type(frames).__name__}")
    return frames


@dataclass(frozen=True)
class PatternTrigger:
    """Base of the triggers that are a fixed mask per frame plus a polarity."""

    name: ClassVar[str] = ""
    learned: ClassVar[bool] = False
    injects_events: ClassVar[bool] = True
    needs_fit: ClassVar[bool] = False
    has_weights: ClassVar[bool] = False
    size: float = 0.1
    polarity: str = "on"
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "polarity", F.check_polarity(self.polarity))
        F.square_side(self.size, 100)

    # -- geometry -------------------------------------------------------------------
    def side(self, W: int) -> int:
        return F.square_side(self.size, W)

    def mask(self, T: int, H: int, W: int) -> torch.Tensor:
        """Where the trigger sits: bool ``[T, H, W]``."""
        raise NotImplementedError

    def effective_polarity(self) -> str:
        return self.polarity

    # -- application ----------------------------------------------------------------
    def __call__(self, frames):
        x = _as_tensor(frames)
        T, _, H, W = x.shape[-4:]
        return F.apply_pattern(x, self._cached_mask(T, H, W), self.effective_polarity())

    def events(self, events: np.ndarray, sensor_size, T: int, slicing: str = "events") -> np.ndarray:
        """Inject the trigger as synthetic events (see :func:`functional.inject_events`)."""
        W, H, _ = (int(v) for v in sensor_size)
        return F.inject_events(events, sensor_size, self._cached_mask(T, H, W), self.effective_polarity(), slicing)

    def _cached_mask(self, T: int, H: int, W: int) -> torch.Tensor:
        cache = self.__dict__.setdefault("_masks", {})
        key = (T, H, W)
        if key not in cache:
            cache[key] = self.mask(T, H, W)
        return cache[key]

    # -- spec -----------------------------------------------------------------------
    def to_spec(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = [list(e) if isinstance(e, tuple) else e for e in v]
        return {"name": self.name, **d}

    def _rng(self, salt: int, H: int, W: int) -> np.random.Generator:
        # Seeded by (seed, trigger kind, sensor) only: train and test draw the same numbers.
        return np.random.default_rng([int(self.seed), salt, H, W])


@register_trigger
@dataclass(frozen=True)
class StaticTrigger(PatternTrigger):
    """A square at a fixed position in every frame."""

    name: ClassVar[str] = "static"
    position: str = "top-left"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.position not in F.POSITIONS:
            raise ValueError(f"trigger position: expected one of {F.POSITIONS}, got {self.position!r}")

    def corner(self, H: int, W: int) -> tuple[int, int]:
        return F.corner_position(self.position, H, W, self.side(W), self._rng(1, H, W))

    def mask(self, T, H, W):
        return F.squares_mask([self.corner(H, W)] * T, H, W, self.side(W))


DIRECTIONS = ("horizontal", "vertical", "diagonal")


@register_trigger
@dataclass(frozen=True)
class MovingTrigger(StaticTrigger):
    """A square that steps through ``steps`` positions along a path, one step per frame,
    cycling; the last frame is left clean, as in the reference."""

    name: ClassVar[str] = "moving"
    direction: str = "horizontal"
    steps: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.direction not in DIRECTIONS:
            raise ValueError(f"moving trigger direction: expected one of {DIRECTIONS}, got {self.direction!r}")
        if int(self.steps) < 1:
            raise ValueError(f"moving trigger steps: expected >= 1, got {self.steps!r}")

    def path(self, T: int, H: int, W: int) -> list[tuple[int, int] | None]:
        s = self.side(W)
        x0, y0 = self.corner(H, W)
        # The reference's offsets along the path are 0, s+2, 2s+2 (not evenly spaced); we
        # keep them for 3 steps and continue with stride s+1 beyond, so squares never touch.
        offsets = [0, s + 2, 2 * s + 2] + [2 * s + 2 + k * (s + 1) for k in range(1, max(0, self.steps - 3) + 1)]
        offsets = offsets[: self.steps]
        # Paths run away from the nearest border: leftwards from the right half, upwards from the bottom half.
        sx = -1 if x0 > (W - s) / 2 else 1
        sy = -1 if y0 > (H - s) / 2 else 1
        dx = 1 if self.direction in ("horizontal", "diagonal") else 0
        dy = 1 if self.direction in ("vertical", "diagonal") else 0
        out: list[tuple[int, int] | None] = []
        for t in range(T):
            if t == T - 1 and T > 1:
                out.append(None)
                continue
            o = offsets[t % len(offsets)]
            x = min(max(x0 + sx * dx * o, 0), W - s)
            y = min(max(y0 + sy * dy * o, 0), H - s)
            out.append((x, y))
        return out

    def mask(self, T, H, W):
        return F.squares_mask(self.path(T, H, W), H, W, self.side(W))


@register_trigger
@dataclass(frozen=True)
class SmartTrigger(PatternTrigger):
    """A square that random-walks (``step`` px per frame) inside the most or least active
    of ``grid`` x ``grid`` regions, in the least (or most) frequent polarity pattern there.

    Region and polarity come from :meth:`fit` on the clean *training* frames, once; the
    fitted trigger stores them (``region``, ``pattern``) so the test set reuses them.
    With ``polarity="auto"`` the fitted pattern is used; anything else overrides it.
    """

    name: ClassVar[str] = "smart"
    needs_fit: ClassVar[bool] = True
    polarity: str = "auto"
    grid: int = 3
    region_choice: str = "most"  # most | least active region
    polarity_choice: str = "least"  # least | most frequent pattern in it
    step: int = 2
    # "reference": Sneaky Spikes' counts (see pattern_counts); "pixels": one count per pixel
    counting: str = "reference"
    region: int | None = None  # fitted: index r*grid + c
    pattern: str | None = None  # fitted polarity

    def __post_init__(self) -> None:
        if self.polarity != "auto":
            object.__setattr__(self, "polarity", F.check_polarity(self.polarity))
        F.square_side(self.size, 100)
        if self.region_choice not in ("most", "least") or self.polarity_choice not in ("most", "least"):
            raise ValueError("smart trigger: region_choice and polarity_choice must be 'most' or 'least'")
        if self.counting not in COUNTINGS:
            raise ValueError(f"smart trigger: counting must be one of {COUNTINGS}, got {self.counting!r}")

    @property
    def fitted(self) -> bool:
        return self.region is not None and self.pattern is not None

    def fit(self, frames: torch.Tensor) -> "SmartTrigger":
        """Measure activity on clean training frames ``[N, T, P, H, W]``; returns a fitted copy."""
        x = _as_tensor(frames)
        if x.dim() != 5:
            raise ValueError(f"smart trigger fit: expected frames [N, T, P, H, W], got {tuple(x.shape)}")
        stats = pattern_counts(x, self.grid, self.counting)  # [grid*grid, 4]
        activity = stats[:, 1:].sum(1)
        region = int(activity.argmax() if self.region_choice == "most" else activity.argmin())
        counts = stats[region]
        code = int(counts.argmin() if self.polarity_choice == "least" else counts.argmax())
        return replace(self, region=region, pattern=_CODES[code])

    def effective_polarity(self) -> str:
        if self.polarity != "auto":
            return self.polarity
        if self.pattern is None:
            raise ValueError("smart trigger: call fit(train_frames) first (region and polarity are measured on clean training data)")
        return self.pattern

    def region_box(self, H: int, W: int) -> tuple[int, int, int, int]:
        if self.region is None:
            raise ValueError("smart trigger: call fit(train_frames) first (region and polarity are measured on clean training data)")
        r, c = divmod(int(self.region), self.grid)
        ys = np.linspace(0, H, self.grid + 1).astype(int)
        xs = np.linspace(0, W, self.grid + 1).astype(int)
        return int(xs[c]), int(ys[r]), int(xs[c + 1]), int(ys[r + 1])

    def path(self, T: int, H: int, W: int) -> list[tuple[int, int]]:
        s = self.side(W)
        x0, y0, x1, y1 = self.region_box(H, W)
        xmax, ymax = max(x0, x1 - s), max(y0, y1 - s)
        rng = self._rng(3, H, W)
        x, y = int(rng.integers(x0, xmax + 1)), int(rng.integers(y0, ymax + 1))
        out = []
        for _ in range(T):
            out.append((x, y))
            x = int(np.clip(x + rng.integers(-self.step, self.step + 1), x0, xmax))
            y = int(np.clip(y + rng.integers(-self.step, self.step + 1), y0, ymax))
        return out

    def mask(self, T, H, W):
        return F.squares_mask(self.path(T, H, W), H, W, self.side(W))


# Polarity patterns in the reference's numbering: 0 erase, 1 on (ch1 only), 2 off (ch0 only), 3 both.
_CODES = ("erase", "on", "off", "both")
COUNTINGS = ("reference", "pixels")


def pattern_counts(frames: torch.Tensor, grid: int = 3, counting: str = "reference") -> torch.Tensor:
    """Per region of a ``grid`` x ``grid`` split, how often each polarity pattern occurs:
    ``[grid*grid, 4]`` in the order erase, on, off, both.

    ``"reference"`` counts as Sneaky Spikes' ``create_smart_trigger`` does, on the frame
    values themselves (count frames there): *on* and *off* are pixels with (0, 1) and
    (1, 0), but *erase* counts channel **values** equal to 0 and *both* channel values equal
    to 1. *both* is then at least *on* + *off*, so the least frequent pattern is never
    *both*, and a region's activity (on + off + both) counts a both-pixel three times.
    ``"pixels"`` counts each pixel once, in the pattern its two channels form (any value
    above 0 is a spike): the count the paper describes.
    """
    if counting not in COUNTINGS:
        raise ValueError(f"pattern counts: counting must be one of {COUNTINGS}, got {counting!r}")
    N, T, P, H, W = frames.shape
    if P == 1:
        ch0 = torch.zeros_like(frames[:, :, 0])
        ch1 = frames[:, :, 0]
    else:
        ch0, ch1 = frames[:, :, 0], frames[:, :, 1]
    ys = np.linspace(0, H, grid + 1).astype(int)
    xs = np.linspace(0, W, grid + 1).astype(int)
    out = torch.zeros(grid * grid, 4, dtype=torch.long)
    for r in range(grid):
        for c in range(grid):
            a = ch0[..., ys[r] : ys[r + 1], xs[c] : xs[c + 1]]
            b = ch1[..., ys[r] : ys[r + 1], xs[c] : xs[c + 1]]
            if counting == "reference":
                row = [int((a == 0).sum() + (b == 0).sum()), int(((a == 0) & (b == 1)).sum()),
                       int(((a == 1) & (b == 0)).sum()), int((a == 1).sum() + (b == 1).sum())]
            else:
                off, on = a > 0, b > 0
                row = [int((~off & ~on).sum()), int((on & ~off).sum()), int((off & ~on).sum()), int((on & off).sum())]
            out[r * grid + c] = torch.tensor(row)
    return out


def _window(T: int, start: int, length: int | None) -> range:
    start = int(start) % T if start < 0 else int(start)
    end = T if length is None else min(T, start + int(length))
    return range(start, end)


@register_trigger
@dataclass(frozen=True)
class FlashTrigger(PatternTrigger):
    """Flashy Backdoor's flash: the whole frame set to the polarity pattern on a window of
    ``length`` frames from ``start`` (a flashlight or laser burst)."""

    name: ClassVar[str] = "flash"
    polarity: str = "both"
    start: int = 0
    length: int = 3

    def mask(self, T, H, W):
        m = torch.zeros(T, H, W, dtype=torch.bool)
        for t in _window(T, self.start, self.length):
            m[t] = True
        return m


@register_trigger
@dataclass(frozen=True)
class FramedTrigger(StaticTrigger):
    """Flashy Backdoor's framed trigger: the static square only on ``length`` frames from ``start``."""

    name: ClassVar[str] = "framed"
    start: int = 0
    length: int = 3

    def mask(self, T, H, W):
        xy = self.corner(H, W)
        on = set(_window(T, self.start, self.length))
        return F.squares_mask([xy if t in on else None for t in range(T)], H, W, self.side(W))


@register_trigger
@dataclass(frozen=True)
class StrobeTrigger(StaticTrigger):
    """Flashy Backdoor's strobe: the static square in bursts of ``on`` frames, one burst
    starting every ``on + gap`` frames from ``start`` while inside ``length`` frames (``None``:
    to the end of the clip). As in the reference's ``get_attack_frames``, a burst that starts
    inside the window runs its full ``on`` frames (clipped at the clip's end): gap 1 and
    length 5 give frames 0, 2 and 4."""

    name: ClassVar[str] = "strobe"
    start: int = 0
    on: int = 1
    gap: int = 1
    length: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if int(self.on) < 1 or int(self.gap) < 0:
            raise ValueError(f"strobe trigger: expected on >= 1 and gap >= 0, got on={self.on}, gap={self.gap}")
        if int(self.start) < 0:
            raise ValueError(f"strobe trigger: expected start >= 0, got {self.start}")
        if self.length is not None and int(self.length) < 1:
            raise ValueError(f"strobe trigger: expected length >= 1 (or none for the whole clip), got {self.length}")

    def frames_on(self, T: int) -> list[int]:
        window_end = T if self.length is None else min(T, int(self.start) + int(self.length))
        period = int(self.on) + int(self.gap)
        return sorted({t for s in range(int(self.start), window_end, period) for t in range(s, min(T, s + int(self.on)))})

    def mask(self, T, H, W):
        xy = self.corner(H, W)
        on = set(self.frames_on(T))
        return F.squares_mask([xy if t in on else None for t in range(T)], H, W, self.side(W))


def trigger_names() -> list[str]:
    return sorted(TRIGGERS)


def make_trigger(name: str, **params):
    """Build a fixed-pattern trigger by name; unknown parameters are an error naming them."""
    cls = trigger_class(name)
    if cls.learned:
        raise ValueError(f"trigger {name!r} is learned with the model (run_backdoor with trigger={name!r}); "
                         "it is not made by name")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"trigger {name!r}: unknown parameter(s) {unknown}; expected some of {sorted(known)}")
    return cls(**params)


def trigger_from_spec(spec: dict[str, Any], *, base_dir=None):
    """Rebuild a trigger from ``to_spec()`` output (e.g. ``model.json['attack']['trigger']``).

    A dynamic trigger's generator weights are read from ``spec['weights']``, relative to
    ``base_dir`` when given.
    """
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"trigger spec: expected a dict with a 'name' field, got {spec!r}")
    cls = trigger_class(spec["name"])
    if cls.learned:
        return cls.from_spec(spec, base_dir=base_dir)
    return make_trigger(spec["name"], **{k: v for k, v in spec.items() if k != "name"})
