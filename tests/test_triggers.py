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
    # Flashy's get_attack_frames: bursts start inside `length` frames and run their full `on`
    assert StrobeTrigger(gap=1, length=5).frames_on(8) == [0, 2, 4]
    assert StrobeTrigger(on=2, gap=1, length=5).frames_on(8) == [0, 1, 3, 4]
    assert StrobeTrigger(start=3, on=2, gap=2, length=9).frames_on(8) == [3, 4, 7]
    with pytest.raises(ValueError, match="length >= 1"):
        StrobeTrigger(length=0)


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


def _reference_pattern_counts(new_data, grid=3):
    """Sneaky Spikes' create_smart_trigger counts, transcribed (numpy, [N, T, 2, H, W])."""
    Hd, Wd = new_data.shape[-2:]
    ys, xs = np.linspace(0, Hd, grid + 1).astype(int), np.linspace(0, Wd, grid + 1).astype(int)
    out = []
    for r in range(grid):
        for c in range(grid):
            m = new_data[..., ys[r] : ys[r + 1], xs[c] : xs[c + 1]]
            out.append([np.sum(m == 0), np.sum(np.logical_and(m[:, :, 0] == 0, m[:, :, 1] == 1)),
                        np.sum(np.logical_and(m[:, :, 0] == 1, m[:, :, 1] == 0)), np.sum(m == 1)])
    return np.array(out)


def test_smart_counting_reference_and_pixels():
    g = torch.Generator().manual_seed(0)
    counts = torch.randint(0, 3, (4, T, P, H, W), generator=g).float()  # count frames, as the reference's
    assert np.array_equal(pattern_counts(counts, 3, "reference").numpy(), _reference_pattern_counts(counts.numpy()))
    # the reference's "both" counts channel values, so it is never the least frequent pattern
    ref = pattern_counts(counts, 3, "reference")
    assert bool((ref[:, 3] >= ref[:, 1] + ref[:, 2]).all())
    binary = (counts > 0).float()
    pix = pattern_counts(binary, 3, "pixels")
    areas = torch.tensor([11 * 11, 11 * 11, 11 * 12, 11 * 11, 11 * 11, 11 * 12, 12 * 11, 12 * 11, 12 * 12])
    assert torch.equal(pix.sum(1), 4 * T * areas)
    with pytest.raises(ValueError, match="counting"):
        SmartTrigger(counting="elements")


def test_smart_choice_on_nmnist(nmnist_root):
    from snnsec.data import load

    ds, _ = load("nmnist-resplit", split="train", root=nmnist_root, T=8)
    x = ds.frames_tensor().float()
    ref, pix = SmartTrigger().fit(x), SmartTrigger(counting="pixels").fit(x)
    assert (ref.region, ref.pattern) == (4, "off")  # what the reference code picks
    assert (pix.region, pix.pattern) == (4, "both")


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


SLICINGS = ("events", "time", "time-zero", "number")
# Every fixed-pattern kind, each polarity at least once, and the smart trigger fitted by hand.
INJECTED = [
    StaticTrigger(polarity="on"),
    StaticTrigger(polarity="erase", position="middle", size=0.3),
    MovingTrigger(position="bottom-left", polarity="both", direction="diagonal"),
    SmartTrigger(region=4, pattern="off"),
    FlashTrigger(polarity="on", length=3),
    FlashTrigger(polarity="both", start=2, length=2),
    FramedTrigger(polarity="off", position="top-right"),
    StrobeTrigger(polarity="on", gap=1, length=5),
]


def _assert_injection_exact(trigger, ev, sensor, T_, slicing):
    """Binary frames of the injected stream equal the frame trigger on the clean frames,
    cell for cell; count frames are exactly 1 under the mask and never lower outside it."""
    poisoned = data.validate_events(trigger.events(ev, sensor, T_, slicing), sensor, source="injected")
    Wd, Hd, _ = sensor
    clean_b = torch.as_tensor(frames_mod.to_frames(ev, sensor, T_, slicing, True))
    got_b = torch.as_tensor(frames_mod.to_frames(poisoned, sensor, T_, slicing, True))
    assert torch.equal(got_b, trigger(clean_b)), f"{trigger.name}/{trigger.polarity}/{slicing}"
    mask = trigger.mask(T_, Hd, Wd)[:, None].expand_as(clean_b)
    clean_c = torch.as_tensor(frames_mod.to_frames(ev, sensor, T_, slicing, False))
    got_c = torch.as_tensor(frames_mod.to_frames(poisoned, sensor, T_, slicing, False))
    assert torch.equal(got_c[mask], trigger(clean_b)[mask].to(got_c.dtype))
    # padding copies raise counts only where a pixel already fired
    extra = got_c[~mask].long() - clean_c[~mask].long()
    assert bool((extra >= 0).all()) and bool((got_c[~mask][extra > 0] > 1).all())
    if slicing in ("time", "time-zero"):
        # no padding; one copy at most, when an erase removes the event that fixes the time axis
        assert int(extra.sum()) <= 1


@pytest.mark.parametrize("slicing", SLICINGS)
@pytest.mark.parametrize("trigger", INJECTED, ids=lambda t: f"{t.name}-{t.polarity}")
def test_event_injection_equals_frame_trigger_synthetic(trigger, slicing):
    _assert_injection_exact(trigger, _synthetic_events(), (W, H, P), T, slicing)


@pytest.mark.parametrize("slicing", SLICINGS)
def test_event_injection_equals_frame_trigger_on_real_recordings(nmnist_root, gesture_root, slicing):
    nmnist = [data.read_event_bin(p) for p in sorted((nmnist_root / "Test").rglob("*.bin"))[:10]]
    gesture = [data.read_event_bin(p) for p in sorted(gesture_root.glob("*.bs2"))[:2]]
    for trigger in INJECTED:
        for ev in nmnist:
            _assert_injection_exact(trigger, ev, (34, 34, 2), 8, slicing)
        for ev in gesture:
            _assert_injection_exact(trigger, ev, (128, 128, 2), 8, slicing)


def test_event_injection_refuses_what_no_stream_can_show():
    ev = _synthetic_events()
    wipe = FlashTrigger(polarity="erase", length=1)
    with pytest.raises(ValueError, match="empties frame 0.*'events' slicing"):
        wipe.events(ev, (W, H, P), T, "events")
    # under time slicing the erased frame is simply empty
    _assert_injection_exact(FlashTrigger(polarity="erase", start=2, length=1), ev, (W, H, P), T, "time")
    with pytest.raises(ValueError, match="fewer than its 6 frames"):
        StaticTrigger().events(ev[:4], (W, H, P), T, "events")
    with pytest.raises(ValueError, match="event injection: field 't' decreases"):
        StaticTrigger().events(ev[::-1], (W, H, P), T, "events")


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


def test_dynamic_trigger_leaves_count_frames_unclamped(tmp_path):
    from snnsec.attacks.backdoor.dynamic import DynamicTrigger, SpikingAutoencoder

    torch.manual_seed(0)
    trig = DynamicTrigger(SpikingAutoencoder(2, (H, W), width=(4, 8)), gamma=0.05, clamp=False)
    counts = torch.randint(0, 6, (3, T, P, H, W)).float()  # event counts, up to 5 per pixel
    delta = trig(counts) - counts
    # only the generator's perturbation: counts above 1 survive (a clamp at 1 would cut them to 1)
    assert float(delta.abs().max()) <= 0.05 + 1e-7
    trig.save(tmp_path / "gen.safetensors")
    assert trigger_from_spec(trig.to_spec(), base_dir=tmp_path).clamp is False
    old = {k: v for k, v in trig.to_spec().items() if k != "clamp"}  # written before the field existed
    assert trigger_from_spec(old, base_dir=tmp_path).clamp is True


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


def test_trigger_registry_flags_and_the_clis_names():
    from snnsec.attacks.backdoor.triggers import TRIGGERS, make_trigger, trigger_class
    from snnsec.attacks.catalog import TRIGGER_NAMES

    assert tuple(sorted(TRIGGERS)) == TRIGGER_NAMES  # --help lists exactly the registered triggers
    assert trigger_class("dynamic").learned and not trigger_class("dynamic").injects_events
    assert trigger_class("dynamic").has_weights
    assert trigger_class("smart").needs_fit and trigger_class("static").injects_events
    assert not any(trigger_class(n).learned for n in TRIGGER_NAMES if n != "dynamic")
    with pytest.raises(ValueError, match="learned with the model"):
        make_trigger("dynamic")


def test_dynamic_trigger_weights_are_read_only_beside_the_checkpoint(tmp_path):
    from snnsec.attacks.backdoor.dynamic import DynamicTrigger, SpikingAutoencoder

    trig = DynamicTrigger(SpikingAutoencoder(2, (H, W), width=(4, 8)), gamma=0.05)
    (tmp_path / "ck").mkdir()
    trig.save(tmp_path / "elsewhere.safetensors")
    for bad in (str(tmp_path / "elsewhere.safetensors"), "../elsewhere.safetensors"):
        with pytest.raises(ValueError, match="field 'weights' must be a file name beside the checkpoint"):
            trigger_from_spec({**trig.to_spec(), "weights": bad}, base_dir=tmp_path / "ck")
    (tmp_path / "ck" / "a-folder").mkdir()
    with pytest.raises(ValueError, match="must be a regular file"):
        trigger_from_spec({**trig.to_spec(), "weights": "a-folder"}, base_dir=tmp_path / "ck")
