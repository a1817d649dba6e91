"""Functional core of the backdoor triggers.

Every frame trigger except the dynamic one is a fixed *pattern*: a boolean mask
``[T, H, W]`` saying where the square sits in each frame, and a polarity saying what the
two channels of those pixels are set to. Applying a pattern is then one ``torch.where``
over a whole batch, which keeps poisoning vectorised. The same mask drives event-level
injection, so frames made from injected events show the square the frame trigger draws.
"""

from __future__ import annotations

import numpy as np
import torch

from snnsec.data.frames import bin_index
from snnsec.data.spec import SLICINGS

POLARITIES = ("on", "off", "both", "erase")
POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right", "middle", "random")

# Channel c of a frame holds events with p == c (tonic's ToFrame), so channel 0 is OFF and
# channel 1 is ON. Values are (ch0, ch1), the Sneaky Spikes "polarity 0..3" table: the square
# overwrites both channels, it does not add to them.
_POLARITY_VALUES = {
    "erase": (0.0, 0.0),
    "on": (0.0, 1.0),
    "off": (1.0, 0.0),
    "both": (1.0, 1.0),
}
# Event polarities a trigger injects; erase injects none and removes events instead.
_EVENT_POLARITIES = {"erase": (), "on": (1,), "off": (0,), "both": (0, 1)}


def check_polarity(polarity: str) -> str:
    p = str(polarity).lower()
    if p not in POLARITIES:
        raise ValueError(f"trigger polarity: expected one of {POLARITIES}, got {polarity!r}")
    return p


def polarity_values(polarity: str, P: int) -> tuple[float, ...]:
    """What each of the P channels of a trigger pixel is set to."""
    p = check_polarity(polarity)
    if P == 2:
        return _POLARITY_VALUES[p]
    if P == 1:
        # A single-channel sensor has no ON/OFF distinction: any non-erase trigger fires it.
        return (0.0,) if p == "erase" else (1.0,)
    raise ValueError(f"trigger polarity: frames must have 1 or 2 polarity channels, got P={P}")


def event_polarities(polarity: str, P: int) -> tuple[int, ...]:
    p = check_polarity(polarity)
    if P == 1:
        return () if p == "erase" else (0,)
    return _EVENT_POLARITIES[p]


def square_side(size: float, width: int) -> int:
    """Side in pixels of a square that is ``size`` of the sensor width (at least 1 px)."""
    if not 0 < float(size) <= 1:
        raise ValueError(f"trigger size: expected a fraction of the sensor width in (0, 1], got {size!r}")
    # int() truncates as the reference does (0.1 * 34 -> 3 px); never below one pixel.
    return max(1, int(float(size) * width))


def corner_position(position: str, H: int, W: int, s: int, rng: np.random.Generator | None = None) -> tuple[int, int]:
    """Top-left corner ``(x, y)`` of an ``s`` x ``s`` square at a named position."""
    if position == "top-left":
        return 0, 0
    if position == "top-right":
        return W - s, 0
    if position == "bottom-left":
        return 0, H - s
    if position == "bottom-right":
        return W - s, H - s
    if position == "middle":
        return (W - s) // 2, (H - s) // 2
    if position == "random":
        if rng is None:
            raise ValueError("a random trigger position needs a random generator")
        return int(rng.integers(0, W - s + 1)), int(rng.integers(0, H - s + 1))
    raise ValueError(f"trigger position: expected one of {POSITIONS}, got {position!r}")


def squares_mask(path: list[tuple[int, int] | None], H: int, W: int, s: int) -> torch.Tensor:
    """Mask ``[T, H, W]`` with an ``s`` x ``s`` square at ``path[t] = (x, y)`` (None: clean frame)."""
    mask = torch.zeros(len(path), H, W, dtype=torch.bool)
    for t, xy in enumerate(path):
        if xy is None:
            continue
        x, y = int(xy[0]), int(xy[1])
        mask[t, max(0, y) : min(H, y + s), max(0, x) : min(W, x + s)] = True
    return mask


def apply_pattern(frames: torch.Tensor, mask: torch.Tensor, polarity: str) -> torch.Tensor:
    """Set the pixels under ``mask`` ``[T, H, W]`` to the polarity pattern.

    ``frames`` is ``[T, P, H, W]`` or any batch ``[..., T, P, H, W]``; the result is new.
    """
    if frames.dim() < 4:
        raise ValueError(f"frames: expected [..., T, P, H, W], got shape {tuple(frames.shape)}")
    T, P, H, W = frames.shape[-4:]
    if tuple(mask.shape) != (T, H, W):
        raise ValueError(f"trigger mask has shape {tuple(mask.shape)}, frames need (T, H, W) = {(T, H, W)}")
    values = torch.tensor(polarity_values(polarity, P), dtype=frames.dtype, device=frames.device)
    m = mask.to(frames.device)[:, None]  # [T, 1, H, W], broadcast over channels and batch
    return torch.where(m, values.view(P, 1, 1), frames)


def inject_events(
    events: np.ndarray,
    sensor_size: tuple[int, int, int],
    mask: torch.Tensor | np.ndarray,
    polarity: str,
    slicing: str = "events",
) -> np.ndarray:
    """Turn a frame pattern into real events: one synthetic event per trigger pixel, per
    polarity, per frame, placed in the middle of that frame's slice of the recording.

    Why the middle: with equal-count slicing the inserted events shift every bin edge, by
    ``t * S`` events for bin t when S events go in per frame. A group placed at the original
    bin centre still lands inside its new bin (its start moves by ``t * S``, its end by
    ``(t + 1) * S``), so the frames of the new stream show the square in exactly the frames
    the mask names. ``erase`` removes the events inside the masked pixels of each frame instead.
    Returns a new, time-sorted structured array with the input's dtype.
    """
    W, H, P = (int(v) for v in sensor_size)
    mask = torch.as_tensor(mask).bool().cpu().numpy()
    T = mask.shape[0]
    if mask.shape[1:] != (H, W):
        raise ValueError(f"trigger mask has shape {mask.shape}, sensor needs (T, {H}, {W})")
    n = len(events)
    if n == 0:
        raise ValueError("event injection: the recording has no events to place the trigger in")
    events = events[np.argsort(events["t"], kind="stable")]
    if check_polarity(polarity) == "erase":
        frame = np.minimum(bin_index(events, T, slicing), T - 1)
        keep = ~mask[frame, events["y"].astype(np.int64), events["x"].astype(np.int64)]
        return events[keep].copy()

    pols = event_polarities(polarity, P)
    t_all = events["t"]
    # Bin centres under snnsec.data.frames' (tonic's) slicing of the original stream.
    if slicing in ("events", "number"):
        width = max(n // T, 1)
        centres = t_all[np.minimum(np.arange(T) * width + width // 2, n - 1)]
    elif slicing == "time-zero":
        span = int(t_all[-1]) + 1
        centres = ((2 * np.arange(T) + 1) * span // (2 * T)).astype(t_all.dtype)
    elif slicing == "time":
        t0 = int(t_all[0])
        width = max((int(t_all[-1]) - t0) // T, 1)
        centres = (t0 + np.arange(T) * width + width // 2).astype(t_all.dtype)
    else:
        raise ValueError(f"slicing: expected one of {SLICINGS}, got {slicing!r}")
    ts, ys, xs = np.nonzero(mask)
    k = len(ts) * len(pols)
    new = np.zeros(k, dtype=events.dtype)
    if k:
        new["x"] = np.repeat(xs, len(pols))
        new["y"] = np.repeat(ys, len(pols))
        new["t"] = np.repeat(centres[ts], len(pols))
        new["p"] = np.tile(np.asarray(pols), len(ts))
    merged = np.concatenate([events, new])
    # Stable: originals stay in place and each injected group stays contiguous at its time.
    return merged[np.argsort(merged["t"], kind="stable")]
