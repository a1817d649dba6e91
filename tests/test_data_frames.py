"""Framing equals tonic's ToFrame on every real recording, for both slicings."""

from __future__ import annotations

import numpy as np
import pytest
import tonic.transforms as tt

from snnsec.data.events import EVENT_DTYPE, make_events, read_event_bin
from snnsec.data.frames import to_frames

KW = {"events": "n_event_bins", "time": "n_time_bins"}


def _check_all(files, sensor, Ts):
    checked = 0
    for path in files:
        ev = read_event_bin(path)
        for T in Ts:
            for slicing, kw in KW.items():
                want = tt.ToFrame(sensor_size=sensor, **{kw: T})(ev)
                got = to_frames(ev, sensor, T, slicing, binary=False)
                assert got.dtype == want.dtype and got.shape == want.shape, path
                assert np.array_equal(got, want), f"{path}: T={T} {slicing}"
                assert np.array_equal(to_frames(ev, sensor, T, slicing, binary=True), np.minimum(want, 1))
                checked += 1
    return checked


def test_equals_toframe_on_every_nmnist_recording(nmnist_root):
    files = sorted(nmnist_root.glob("*/*/*.bin"))
    assert len(files) == 1100
    assert _check_all(files, (34, 34, 2), Ts=(16, 7)) == 1100 * 2 * 2


def test_equals_toframe_on_every_gesture_clip(gesture_root):
    files = sorted(gesture_root.glob("*.bs2"))
    assert len(files) == 10
    assert _check_all(files, (128, 128, 2), Ts=(16, 5)) == 10 * 2 * 2


def test_empty_stream_gives_zero_frames_of_the_right_shape():
    empty = np.empty(0, dtype=EVENT_DTYPE)
    for slicing in KW:
        f = to_frames(empty, (40, 30, 2), 4, slicing, binary=True)
        assert f.shape == (4, 2, 30, 40) and not f.any()  # tonic would give (4, 2, 40, 30) float64


def test_tiny_streams_keep_their_events():
    # Fewer events than bins, and a 3 us recording: tonic drops everything, we keep each event.
    ev = make_events([1, 2, 3], [0, 0, 1], [10, 11, 13], [0, 1, 1])
    for slicing in KW:
        f = to_frames(ev, (4, 2, 2), 8, slicing, binary=False)
        assert f.sum() == 3 and f[0, 0, 0, 1] == 1


def test_single_polarity_and_order_independent_fields():
    ev = np.zeros(6, dtype=[("t", np.int64), ("p", bool), ("x", np.int16), ("y", np.int16)])
    ev["t"] = np.arange(6) * 10
    ev["x"] = [0, 1, 2, 3, 4, 5]
    ev["p"] = [True, False, True, False, True, False]
    f = to_frames(ev, (6, 1, 2), 3, "events", binary=False)
    assert f.shape == (3, 2, 1, 6) and f[:, 1].sum() == 3 and f[0, 1, 0, 0] == 1
    g = to_frames(ev, (6, 1, 1), 3, "time", binary=False)
    assert g.shape == (3, 1, 1, 6) and g.sum() == 5  # tonic's time bins drop the last event


def test_bad_arguments():
    ev = make_events([0, 40], [0, 0], [0, 1], [0, 0])
    with pytest.raises(ValueError, match=r"to_frames: field 'x' outside the sensor: event 1 has x=40"):
        to_frames(ev, (34, 34, 2), 2, "events")
    with pytest.raises(ValueError, match="slicing"):
        to_frames(ev, (64, 34, 2), 2, "space")
    with pytest.raises(ValueError, match="positive"):
        to_frames(ev, (64, 34, 2), 0, "events")


def test_unsorted_time_is_named():
    ev = make_events([0, 1, 2], [0, 0, 0], [50, 10, 60], [0, 0, 0])
    with pytest.raises(ValueError, match=r"field 't' decreases at event 1"):
        to_frames(ev, (4, 1, 2), 2, "time")


def test_invalid_streams_are_refused_by_field():
    good = make_events([1, 2], [1, 2], [0, 5], [0, 1])
    floats = np.zeros(2, dtype=[("x", "f8"), ("y", "i2"), ("t", "i8"), ("p", "i1")])
    floats["x"], floats["t"] = [1.7, 2], [0, 5]
    nan = floats.copy()
    nan["x"][0] = np.nan
    negative = good.copy()
    negative["t"][0] = -5
    strings = np.zeros(2, dtype=[("x", "U3"), ("y", "i2"), ("t", "i8"), ("p", "i1")])
    for events, message in [
        (floats, r"field 'x' has dtype float64, expected an integer dtype"),
        (nan, r"field 'x' contains NaN \(first at event 0\)"),
        (negative, r"field 't' is negative at event 0"),
        (strings, r"field 'x' has dtype <U3"),
        ([(1, 1, 0, 1)], r"expected a structured numpy array .* got list"),
    ]:
        for slicing in ("events", "time", "time-zero", "number"):
            with pytest.raises(ValueError, match="to_frames: " + message):
                to_frames(events, (34, 34, 2), 2, slicing)


def test_make_events_refuses_values_its_dtype_cannot_hold():
    with pytest.raises(ValueError, match=r"field 'x' value 40000 \(event 0\) does not fit int16"):
        make_events([40000], [1], [0], [1])
    with pytest.raises(ValueError, match=r"field 'x' must hold whole numbers, event 1 has 1.7"):
        make_events([1.0, 1.7], [1, 1], [0, 1], [1, 1])
    with pytest.raises(ValueError, match=r"field 't' must hold whole numbers, event 0 has nan"):
        make_events([1], [1], [float("nan")], [1])
    with pytest.raises(ValueError, match=r"field 'p' has dtype <U1"):
        make_events([1], [1], [0], ["a"])
    with pytest.raises(ValueError, match="four 1-D sequences of one length"):
        make_events([1, 2], [1], [0], [1])
    assert make_events([1.0], [2], [3], [True])["p"][0] == 1


def _spikingjelly_framing():
    """spikingjelly's own ``integrate_events_by_fixed_frames_number`` and its two helpers, run from
    the installed source: ``import spikingjelly.datasets`` imports torchvision, which fails with
    the CPU torch used here, so the three functions are compiled out of its file unchanged."""
    import ast
    import importlib.util
    from pathlib import Path
    from typing import Optional

    src_path = Path(importlib.util.find_spec("spikingjelly").submodule_search_locations[0]) / "datasets" / "utils.py"
    tree = ast.parse(src_path.read_text(encoding="utf-8"))
    wanted = {"integrate_events_segment_to_frame", "cal_fixed_frames_number_segment_index",
              "integrate_events_by_fixed_frames_number"}
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    assert {d.name for d in defs} == wanted, f"{src_path} no longer defines {wanted}"
    namespace = {"np": np, "Optional": Optional}
    exec(compile(ast.Module(body=defs, type_ignores=[]), str(src_path), "exec"), namespace)
    return namespace["integrate_events_by_fixed_frames_number"]


def _time_zero_by_hand(ev, sensor, T):
    """Binning from t = 0 as a user would write it: T equal windows over [0, t_last], every
    event kept, with float edges and np.digitize."""
    W, H, P = sensor
    edges = np.linspace(0, int(ev["t"][-1]) + 1, T + 1)
    frame = np.digitize(ev["t"], edges[1:-1])
    out = np.zeros((T, P, H, W), dtype=np.int64)
    np.add.at(out, (frame, ev["p"].astype(np.int64), ev["y"].astype(np.int64), ev["x"].astype(np.int64)), 1)
    return out


def test_number_slicing_equals_spikingjelly_split_by_number(nmnist_root, gesture_root):
    sj = _spikingjelly_framing()
    files = [*sorted(nmnist_root.glob("*/*/*.bin"))[::25], *sorted(gesture_root.glob("*.bs2"))]
    differs_from_tonic = 0
    for path in files:
        ev = read_event_bin(path)
        sensor = (34, 34, 2) if path.suffix == ".bin" else (128, 128, 2)
        for T in (8, 7):
            want = sj({k: ev[k] for k in ("t", "x", "y", "p")}, "number", T, sensor[1], sensor[0])
            got = to_frames(ev, sensor, T, "number", binary=False)
            assert np.array_equal(got, want), f"{path}: T={T}"
            assert np.array_equal(to_frames(ev, sensor, T, "number", binary=True), np.minimum(want, 1))
            differs_from_tonic += not np.array_equal(got, to_frames(ev, sensor, T, "events", binary=False))
    # the last frame keeps the N % T events tonic's equal-count slicing drops
    assert differs_from_tonic > 0


def test_time_zero_slicing_equals_binning_by_hand(nmnist_root):
    for path in sorted(nmnist_root.glob("*/*/*.bin"))[::10]:
        ev = read_event_bin(path)
        for T in (8, 5):
            want = _time_zero_by_hand(ev, (34, 34, 2), T)
            got = to_frames(ev, (34, 34, 2), T, "time-zero", binary=False)
            assert np.array_equal(got, want), f"{path}: T={T}"
            assert got.sum() == len(ev)  # nothing dropped, unlike tonic's time bins
