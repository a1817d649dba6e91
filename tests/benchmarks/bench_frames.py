"""Framing speed: ``snnsec.data.frames.to_frames`` against ``tonic.transforms.ToFrame``.

Goal: at least 5x ToFrame's speed on the DVS128 Gesture clips (128 x 128, 60k to 120k
events each) and on N-MNIST recordings (34 x 34, ~4k events). Run with ``make bench`` or
``python tests/benchmarks/bench_frames.py``. Both sides frame every recording, in count
mode, for event-count and time bins, with equal output checked first; the best of several
repeats is kept for each, and the ratio is printed. No timed assertions.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

REPEATS = 7
T = 16
SENSOR = (128, 128, 2)


def _shared() -> Path:
    env = os.environ.get("SNNSEC_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _clips_dir() -> Path:
    return _shared() / "dvsgesture-clips"


def _best(fn, streams) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for ev in streams:
            fn(ev)
        best = min(best, time.perf_counter() - t0)
    return best


def measure(streams, sensor) -> dict[str, tuple[float, float]]:
    import tonic.transforms as tt

    from snnsec.data.frames import to_frames

    out = {}
    for slicing, kw in (("events", "n_event_bins"), ("time", "n_time_bins")):
        tonic_frame = tt.ToFrame(sensor_size=sensor, **{kw: T})
        for ev in streams:  # same output, or the timing means nothing
            assert np.array_equal(tonic_frame(ev), to_frames(ev, sensor, T, slicing, binary=False))
        ours = _best(lambda ev: to_frames(ev, sensor, T, slicing, binary=False), streams)
        theirs = _best(tonic_frame, streams)
        out[slicing] = (theirs, ours)
    return out


def report(clips: Path) -> None:
    from snnsec.data.events import read_event_bin

    sets = [("DVS128 Gesture clips", [read_event_bin(p) for p in sorted(clips.glob("*.bs2"))], SENSOR)]
    nmnist = sorted((_shared() / "nmnist-subset" / "Test").rglob("*.bin"))[:200]
    if nmnist:
        sets.append(("N-MNIST test recordings", [read_event_bin(p) for p in nmnist], (34, 34, 2)))
    for name, streams, sensor in sets:
        print(f"\nframing {len(streams)} {name}, T={T}, count mode, best of {REPEATS}:")
        for slicing, (theirs, ours) in measure(streams, sensor).items():
            print(f"  {slicing:>6} bins: tonic ToFrame {theirs * 1e3:7.1f} ms, snnsec to_frames {ours * 1e3:6.1f} ms, "
                  f"speed-up {theirs / ours:4.1f}x (goal >= 5x)")


def test_bench_frames():
    import pytest

    clips = _clips_dir()
    if not clips.is_dir():
        pytest.skip(f"DVS128 Gesture clips not found at {clips}")
    report(clips)


if __name__ == "__main__":
    clips = Path(sys.argv[1]) if len(sys.argv) > 1 else _clips_dir()
    report(clips)
