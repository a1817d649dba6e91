"""SpikingClassifier mechanics: encoders, kinds, readouts, modes, surrogates, registry, CLI.

The per-model contract (state, eval gradients, override, taps) is in test_models.py.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torchattacks
from spikingjelly.activation_based import functional, layer, neuron, surrogate

from snnsec import harness, models
from snnsec.cli import main as cli_main
from snnsec.harness import (
    SpikingClassifier,
    StraightThrough,
    calibrate_bn,
    encode,
    make_surrogate,
    override_surrogate,
    preserve_modes,
)

T, P, H, W, K = 4, 2, 8, 8, 3


def _frames(seed: int, batch: int = 3, hw=(H, W), density: float = 0.3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, T, P, *hw, generator=g) < density).float()


def _sj_net(step_mode: str = "m", neuron_cls=neuron.LIFNode, **neuron_kwargs) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(layer.Conv2d(P, 4, 3, padding=1), neuron_cls(**neuron_kwargs), layer.Flatten(),
                        layer.Linear(4 * H * W, K))
    functional.set_step_mode(net, step_mode)
    return net


def _wrap(net, **kw) -> SpikingClassifier:
    return SpikingClassifier(net, T=T, in_channels=P, num_classes=K, sensor_hw=(H, W), **kw)


# -- encoders ------------------------------------------------------------------------------------------


def test_direct_encoder_repeats_the_image():
    x = torch.rand(2, P, H, W)
    f = encode(x, T, "direct")
    assert f.shape == (2, T, P, H, W)
    assert all(torch.equal(f[:, t], x) for t in range(T))


def test_rate_encoder_is_binary_seeded_and_unbiased():
    x = torch.rand(2, P, H, W)
    a = encode(x, 500, "poisson", generator=torch.Generator().manual_seed(3))
    b = encode(x, 500, "bernoulli", generator=torch.Generator().manual_seed(3))
    c = encode(x, 500, "poisson", generator=torch.Generator().manual_seed(4))
    assert a.shape == (2, 500, P, H, W)
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(a, b) and not torch.equal(a, c)
    # spike rate estimates intensity: std of a 500-draw mean is at most 0.5/sqrt(500) = 0.022
    assert (a.mean(1) - x).abs().max() < 0.12
    torch.manual_seed(5)
    d = encode(x, 8, "poisson")
    torch.manual_seed(5)
    assert torch.equal(d, encode(x, 8, "poisson"))


def test_rate_encoder_passes_gradient_straight_through():
    x = torch.rand(2, P, H, W, requires_grad=True)
    encode(x, T, "poisson").sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, float(T)))


def test_classifier_accepts_static_images():
    model = _wrap(_sj_net(), encoder="poisson", encoder_seed=0)
    x = torch.rand(3, P, H, W)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (3, K)
        assert torch.equal(model(x), out), "a seeded rate encoder must be deterministic"
        direct = _wrap(_sj_net())
        assert torch.equal(direct(x), direct(x.unsqueeze(1).expand(3, T, P, H, W)))


def test_encode_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        encode(torch.rand(2, T, P, H, W), T)
    with pytest.raises(ValueError, match="encoder must be one of"):
        encode(torch.rand(2, P, H, W), T, "gauss")


# -- input contract ------------------------------------------------------------------------------------


def test_wrong_input_shapes_are_refused_with_the_expected_shape():
    model = _wrap(_sj_net())
    with pytest.raises(ValueError, match=rf"\[B, {T}, {P}, {H}, {W}\]"):
        model(torch.rand(2, T + 1, P, H, W))
    with pytest.raises(ValueError, match="static input"):
        model(torch.rand(2, P + 1, H, W))
    with pytest.raises(ValueError, match="float"):
        model(torch.ones(2, T, P, H, W, dtype=torch.long))
    with pytest.raises(ValueError, match="readout"):
        _wrap(_sj_net(), readout="max")
    with pytest.raises(ValueError, match="kind"):
        _wrap(_sj_net(), kind="loop")


# -- backbone kinds and readouts -------------------------------------------------------------------


def test_single_step_backbone_matches_multi_step():
    x = _frames(0)
    multi = _wrap(_sj_net("m"))
    single = _wrap(_sj_net("s"), kind="single-step")
    single.backbone.load_state_dict(multi.backbone.state_dict())
    with torch.no_grad():
        a, b = multi(x), single(x)
        assert torch.allclose(a, b, atol=1e-6)
        assert torch.equal(single(x), b)
        taps = single.taps(x)
    assert taps["features_seq"].shape == (3, T, 4 * H * W)
    assert taps["membrane_seq"].shape == (3, T, 4 * H * W)


def test_plain_lif_reproduces_spikingjelly_csnn():
    """The framework-free net is the same function as csnn given the same weights (forward and gradient)."""
    kw = dict(in_channels=P, num_classes=K, sensor_hw=(34, 34), T=T)
    torch.manual_seed(0)
    sj = models.build("csnn", **kw)
    plain = models.build("plain-lif", **kw)
    sj_params, plain_params = list(sj.state_dict().values()), plain.state_dict()
    assert [v.shape for v in sj_params] == [v.shape for v in plain_params.values()]
    plain.load_state_dict(dict(zip(plain_params, sj_params)))
    x = _frames(1, hw=(34, 34), density=0.4).requires_grad_(True)
    for mode in ("train", "eval"):
        getattr(sj, mode)()
        getattr(plain, mode)()
        a, b = sj(x), plain(x)
        assert torch.allclose(a, b, atol=1e-5), mode
        (ga,) = torch.autograd.grad(a.square().sum(), x)
        (gb,) = torch.autograd.grad(b.square().sum(), x)
        assert torch.allclose(ga, gb, atol=1e-5), mode


@pytest.mark.skipif("snntorch-csnn" not in models.names(), reason="snntorch not installed")
def test_record_readouts():
    kw = dict(in_channels=P, num_classes=K, sensor_hw=(H, W), T=T)
    torch.manual_seed(0)
    mean = models.build("snntorch-csnn", **kw)
    counts = models.build("snntorch-csnn", readout="spike-count", **kw)
    membrane = models.build("snntorch-csnn", readout="membrane", **kw)
    counts.load_state_dict(mean.state_dict())
    membrane.load_state_dict(mean.state_dict())
    x = _frames(2, density=0.6)
    with torch.no_grad():
        spk, mem = mean.backbone(x.transpose(0, 1))
        mean.reset()
        assert torch.allclose(mean(x), mem.mean(0))
        assert torch.equal(membrane(x), mean(x))
        assert torch.equal(counts(x), spk.sum(0))
    assert counts.arch_kwargs == {"readout": "spike-count"}


def test_record_readouts_need_records():
    model = _wrap(_sj_net(), readout="spike-count")
    with pytest.raises(ValueError, match="spike record"):
        model(_frames(0))


class _UserLeaky(nn.Module):
    """A user backbone with its own state and the generic ``reset()`` protocol."""

    def __init__(self, with_reset: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(P * H * W, K)
        self.v = None
        if with_reset:
            self.reset = self._clear

    def _clear(self) -> None:
        self.v = None

    def forward(self, x_seq):
        outs = []
        for x in x_seq:
            cur = self.lin(x.flatten(1))
            self.v = cur if self.v is None else 0.5 * self.v + cur
            outs.append(self.v)
        return torch.stack(outs)


def test_generic_reset_protocol_and_its_absence():
    x = _frames(3)
    good = _wrap(_UserLeaky(with_reset=True))
    with torch.no_grad():
        assert torch.equal(good(x), good(x))
        assert good.backbone.v is None, "state left behind after forward"
    forgetful = _wrap(_UserLeaky(with_reset=False))
    with torch.no_grad():
        assert not torch.equal(forgetful(x), forgetful(x)), "a model without reset must leak (test has no teeth)"


# -- modes ---------------------------------------------------------------------------------------------


def test_preserve_modes_restores_every_flag_even_on_error():
    net = _sj_net()
    net.train()
    net[1].eval()
    before = [m.training for m in net.modules()]
    with pytest.raises(RuntimeError):
        with preserve_modes(net):
            net.eval()
            raise RuntimeError("boom")
    assert [m.training for m in net.modules()] == before
    with preserve_modes(net):
        net.train()
    assert [m.training for m in net.modules()] == before


def test_training_gated_neuron_keeps_gradients_in_eval():
    """ComplementaryLIFNode spikes through a gradient-free Heaviside in eval; the harness works around it."""
    net = _sj_net(neuron_cls=neuron.ComplementaryLIFNode)
    model = _wrap(net).eval()
    x = _frames(4, density=0.6)
    with torch.no_grad():
        functional.reset_net(net)
        bare = net(x.transpose(0, 1)).mean(0)
        functional.reset_net(net)
    xr = x.clone().requires_grad_(True)
    functional.reset_net(net)
    bare_out = net(xr.transpose(0, 1)).mean(0)
    functional.reset_net(net)
    assert not bare_out.requires_grad or torch.autograd.grad(bare_out.sum(), xr, allow_unused=True)[0] is None
    logits = model(xr)
    assert torch.equal(logits.detach(), bare)
    (g,) = torch.autograd.grad(logits.sum(), xr)
    assert g.abs().sum() > 0
    assert not any(m.training for m in model.modules())


def test_calibrate_bn_restores_modes_and_momentum():
    torch.manual_seed(0)
    model = models.build("csnn", in_channels=P, num_classes=K, sensor_hw=(H, W), T=T).eval()
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    calibrate_bn(model, _frames(0))
    assert not any(m.training for m in model.modules())
    assert bn.momentum == 0.1 and bn.num_batches_tracked.item() == 3
    assert not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))


# -- surrogates ----------------------------------------------------------------------------------------


def test_make_surrogate_names_and_widths():
    assert isinstance(make_surrogate("sigmoid"), surrogate.Sigmoid) and make_surrogate("sigmoid").alpha == 4.0
    assert make_surrogate("atan", alpha=3.0).alpha == 3.0
    tri = make_surrogate("triangle", width=0.5)
    assert isinstance(tri, surrogate.PiecewiseQuadratic) and tri.alpha == 4.0
    rect = make_surrogate("rect", width=0.5)
    assert isinstance(rect, surrogate.Rect) and rect.alpha == 2.0
    assert isinstance(make_surrogate("ste"), StraightThrough)
    for bad in (dict(name="relu"), dict(name="atan", width=1.0), dict(name="rect", width=1.0, alpha=1.0),
                dict(name="ste", alpha=1.0), dict(name="rect", width=0.0)):
        with pytest.raises(ValueError):
            make_surrogate(**bad)


def test_surrogate_gradients_have_the_documented_shape():
    x = torch.tensor([-0.3, -0.1, 0.0, 0.1, 0.3], requires_grad=True)
    (g,) = torch.autograd.grad(make_surrogate("rect", width=0.4)(x).sum(), x)
    assert torch.equal(g, torch.tensor([0.0, 2.5, 2.5, 2.5, 0.0]))
    (g,) = torch.autograd.grad(make_surrogate("ste")(x).sum(), x)
    assert torch.equal(g, torch.ones(5))
    (g,) = torch.autograd.grad(make_surrogate("atan", alpha=2.0)(x).sum(), x)
    assert math.isclose(g[2].item(), 1.0) and g[0] < g[1] < g[2]
    assert torch.equal(make_surrogate("ste")(x), (x >= 0).float())


def test_override_surrogate_restores_on_error_and_accepts_modules():
    model = _wrap(_sj_net())
    orig = model.backbone[1].surrogate_function
    with pytest.raises(KeyError):
        with override_surrogate(model, "ste"):
            assert isinstance(model.backbone[1].surrogate_function, StraightThrough)
            raise KeyError("boom")
    assert model.backbone[1].surrogate_function is orig
    proto = surrogate.Sigmoid(alpha=1.0)
    with override_surrogate(model, proto) as n:
        assert n == 1
        s = model.backbone[1].surrogate_function
        assert isinstance(s, surrogate.Sigmoid) and s is not proto and s.alpha == 1.0
    with override_surrogate(model, lambda: surrogate.ATan(alpha=5.0)):
        assert model.backbone[1].surrogate_function.alpha == 5.0
    with pytest.raises(ValueError, match="no spiking neuron"):
        with override_surrogate(nn.Linear(2, 2), "atan"):
            pass
    with pytest.raises(ValueError, match="one of"):
        with override_surrogate(model, "relu"):
            pass
    assert model.backbone[1].surrogate_function is orig


def test_override_on_the_attack_view_reaches_the_model():
    model = _wrap(_sj_net())
    view = model.attack_view()
    orig = model.backbone[1].surrogate_function
    with override_surrogate(view, "rect"):
        assert isinstance(model.backbone[1].surrogate_function, surrogate.Rect)
    assert model.backbone[1].surrogate_function is orig


# -- attack view ---------------------------------------------------------------------------------------


def test_torchattacks_runs_on_the_attack_view():
    model = _wrap(_sj_net())
    view = model.attack_view()
    model.eval()  # after the view was made: the view must follow
    x = view.pack(_frames(5))
    y = view(x).argmax(1)
    adv = torchattacks.PGDL2(view, eps=1.0, alpha=0.5, steps=2)(x, (y + 1) % K)
    assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
    assert (adv - x).flatten(1).norm(dim=1).max() <= 1.0 + 1e-4
    assert not torch.equal(adv, x)
    assert not any(m.training for m in model.modules())
    with pytest.raises(ValueError, match="T\\*P channels"):
        view(torch.rand(1, T, P, H, W))


# -- registry and CLI ----------------------------------------------------------------------------------


@pytest.fixture
def scratch_registry():
    saved = dict(models._REGISTRY)
    yield
    models._REGISTRY.clear()
    models._REGISTRY.update(saved)


def test_registry_lists_every_family():
    expected = {"csnn", "psn-csnn", "spikformer", "qkformer", "sdt", "ms-resnet", "maxformer", "plain-lif"}
    assert expected <= set(models.names())
    assert [n for n, _ in models.describe()] == models.names()
    assert all(d for _, d in models.describe())
    assert "Rect" in dict(models.describe())["ms-resnet"]


def test_register_user_factory_and_module_function_strings(scratch_registry):
    models.register("bare", lambda **kw: _sj_net(), "a bare multi-step module")
    with pytest.raises(ValueError, match="already registered"):
        models.register("bare", lambda **kw: _sj_net(), "again")
    m = models.build("bare", in_channels=P, num_classes=K, sensor_hw=(H, W), T=T)
    assert isinstance(m, SpikingClassifier) and m(_frames(0)).shape == (3, K)
    m = models.build("snnsec.models.csnn:csnn", in_channels=P, num_classes=K, sensor_hw=(H, W), T=T, hidden=16)
    assert m.arch == "snnsec.models.csnn:csnn" and m.arch_kwargs == {"hidden": 16}
    with pytest.raises(ValueError, match="cannot import"):
        models.build("no_such_pkg.mod:fn", in_channels=P, num_classes=K, sensor_hw=(H, W), T=T)
    with pytest.raises(ValueError, match="no callable"):
        models.build("snnsec.models.csnn:nope", in_channels=P, num_classes=K, sensor_hw=(H, W), T=T)
    with pytest.raises(ValueError, match="unknown model 'resnet'.*csnn"):
        models.build("resnet", in_channels=P, num_classes=K, sensor_hw=(H, W), T=T)


@pytest.mark.parametrize("name", models.names())
def test_models_also_run_on_128x128_sensors(name):
    torch.manual_seed(0)
    m = models.build(name, in_channels=P, num_classes=K, sensor_hw=(128, 128), T=2).eval()
    x = (torch.rand(1, 2, P, 128, 128) < 0.1).float()
    with torch.no_grad():
        assert m(x).shape == (1, K)


def test_cli_lists_the_registry(capsys):
    assert cli_main(["models"]) == 0
    out = capsys.readouterr().out
    for name in models.names():
        assert name in out
    assert "package.module:function" in out


def test_harness_exports():
    for name in harness.__all__:
        assert hasattr(harness, name), name
