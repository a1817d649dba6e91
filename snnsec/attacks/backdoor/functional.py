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

from snnsec.data.events import validate_events
from snnsec.data.frames import frame_bounds
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
    """Write a frame pattern into a recording as real events.

    The contract: framing the result with ``slicing`` into binary frames gives exactly
    ``apply_pattern(frames of the clean recording, mask, polarity)``. Per frame t, the events
    on the masked pixels are removed (the frame trigger overwrites both channels) and one
    synthetic event per masked pixel and pattern polarity is added, timed inside frame t.

    What keeps the frame boundaries where they were:

    * ``events``/``number`` (equal event counts): a trigger adds different numbers of events
      to different frames (a flash fills three frames and leaves the rest), which would move
      every later bin edge. Each frame is therefore padded to the same count with copies of
      events it already holds (same pixel, polarity and time), invisible in binary frames.
      In count frames (``binary=False``) those copies raise counts outside the mask; inside
      the mask every cell is exactly 1, as the frame trigger writes.
    * ``time``: the edges hang on the first event; when the trigger removes it, frame 0's
      new events take its timestamp. ``time-zero``: the same for the last event.

    Raises ``ValueError`` where no event stream can show the pattern: an ``erase`` that
    empties a frame under count slicing, or a recording too short for its frames.
    Returns a new, time-sorted structured array with the input's dtype.
    """
    W, H, P = (int(v) for v in sensor_size)
    mask = torch.as_tensor(mask).bool().cpu().numpy()
    T = mask.shape[0]
    if mask.ndim != 3 or mask.shape[1:] != (H, W):
        raise ValueError(f"trigger mask has shape {mask.shape}, sensor needs (T, {H}, {W})")
    if slicing not in SLICINGS:
        raise ValueError(f"slicing: expected one of {SLICINGS}, got {slicing!r}")
    validate_events(events, sensor_size, source="event injection")
    n = len(events)
    if n < T:
        raise ValueError(f"event injection: the recording has {n} events, fewer than its {T} frames; "
                         "there is no frame to place the trigger in")
    pols = event_polarities(polarity, P)
    counted = slicing in ("events", "number")
    t = events["t"].astype(np.int64)
    bounds = frame_bounds(events, T, slicing)  # frame f is events[bounds[f]:bounds[f + 1]]
    used = int(bounds[T])
    frame = np.repeat(np.arange(T), np.diff(bounds))
    hit = np.zeros(n, dtype=bool)
    hit[:used] = mask[frame, events["y"][:used].astype(np.int64), events["x"][:used].astype(np.int64)]
    anchor = {"time": (0, 0), "time-zero": (T - 1, n - 1)}.get(slicing)

    parts = []
    for f in range(T):
        chunk = events[bounds[f] : bounds[f + 1]]
        kept = chunk[~hit[bounds[f] : bounds[f + 1]]]
        ys, xs = np.nonzero(mask[f])
        new = np.zeros(len(ys) * len(pols), dtype=events.dtype)
        new["x"] = np.repeat(xs, len(pols))
        new["y"] = np.repeat(ys, len(pols))
        new["p"] = np.tile(np.asarray(pols, dtype=np.int64), len(ys))
        new["t"] = _inside_frame(t, f, T, slicing, chunk)
        if anchor is not None and anchor[0] == f and hit[anchor[1]]:
            # the removed event fixed the time axis: something must keep its timestamp
            if len(new):
                new["t"] = t[anchor[1]]
            elif len(kept):
                kept = np.concatenate([kept, kept[:1]])
                kept["t"][-1] = t[anchor[1]]
            else:
                raise ValueError(f"event injection: erasing frame {f} removes the event that fixes the "
                                 f"'{slicing}' time axis and leaves nothing to keep its timestamp")
        parts.append([kept, new])

    if counted:
        sizes = np.array([len(k) + len(nw) for k, nw in parts])
        if (sizes == 0).any():
            raise ValueError(f"event injection: the trigger empties frame {int(np.argmin(sizes))}, which no event "
                             f"stream can show under '{slicing}' slicing (equal event counts per frame); "
                             "use slicing 'time' or a frame-level trigger")
        width = int(sizes.max()) if slicing == "events" else max(int(sizes[:-1].max(initial=0)), int(sizes[-1]) - T + 1)
        for f, (kept, new) in enumerate(parts):
            goal = max(width, int(sizes[f])) if (slicing == "number" and f == T - 1) else width
            source = kept if len(kept) else new
            parts[f].append(np.resize(source, goal - int(sizes[f])))

    out = []
    for pieces in parts:
        merged = np.concatenate(pieces)
        out.append(merged[np.argsort(merged["t"], kind="stable")])
    out.append(events[bounds[T]:])  # the tail the slicing drops, unchanged
    result = np.concatenate(out)
    want = np.cumsum([0, *(len(o) for o in out[:T])])
    if not np.array_equal(frame_bounds(result, T, slicing), want):
        raise ValueError(f"event injection: the recording ({n} events over {int(t[-1] - t[0])} us) is too short "
                         f"to hold {T} '{slicing}' frames with the trigger in them")
    return result


def _inside_frame(t: np.ndarray, f: int, T: int, slicing: str, chunk: np.ndarray) -> int:
    """A timestamp that frame ``f`` owns: its middle event under count slicing, the middle
    of its window under time slicing."""
    if slicing in ("events", "number"):
        return int(chunk["t"][len(chunk) // 2])
    if slicing == "time-zero":
        span = int(t[-1]) + 1
        return (2 * f + 1) * span // (2 * T)
    width = max((int(t[-1]) - int(t[0])) // T, 1)
    return int(t[0]) + f * width + width // 2
