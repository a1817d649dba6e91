"""Event streams: the one in-memory format, its validation, the 5-byte file reader, statistics.

An event stream is a tonic structured array with fields ``x``, ``y``, ``t`` (microseconds)
and ``p``, plus a sensor size ``(W, H, P)``. tonic's datasets order those fields
differently (DVSGesture puts ``p`` before ``t``, CIFAR10-DVS starts with ``t``), so code
here and everywhere else indexes fields by name, never by position.

Streams that snnsec creates use :data:`EVENT_DTYPE`; validation accepts any integer (or
boolean, for ``p``) dtype per field, so tonic's own arrays pass as they are.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np

FIELDS = ("x", "y", "t", "p")

# int16 coordinates cover every sensor snnsec reads (SHD's 700 channels included); int8
# polarity keeps `p == 1` and arithmetic such as `1 - p` safe, which bool would not.
EVENT_DTYPE = np.dtype([("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", np.int8)])

# N-MNIST marks a timestamp overflow with y == 240; each one adds 2**13 us to every later
# event, exactly as tonic.io.read_mnist_file does (kept identical so frames match tonic).
_OVERFLOW_Y = 240
_OVERFLOW_STEP = 2**13


def make_events(x, y, t, p) -> np.ndarray:
    """Build a stream in :data:`EVENT_DTYPE` from four equally long sequences."""
    cols = {name: np.asarray(a) for name, a in zip(FIELDS, (x, y, t, p))}
    n = len(cols["t"])
    if not all(c.ndim == 1 and len(c) == n for c in cols.values()):
        shapes = " ".join(f"{k}={c.shape}" for k, c in cols.items())
        raise ValueError(f"make_events: expected four 1-D sequences of one length, got {shapes}")
    ev = np.empty(n, dtype=EVENT_DTYPE)
    for name, c in cols.items():
        if c.dtype.kind == "b":
            c = c.astype(np.int64)
        if c.dtype.kind not in "iuf":
            raise ValueError(f"make_events: field '{name}' has dtype {c.dtype}, expected integers")
        if c.dtype.kind == "f" and n:
            bad = ~np.isfinite(c) | (c != np.round(c))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(f"make_events: field '{name}' must hold whole numbers, event {i} has {c[i].item()!r}")
        info = np.iinfo(EVENT_DTYPE[name])
        if n and (c.min() < info.min or c.max() > info.max):
            i = int(np.flatnonzero((c < info.min) | (c > info.max))[0])
            raise ValueError(f"make_events: field '{name}' value {c[i].item()!r} (event {i}) does not fit "
                             f"{EVENT_DTYPE[name]} ([{info.min}, {info.max}])")
        ev[name] = c
    return ev


def empty_events() -> np.ndarray:
    return np.empty(0, dtype=EVENT_DTYPE)


def validate_events(events, sensor_size, *, source: str = "events") -> np.ndarray:
    """Check a stream against its sensor and return it unchanged.

    Raises ``ValueError`` naming ``source``, the field and what was expected, for: a value
    that is not a structured array, a missing field, NaN, a wrong (non-integer) dtype,
    coordinates or polarities outside ``sensor_size = (W, H, P)``, negative ``t`` and ``t``
    decreasing. An empty stream is valid.
    """
    if not isinstance(events, np.ndarray) or events.dtype.names is None:
        raise ValueError(
            f"{source}: expected a structured numpy array with fields {FIELDS}, got {type(events).__name__}"
            + (f" of dtype {events.dtype}" if isinstance(events, np.ndarray) else "")
        )
    if events.ndim != 1:
        raise ValueError(f"{source}: expected a 1-D event array, got shape {events.shape}")
    missing = [f for f in FIELDS if f not in events.dtype.names]
    if missing:
        raise ValueError(f"{source}: missing field(s) {missing}; expected fields {FIELDS}, got {events.dtype.names}")
    if len(sensor_size) != 3:
        raise ValueError(f"{source}: sensor_size must be (W, H, P), got {sensor_size!r}")
    W, H, P = (int(v) for v in sensor_size)
    for name in FIELDS:
        dt = events.dtype[name]
        if dt.kind == "f" and np.isnan(events[name]).any():
            i = int(np.flatnonzero(np.isnan(events[name]))[0])
            raise ValueError(f"{source}: field '{name}' contains NaN (first at event {i})")
        allowed = "iub" if name == "p" else "iu"
        if dt.kind not in allowed:
            kinds = "an integer or bool" if name == "p" else "an integer"
            raise ValueError(f"{source}: field '{name}' has dtype {dt}, expected {kinds} dtype")
    if len(events) == 0:
        return events
    for name, size in (("x", W), ("y", H), ("p", P)):
        v = events[name].astype(np.int64)
        bad = (v < 0) | (v >= size)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{source}: field '{name}' outside the sensor: event {i} has {name}={int(v[i])}, "
                f"expected 0 <= {name} < {size} for sensor (W, H, P) = {(W, H, P)}"
            )
    t = events["t"]
    if t.dtype.kind == "i" and t.min() < 0:
        i = int(np.flatnonzero(t < 0)[0])
        raise ValueError(f"{source}: field 't' is negative at event {i} (t={int(t[i])}); timestamps must be >= 0 us")
    dec = np.diff(t.astype(np.int64)) < 0
    if dec.any():
        i = int(np.flatnonzero(dec)[0]) + 1
        raise ValueError(
            f"{source}: field 't' decreases at event {i} ({int(t[i - 1])} -> {int(t[i])}); events must be sorted by time"
        )
    return events


def read_event_bin(path: str | os.PathLike) -> np.ndarray:
    """Read the 5-byte-per-event format of N-MNIST, N-Caltech101 and the ``.bs2`` clips.

    Byte layout: x = b0, y = b1, p = b2 >> 7, t = ((b2 & 127) << 16) | (b3 << 8) | b4 (us).
    Decoding equals ``tonic.io.read_mnist_file`` (overflow markers included), but a file
    whose size is not a multiple of 5 (cut mid-event) is an error instead of garbage.
    """
    path = Path(path)
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % 5:
        raise ValueError(
            f"{path}: truncated event file: {raw.size} bytes is not a multiple of 5 "
            f"(5 bytes per event; the last event is cut after {raw.size % 5} byte(s))"
        )
    raw = raw.reshape(-1, 5).astype(np.int64)
    y = raw[:, 1]
    t = ((raw[:, 2] & 127) << 16) | (raw[:, 3] << 8) | raw[:, 4]
    overflow = y == _OVERFLOW_Y
    if overflow.any():
        t = t + np.cumsum(overflow) * _OVERFLOW_STEP
        keep = ~overflow
        raw, t = raw[keep], t[keep]
    return make_events(raw[:, 0], raw[:, 1], t, raw[:, 2] >> 7)


def event_statistics(streams: Iterable[np.ndarray]) -> dict[str, float]:
    """Summary numbers for a set of streams: the table ``snnsec data info`` prints.

    ``on_fraction`` is the share of events with p == 1 over all events; durations are
    ``t[-1] - t[0]`` in milliseconds (empty streams count as 0 events and 0 ms).
    """
    counts, durations, on = [], [], 0
    for ev in streams:
        counts.append(len(ev))
        if len(ev):
            t = ev["t"]
            durations.append((int(t[-1]) - int(t[0])) / 1000.0)
            on += int(np.count_nonzero(ev["p"].astype(np.int64) == 1))
        else:
            durations.append(0.0)
    if not counts:
        raise ValueError("event_statistics: no streams given")
    c = np.asarray(counts, dtype=np.float64)
    d = np.asarray(durations, dtype=np.float64)
    total = float(c.sum())
    return {
        "samples": len(counts),
        "events_mean": float(c.mean()),
        "events_median": float(np.median(c)),
        "events_min": float(c.min()),
        "events_max": float(c.max()),
        "on_fraction": on / total if total else 0.0,
        "duration_ms_mean": float(d.mean()),
        "duration_ms_median": float(np.median(d)),
    }
