"""Event-native threats: spike retiming on binary frames and add/delete/shift edits of raw events."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adversarial_helpers import H, K, P, T, W, trained_csnn
from snnsec.attacks.adversarial.event_edits import EventEdits
from snnsec.attacks.adversarial.retiming import SpikeRetiming
from snnsec.data.events import make_events
from snnsec.data.frames import to_frames
from snnsec.data.spec import DataSpec


@pytest.fixture(scope="module")
def trained():
    return trained_csnn()


def _sorted_times(frames: torch.Tensor) -> list[list[int]]:
    lines = frames.permute(0, 2, 3, 4, 1).reshape(-1, frames.shape[1])
    return [torch.nonzero(line).flatten().tolist() for line in lines]


@pytest.mark.parametrize("budget", [dict(max_shift=1), dict(max_shift=None, moved=0.05), dict(max_shift=None, total_delay=0.05)])
def test_retiming_moves_spikes_in_time_only_and_within_budget(trained, budget):
    model, x, y = trained
    x, y = x[:12], y[:12]
    xa = SpikeRetiming(model, steps=5, **budget)(x, y)
    assert bool(((xa == 0) | (xa == 1)).all())
    assert torch.equal(xa.sum(1), x.sum(1))  # every pixel and polarity keeps its spike count
    before, after = _sorted_times(x), _sorted_times(xa)
    # sorted spike times are the cheapest matching in one dimension: its shifts bound the attack's
    shifts = [[abs(a - b) for a, b in zip(s, t)] for s, t in zip(before, after)]
    spikes = x.flatten(1).sum(1)
    per_sample = torch.tensor([sum(sum(v) for v in shifts[i * P * H * W:(i + 1) * P * H * W]) for i in range(x.shape[0])])
    moved = ((xa != x).flatten(1).sum(1) / 2)
    if budget.get("max_shift"):
        assert max(max(v, default=0) for v in shifts) <= 1
    if "moved" in budget:
        assert (moved <= torch.floor(0.05 * spikes)).all()
    if "total_delay" in budget:
        assert (per_sample <= torch.floor(0.05 * spikes)).all()
    assert bool((xa != x).any()), "the attack moved nothing"


def test_retiming_raises_the_loss_and_refuses_bad_input(trained):
    model, x, y = trained
    xa = SpikeRetiming(model, max_shift=2, steps=10)(x, y)
    with torch.no_grad():
        assert F.cross_entropy(model(xa), y) > F.cross_entropy(model(x), y)
    with pytest.raises(ValueError, match="binary frames"):
        SpikeRetiming(model)(x * 0.5, y)
    with pytest.raises(ValueError, match="at least one budget"):
        SpikeRetiming(model, max_shift=None)
    with pytest.raises(ValueError, match="fraction"):
        SpikeRetiming(model, moved=3)


SPEC = DataSpec(name="quadrant-events", sensor_size=(W, H, P), T=T, slicing="events", binary=True,
                classes=tuple(str(c) for c in range(K)))


def _streams(x: torch.Tensor) -> list[np.ndarray]:
    """Event streams whose count-sliced frames are ``x``: per frame, its active pixels in a fixed
    order, every frame holding the same number of events (pixels repeated to fill)."""
    out = []
    for sample in x:
        per = max(int(f.sum()) for f in sample)
        xs, ys, ts, ps = [], [], [], []
        for t, f in enumerate(sample):
            idx = torch.nonzero(f).tolist()
            for k in range(per):
                p, yy, xx = idx[k % len(idx)]
                xs.append(xx), ys.append(yy), ps.append(p), ts.append(1000 * t + k)
        out.append(make_events(np.array(xs), np.array(ys), np.array(ts), np.array(ps)))
    return out


def test_event_streams_frame_to_the_test_frames(trained):
    _, x, _ = trained
    frames = torch.stack([torch.from_numpy(to_frames(s, SPEC.sensor_size, T, "events", True).astype(np.float32))
                          for s in _streams(x[:4])])
    assert torch.equal(frames, x[:4])


@pytest.mark.parametrize("ops", [("add",), ("delete",), ("shift",), ("add", "delete", "shift")])
def test_event_edits_respect_the_budget_and_their_kind(trained, ops):
    model, x, y = trained
    streams = _streams(x[:8])
    res = EventEdits(budget=0.1, ops=ops, rounds=3)(model, streams, y[:8], SPEC)
    n = torch.tensor([len(s) for s in streams])
    assert (res.edits <= torch.floor(0.1 * n)).all() and int(res.edits.sum()) > 0
    sizes = torch.tensor([len(s) for s in res.events])
    if ops == ("add",):
        assert (sizes >= n).all()
    if ops == ("delete",):
        assert (sizes <= n).all()
    if ops == ("shift",):
        assert torch.equal(sizes, n)
        for a, b in zip(streams, res.events):  # the same pixels and polarities, times moved
            key = lambda e: sorted(zip(e["x"].tolist(), e["y"].tolist(), e["p"].tolist()))  # noqa: E731
            assert key(a) == key(b)
    # judged on exact frames of the edited streams
    again = torch.stack([torch.from_numpy(to_frames(s, SPEC.sensor_size, T, "events", True).astype(np.float32))
                         for s in res.events])
    assert torch.equal(again, res.frames)
    with torch.no_grad():
        assert torch.equal(res.correct, model(res.frames).argmax(1) == y[:8])
        assert F.cross_entropy(model(res.frames), y[:8]) >= F.cross_entropy(model(x[:8]), y[:8]) - 1e-6


def test_event_edits_refuse_bad_budgets():
    with pytest.raises(ValueError, match="fraction"):
        EventEdits(budget=2)
    with pytest.raises(ValueError, match="ops"):
        EventEdits(budget=0.1, ops=("swap",))


def test_the_event_threats_kind_runs_both_threats_end_to_end(tmp_path, monkeypatch):
    from snnsec import bench, results

    monkeypatch.setenv("SNNSEC_CKPT_CACHE", str(tmp_path / "ckpt"))
    spec = bench.parse_spec({
        "kind": "event-threats",
        "base": {"dataset": "ndigits", "model": "csnn", "T": 4, "epochs": 1, "batch_size": 32, "lr": 1e-3,
                 "n_samples": 8},
        "sweep": [{"threat": "retime", "max_shift": 1, "steps": 3},
                  {"threat": "events", "ops": "add,delete,shift", "budget": 0.05, "rounds": 2}]},
        source="tiny-event-threats.toml")
    bench.run_spec(spec, store=tmp_path / "r.sqlite", progress=False, log=lambda m: None)
    rows = results.Store(tmp_path / "r.sqlite").load(parse_json=True)
    assert set(rows["attack"]) == {"event-threat:retime", "event-threat:events"}
    for _, r in rows[rows["metric"] == "robust_accuracy"].iterrows():
        clean = rows[(rows["run_id"] == r["run_id"]) & (rows["metric"] == "clean_accuracy")]["value"].item()
        assert 0 <= r["value"] <= clean
        assert len(r["extra"]["frame_ssim"]) == 8
    l0 = rows[rows["metric"] == "event_l0"].set_index("attack")["value"]
    assert 0 < l0["event-threat:events"] <= 0.05


def test_an_event_threats_cell_is_checked_before_any_work():
    from snnsec.runs.event_threats import event_threat_cell

    with pytest.raises(ValueError, match="'threat' must be one of"):
        event_threat_cell({"dataset": "ndigits", "model": "csnn", "threat": "flip"})
    with pytest.raises(ValueError, match="needs 'budget'"):
        event_threat_cell({"dataset": "ndigits", "model": "csnn", "threat": "events"})
    with pytest.raises(ValueError, match="moved is a fraction of the sample's spikes"):
        event_threat_cell({"dataset": "ndigits", "model": "csnn", "threat": "retime", "moved": 2})
    with pytest.raises(ValueError, match="unknown field"):
        event_threat_cell({"dataset": "ndigits", "model": "csnn", "threat": "events", "budgt": 0.1})
