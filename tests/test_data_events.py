"""Event validation, the 5-byte reader (truncation included) and event statistics."""

from __future__ import annotations

import numpy as np
import pytest
import tonic.io

from snnsec.data.events import EVENT_DTYPE, event_statistics, make_events, read_event_bin, validate_events

SENSOR = (34, 34, 2)


def _events(n=50, seed=0):
    rng = np.random.default_rng(seed)
    return make_events(rng.integers(0, 34, n), rng.integers(0, 34, n), np.sort(rng.integers(0, 300_000, n)),
                       rng.integers(0, 2, n))


def test_valid_and_empty_streams_pass():
    ev = _events()
    assert validate_events(ev, SENSOR) is ev
    assert len(validate_events(np.empty(0, dtype=EVENT_DTYPE), SENSOR)) == 0
    # tonic's own dtypes and field orders pass as they are (fields are read by name).
    gesture = np.zeros(3, dtype=[("x", np.int16), ("y", np.int16), ("p", bool), ("t", np.int64)])
    gesture["t"] = [0, 5, 5]
    validate_events(gesture, (128, 128, 2))


@pytest.mark.parametrize("field,value,message", [
    ("x", 34, r"field 'x' outside the sensor: event 7 has x=34, expected 0 <= x < 34"),
    ("y", -1, r"field 'y' outside the sensor: event 7 has y=-1"),
    ("p", 2, r"field 'p' outside the sensor: event 7 has p=2"),
    ("t", -5, r"field 't' is negative at event 0"),
])
def test_out_of_range_values_are_named(field, value, message):
    ev = _events()
    if field == "t":
        ev["t"][0] = value
    else:
        ev[field][7] = value
    with pytest.raises(ValueError, match=message):
        validate_events(ev, SENSOR, source="sample.bin")


def test_decreasing_time_is_named_with_source():
    ev = _events()
    ev["t"][10] = ev["t"][9] - 1
    with pytest.raises(ValueError, match=r"^sample\.bin: field 't' decreases at event 10"):
        validate_events(ev, SENSOR, source="sample.bin")


def test_missing_field_nan_and_wrong_dtype():
    no_p = np.zeros(4, dtype=[("x", np.int16), ("y", np.int16), ("t", np.int64)])
    with pytest.raises(ValueError, match=r"missing field\(s\) \['p'\]"):
        validate_events(no_p, SENSOR)
    fl = np.zeros(4, dtype=[("x", np.float64), ("y", np.int16), ("t", np.float64), ("p", np.int8)])
    fl["t"][2] = np.nan
    with pytest.raises(ValueError, match=r"field 'x' has dtype float64, expected an integer dtype"):
        validate_events(fl, SENSOR)
    fl["x"] = 1.0
    fl2 = fl.copy()
    fl2["x"][1] = np.nan
    with pytest.raises(ValueError, match=r"field 'x' contains NaN \(first at event 1\)"):
        validate_events(fl2, SENSOR)
    with pytest.raises(ValueError, match=r"field 't' contains NaN \(first at event 2\)"):
        validate_events(fl.astype([("x", np.int16), ("y", np.int16), ("t", np.float64), ("p", np.int8)]), SENSOR)
    with pytest.raises(ValueError, match="structured numpy array"):
        validate_events(np.zeros((4, 4)), SENSOR)


def test_reader_matches_tonic_and_handles_overflow(tmp_path, nmnist_root):
    path = sorted((nmnist_root / "Train" / "3").glob("*.bin"))[0]
    ours = read_event_bin(path)
    theirs = tonic.io.read_mnist_file(str(path), dtype=np.dtype([("x", int), ("y", int), ("t", int), ("p", int)]))
    for f in "xytp":
        assert np.array_equal(ours[f], theirs[f])
    # Timestamp-overflow markers (y == 240) add 2**13 us to every later event, as in tonic.
    raw = np.array([[1, 2, 0, 0, 10], [0, 240, 0, 0, 0], [3, 4, 128, 0, 5]], dtype=np.uint8)
    p = tmp_path / "overflow.bin"
    p.write_bytes(raw.tobytes())
    ev = read_event_bin(p)
    assert ev["x"].tolist() == [1, 3] and ev["p"].tolist() == [0, 1] and ev["t"].tolist() == [10, 8192 + 5]


def test_truncated_file_names_the_file(tmp_path, nmnist_root):
    src = sorted((nmnist_root / "Test" / "0").glob("*.bin"))[0]
    data = src.read_bytes()
    cut = tmp_path / "cut.bin"
    cut.write_bytes(data[: len(data) - 2])
    with pytest.raises(ValueError, match=r"cut\.bin: truncated event file: .* not a multiple of 5 .*cut after 3 byte"):
        read_event_bin(cut)
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    assert len(read_event_bin(empty)) == 0


def test_event_statistics():
    a = make_events([0, 1, 2], [0, 0, 0], [1000, 2000, 5000], [1, 1, 0])
    b = make_events([0], [0], [7], [0])
    s = event_statistics([a, b, np.empty(0, dtype=EVENT_DTYPE)])
    assert s["samples"] == 3 and s["events_mean"] == pytest.approx(4 / 3) and s["events_median"] == 1
    assert s["on_fraction"] == pytest.approx(0.5) and s["duration_ms_mean"] == pytest.approx(4 / 3)
    with pytest.raises(ValueError, match="no streams"):
        event_statistics([])
