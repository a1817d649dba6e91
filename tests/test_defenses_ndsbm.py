"""NDSBM (TMPBD's mitigation) on a tiny planted backdoor: a clamped copy that keeps the clean
membrane potentials, with tightened ranges, and the caller's model untouched."""

from __future__ import annotations

import copy

import pytest
import torch

from defense_helpers import synthetic, train_tiny
from snnsec import defenses, metrics
from snnsec.defenses.ndsbm import BlockClamp
from snnsec.harness import predict

TARGET = 2


@pytest.fixture(scope="module")
def repaired():
    x, y = synthetic(n_per_class=24, seed=0)
    model, _ = train_tiny(x, y, seed=0, poison_target=TARGET)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = defenses.make("ndsbm", epochs=3, samples_per_class=6, batch_size=4)(model, x, y)
    return model, before, r


def test_it_is_a_registered_repair_read_by_its_flags():
    cls = defenses.get("ndsbm")
    assert cls.kind == "repair" and not cls.needs_training_set and not cls.needs_fresh_model
    with pytest.raises(ValueError, match="parameter 'epochs' must be an integer >= 1"):
        defenses.make("ndsbm", epochs=0)


def test_clamps_every_conv_block_and_leaves_the_callers_model(repaired):
    model, before, r = repaired
    assert r.model is not model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(isinstance(m, BlockClamp) for m in model.modules())
    clamps = [m for m in r.model.modules() if isinstance(m, BlockClamp)]
    # the tiny model has one conv block (multi-step): one range per time step and channel
    assert r.extra["blocks"] == len(clamps) == 1
    assert tuple(clamps[0].low.shape) == (4, 1, 8, 1, 1)
    assert r.extra["samples"] == 6 * 8  # samples_per_class x classes
    # the ranges start 20 wide (1 -/+ 10) and the penalty tightens them
    assert r.extra["mean_range_width"][0] < 20.0
    assert (clamps[0].low <= clamps[0].high).all()


def test_the_clamps_act_and_travel_with_the_model(repaired):
    model, _, r = repaired
    x, _ = synthetic(n_per_class=4, seed=7)
    clamp = next(m for m in r.model.modules() if isinstance(m, BlockClamp))
    with torch.no_grad():
        clamp.high.fill_(-1e3)  # every input current below any threshold: nothing spikes in that block
        silent = predict(r.model, x)
        copied = predict(copy.deepcopy(r.model), x)
        clamp.high.fill_(1e3)
        clamp.low.fill_(-1e3)
        wide = predict(r.model, x)
    assert torch.equal(silent, copied)  # a deep copy keeps its own clamps hooked
    assert torch.allclose(wide, predict(model, x), atol=1e-5)  # an open range changes nothing
    assert not torch.allclose(silent, wide)


def test_clean_accuracy_is_kept(repaired):
    model, _, r = repaired
    xt, yt = synthetic(n_per_class=8, seed=5)
    ca0 = metrics.clean_accuracy(predict(model, xt), yt)
    assert metrics.clean_accuracy(predict(r.model, xt), yt) >= ca0 - 0.1
