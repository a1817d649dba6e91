"""The 2024-2025 estimators (PDSG, ASSG, HART) and SA-PGD: their backward is the references'
formula, the forward never changes, they rescue a masked model, and SA-PGD keeps its box and
its step schedule."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import neuron

from adversarial_helpers import masked_surrogate_copy, trained_csnn
from snnsec.attacks.adversarial import Attack, EvalConfig, evaluate, gradient_mode, parse_gradient
from snnsec.attacks.adversarial.adaptive import ASSG, PDSG
from snnsec.attacks.adversarial.sapgd import halving_steps


@pytest.fixture(scope="module")
def trained():
    return trained_csnn()


def _slope(surrogate, x):
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(surrogate(x).sum(), x)
    return g


def test_pdsg_is_a_gaussian_half_a_sigma_above_threshold_with_sigma_from_the_history():
    torch.manual_seed(0)
    s = PDSG()
    h0, h1 = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    s(h0)
    g = _slope(s, h1)
    sigma = torch.stack([h0, h1]).std(dim=(0, 1, 3, 4), keepdim=True)[0]  # per channel, over steps, batch, space
    expected = torch.exp(-((h1 - sigma / 2) ** 2) / (2 * sigma ** 2)) / (math.sqrt(2 * math.pi) * sigma)
    assert torch.allclose(g, expected, atol=1e-6)
    s.reset()
    assert s.seen == []


def test_assg_sharpness_follows_the_potential_statistics_and_restarts():
    s = ASSG(0.43)
    a = 2 * math.tan(math.pi * 0.43) / math.pi
    x = torch.tensor([[0.5, -2.0]])
    g = _slope(s, x)
    M = 0.9 + 0.1 * x.abs()  # from M = 1, D = 0
    D = 0.1 * (x.abs() - M).abs()
    alpha = a / (M + 1.5 * D + 1e-4)
    assert torch.allclose(g, alpha / (2 * (1 + (math.pi / 2 * alpha * x) ** 2)))
    s.reset()  # a new forward of the same batch: statistics carry on
    s(x)
    assert torch.allclose(s.M[0, 0], 0.9 * M + 0.1 * x.abs())  # (chunk, time step)
    s.restart_statistics()  # a new batch: they start over
    assert s.M == {} and s.t == 0
    with pytest.raises(ValueError, match=r"omega must be in \(0, 0.5\)"):
        ASSG(0.5)


def test_hart_gives_every_step_the_time_averaged_gradient():
    lif = neuron.LIFNode(tau=2.0, step_mode="m", detach_reset=True)
    x = (torch.rand(6, 3, 5, generator=torch.Generator().manual_seed(0)) * 3).requires_grad_(True)
    with gradient_mode(lif, "hart:0.5"):
        lif.reset()
        s = lif(x)
        (g,) = torch.autograd.grad(s.sum(), x)
    lif.reset()
    assert torch.equal(s, lif(x.detach()))  # spikes unchanged
    assert torch.allclose(g, g[:1].expand_as(g))  # the same (averaged) gradient at every step
    assert float(g.abs().sum()) > 0


@pytest.mark.parametrize("spec", ["pdsg", "assg:0.43", "hart:0.5"])
def test_each_estimator_keeps_the_forward_and_gives_input_gradients(trained, spec):
    model, x, y = trained
    xs = x.clone().requires_grad_(True)
    with gradient_mode(model, spec):
        out = model(xs)
        (g,) = torch.autograd.grad(F.cross_entropy(out, y), xs)
    with torch.no_grad():
        assert torch.equal(out.detach(), model(x))
    assert bool((g.flatten(1).abs().sum(1) > 0).all())


@pytest.mark.parametrize("spec", ["pdsg", "assg:0.43", "hart:1"])
def test_a_masked_model_is_attacked_and_trusted_through_an_adaptive_estimator(trained, spec):
    model, x, y = trained
    masked = masked_surrogate_copy(model)
    cfg = dict(attacks="pgd", eps=("64/255",), fast=True, steps_check=False)
    own = evaluate(masked, x, y, EvalConfig(**cfg), progress=False)
    ev = evaluate(masked, x, y, EvalConfig(gradients=(spec,), **cfg), progress=False)
    assert ev.reliable and not own.reliable
    assert ev.robust_accuracy[64 / 255] < own.robust_accuracy[64 / 255]


def test_psn_neurons_and_bad_parameters_are_refused():
    from snnsec import models

    psn = models.build("psn-csnn", in_channels=2, num_classes=4, sensor_hw=(8, 8), T=4)
    with pytest.raises(ValueError, match="calls its surrogate once on the whole sequence"):
        with gradient_mode(psn, "pdsg"):
            pass
    # estimators installed as a hook on a whole sequence refuse neurons stepped once per time step
    snn = models.build("snntorch-csnn", in_channels=2, num_classes=4, sensor_hw=(8, 8), T=4)
    for spec in ("hart:0.5", "bptr", "rga"):
        with pytest.raises(ValueError, match="is a snntorch Leaky, called once per time step"):
            with gradient_mode(snn, spec):
                pass
    with pytest.raises(ValueError, match="parameter must be > 0 and < 0.5"):
        parse_gradient("assg:0.6")
    with pytest.raises(ValueError, match="takes no parameter"):
        parse_gradient("pdsg:1")


def test_sapgd_schedule_box_and_no_nan_on_a_masked_model(trained):
    assert [i + 1 for i in halving_steps(100)] == [22, 41, 57, 70, 80, 87, 93, 99]  # the reference's schedule
    model, x, y = trained
    eps = 16 / 255
    xa = Attack(model, "sapgd", eps, steps=10)(x, y)
    assert float((xa - x).abs().max()) <= eps + 1e-6 and 0 <= float(xa.min()) and float(xa.max()) <= 1
    # a vanishing gradient stalls the sample instead of poisoning it with NaN (the reference divides by zero)
    xm = Attack(masked_surrogate_copy(model), "sapgd", eps, steps=5)(x, y)
    assert torch.isfinite(xm).all()
