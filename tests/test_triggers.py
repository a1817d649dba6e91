"""Trigger geometry on blank frames, seeded randomness, spec round trips, event injection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from snnsec.attacks.backdoor import functional as F
from snnsec.data import events as data
from snnsec.data import frames as frames_mod
from snnsec.attacks.backdoor.triggers import (
    FlashTrigger,
    FramedTrigger,
    MovingTrigger,
    SmartTrigger,
    StaticTrigger,
    StrobeTrigger,
    make_trigger,
    pattern_counts,
    trigger_from_spec,
)

T, P, H, W = 6, 2, 34, 34


def blank(batch=None):
    shape = (T, P, H, W) if batch is None else (batch, T, P, H, W)
    return torch.zeros(shape)


def boxes(frames):
    """Per frame, the bounding box (x0, y0, x1, y1) of pixels set in any channel, or None."""
    out = []
    for t in range(frames.shape[0]):
        ys, xs = torch.nonzero(frames[t].sum(0) > 0, as_tuple=True)
        out.append(None if len(ys) == 0 else (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
    return out


@pytest.mark.parametrize(
    "position, corner",
    [("top-left", (0, 0)), ("top-right", (31, 0)), ("bottom-left", (0, 31)), ("bottom-right", (31, 31)), ("middle", (15, 15))],
)
def test_static_position_size_every_frame(position, corner):
    out = StaticTrigger(position=position, polarity="on")(blank())
    x, y = corner
    assert boxes(out) == [(x, y, x + 3, y + 3)] * T  # 0.1 * 34 -> 3 px, as the reference truncates
    assert int(out.sum()) == 9 * T


@pytest.mark.parametrize("polarity, values", [("on", (0, 1)), ("off", (1, 0)), ("both", (1, 1))])
def test_polarity_channels(polarity, values):
    out = StaticTrigger(polarity=polarity)(blank())
    assert out[:, 0, :3, :3].unique().tolist() == [values[0]]
    assert out[:, 1, :3, :3].unique().tolist() == [values[1]]


def test_erase_clears_square_and_keeps_rest():
    out = StaticTrigger(polarity="erase", size=0.2)(torch.ones(T, P, H, W))
    assert out[:, :, :6, :6].sum() == 0
    assert out.sum() == T * P * (H * W - 36)


def test_size_is_fraction_of_width():
    assert boxes(StaticTrigger(size=0.3)(blank()))[0] == (0, 0, 10, 10)
    with pytest.raises(ValueError, match="size"):
        StaticTrigger(size=0)


def test_batch_application_matches_single():
    x = (torch.rand(4, T, P, H, W) > 0.7).float()
    trig = MovingTrigger(position="bottom-right", direction="diagonal")
    batch = trig(x)
    for i in range(4):
        assert torch.equal(batch[i], trig(x[i]))
    assert torch.equal(x, (x > 0).float())  # input untouched


def test_random_position_is_drawn_once_per_seed():
    a, b = StaticTrigger(position="random", seed=7), StaticTrigger(position="random", seed=7)
    train_frames, test_frames = blank(3), blank(5)  # two splits, different sizes
    assert torch.equal(a(train_frames)[0], b(test_frames)[4])
    positions = {StaticTrigger(position="random", seed=s).corner(H, W) for s in range(20)}
    assert len(positions) > 10  # the seed matters
    rebuilt = trigger_from_spec(a.to_spec())
    assert rebuilt.corner(H, W) == a.corner(H, W)


def test_moving_horizontal_cycles_three_positions_last_frame_clean():
    out = MovingTrigger(position="top-left", direction="horizontal")(torch.zeros(8, P, H, W))
    xs = [b[0] if b else None for b in boxes(out)]
    assert xs == [0, 5, 8, 0, 5, 8, 0, None]  # reference offsets 0, s+2, 2s+2 with s = 3
    assert all(b[1] == 0 for b in boxes(out)[:-1])


def test_moving_vertical_and_diagonal_from_bottom_right():
    v = boxes(MovingTrigger(position="bottom-right", direction="vertical")(blank()))
    d = boxes(MovingTrigger(position="bottom-right", direction="diagonal")(blank()))
    assert [b[:2] for b in v[:3]] == [(31, 31), (31, 26), (31, 23)]
    assert [b[:2] for b in d[:3]] == [(31, 31), (26, 26), (23, 23)]
    assert v[-1] is None and d[-1] is None


def test_flash_framed_strobe_windows():
    flash = FlashTrigger(polarity="on", start=2, length=2)(blank())
    assert [bool(f.any()) for f in flash] == [False, False, True, True, False, False]
    assert flash[2, 1].sum() == H * W and flash[2, 0].sum() == 0
    framed = boxes(FramedTrigger(start=1, length=3)(blank()))
    assert [b is not None for b in framed] == [False, True, True, True, False, False]
    strobe = boxes(StrobeTrigger(on=2, gap=1)(blank()))
    assert [b is not None for b in strobe] == [True, True, False, True, True, False]


def _smart_training_frames():
    # Activity only in the bottom-right region, with ON events far more common than OFF.
    x = torch.zeros(10, T, P, H, W)
    x[:, :, 1, 24:, 24:] = 1.0
    x[:, :, 0, 30:, 30:] = 1.0
    return x


def test_smart_region_polarity_and_walk():
    trig = SmartTrigger(region_choice="most", polarity_choice="least").fit(_smart_training_frames())
    assert trig.region == 8  # bottom-right of the 3 x 3 grid
    counts = pattern_counts(_smart_training_frames())[8]
    assert trig.pattern == ("erase", "on", "off", "both")[int(counts.argmin())]
    out = trig(torch.zeros(T, P, H, W) + (0 if trig.pattern != "erase" else 1))
    x0, y0, x1, y1 = trig.region_box(H, W)
    path = trig.path(T, H, W)
    for (x, y), (px, py) in zip(path[1:], path[:-1]):
        assert abs(x - px) <= 2 and abs(y - py) <= 2
    assert all(x0 <= x and x + 3 <= x1 and y0 <= y and y + 3 <= y1 for x, y in path)
    least = SmartTrigger(region_choice="least", polarity="on").fit(_smart_training_frames())
    assert least.region != 8
    assert out.shape == (T, P, H, W)


def test_smart_measured_once_reused_on_test():
    trig = SmartTrigger().fit(_smart_training_frames())
    rebuilt = trigger_from_spec(trig.to_spec())
    assert (rebuilt.region, rebuilt.pattern) == (trig.region, trig.pattern)
    assert torch.equal(rebuilt(blank()), trig(blank()))
    with pytest.raises(ValueError, match="fit"):
        SmartTrigger()(blank())


def test_registry_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown name 'nope'"):
        make_trigger("nope")
    with pytest.raises(ValueError, match="unknown parameter"):
        make_trigger("static", colour="red")
    with pytest.raises(ValueError, match="position"):
        make_trigger("static", position="centre")
    with pytest.raises(ValueError, match="polarity"):
        make_trigger("flash", polarity="purple")


def _synthetic_events(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    ev = np.zeros(n, dtype=[("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", np.int8)])
    ev["x"] = rng.integers(8, 26, n)
    ev["y"] = rng.integers(8, 26, n)
    ev["t"] = np.sort(rng.integers(0, 300_000, n))
    ev["p"] = rng.integers(0, 2, n)
    return ev


@pytest.mark.parametrize("slicing", ["events", "time"])
@pytest.mark.parametrize("trigger", [StaticTrigger(polarity="on"), MovingTrigger(position="bottom-left", polarity="both"), StrobeTrigger(polarity="off", position="top-right")])
def test_event_injection_frames_show_the_square(trigger, slicing):
    sensor = (W, H, P)
    ev = _synthetic_events()
    poisoned = trigger.events(ev, sensor, T, slicing)
    data.validate_events(poisoned, sensor, source="injected")
    assert len(poisoned) > len(ev) and np.all(np.diff(poisoned["t"]) >= 0)
    frames = torch.as_tensor(frames_mod.to_frames(poisoned, sensor, T, slicing, True))
    mask = trigger.mask(T, H, W)
    want = trigger(torch.zeros(T, P, H, W))
    for c in range(P):
        # Every channel the trigger turns on is on under the square in exactly those frames.
        on = want[:, c].bool() & mask
        assert bool(frames[:, c][on].all())
    added = len(poisoned) - len(ev)
    assert added == int(mask.sum()) * len(F.event_polarities(trigger.effective_polarity(), P))


def test_event_erase_removes_square_events():
    ev = _synthetic_events()
    trig = StaticTrigger(position="middle", polarity="erase", size=0.3)
    out = trig.events(ev, (W, H, P), T)
    frames = torch.as_tensor(frames_mod.to_frames(out, (W, H, P), T, "events", True))
    assert frames[:, :, 12:22, 12:22].sum() == 0
    assert len(out) < len(ev)


def test_apply_pattern_rejects_bad_shapes():
    with pytest.raises(ValueError, match="T, P, H, W"):
        F.apply_pattern(torch.zeros(3, 4), torch.zeros(1, 3, 4, dtype=torch.bool), "on")


def test_dynamic_trigger_bounded_and_round_trips(tmp_path):
    from snnsec.attacks.backdoor.dynamic import DynamicTrigger, SpikingAutoencoder

    torch.manual_seed(0)
    gen = SpikingAutoencoder(2, (H, W), width=(4, 8))
    trig = DynamicTrigger(gen, gamma=0.05)
    x = (torch.rand(3, T, P, H, W) > 0.8).float()
    out = trig(x)
    delta = out - x
    assert out.shape == x.shape and float(delta.min()) >= 0 and float(delta.max()) <= 0.05 + 1e-7
    assert float(out.max()) <= 1.0
    trig.save(tmp_path / "gen.safetensors")
    rebuilt = trigger_from_spec(trig.to_spec(), base_dir=tmp_path)
    assert torch.equal(rebuilt(x), out)
    with pytest.raises(FileNotFoundError, match="generator weights"):
        trigger_from_spec({**trig.to_spec(), "weights": "nope.safetensors"}, base_dir=tmp_path)


def test_dynamic_bilevel_step_moves_generator_and_classifier():
    import torch.nn as nn

    from snnsec.attacks.backdoor.dynamic import DynamicConfig, _if, _Seq, train_dynamic
    from spikingjelly.activation_based import functional as sjf

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = _Seq(nn.Conv2d(2, 4, 3, 2, 1))
            self.lif = _if()
            self.fc = nn.Linear(4 * 17 * 17, 10)

        def forward(self, x):
            sjf.reset_net(self)
            return self.fc(self.lif(self.conv(x.transpose(0, 1))).flatten(2)).mean(0)

    class DS:
        x = (torch.rand(8, 2, P, H, W, generator=torch.Generator().manual_seed(1)) > 0.8).float()
        targets = torch.arange(8) % 10

        def __len__(self):
            return 8

        def __getitem__(self, i):
            return self.x[i], int(self.targets[i])

    model = Tiny()
    before = [p.detach().clone() for p in model.parameters()]
    trig, hist = train_dynamic(model, DS(), DynamicConfig(epochs=1, batch_size=4, width=(4, 8)), num_classes=10, progress=False)
    assert len(hist) == 1 and all(k in hist[0] for k in ("loss", "loss_gen"))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert float((trig(DS.x) - DS.x).max()) <= 0.01 + 1e-7


def test_event_injection_on_real_nmnist_recording(nmnist_root):
    path = sorted((nmnist_root / "Train" / "3").glob("*.bin"))[0]
    ev = data.read_event_bin(path)
    sensor = (34, 34, 2)
    trig = StaticTrigger(position="random", polarity="on", seed=3)
    poisoned = data.validate_events(trig.events(ev, sensor, 16), sensor, source=str(path))
    frames = torch.as_tensor(frames_mod.to_frames(poisoned, sensor, 16, "events", True))
    x, y = trig.corner(34, 34)
    assert bool(frames[:, 1, y : y + 3, x : x + 3].all())
    # The frame trigger draws the same square (ON channel) on the clean frames.
    drawn = trig(torch.as_tensor(frames_mod.to_frames(ev, sensor, 16, "events", True)).float())
    assert torch.equal(drawn[:, 1].bool() & trig.mask(16, 34, 34), frames[:, 1].bool() & trig.mask(16, 34, 34))
