"""Harness contract, checked on every registered model.

If one of these fails, every number the suite prints for that model is wrong while looking right:
state leaking between forwards (a model that looks stochastic or "robust"), dead input gradients
in eval mode (attacks that silently fail), modes or surrogates left switched after an attack.

Models are tiny (T=4, 34x34, batch 3), untrained, with BatchNorm calibrated on the test input so
that deep layers spike in eval mode (fresh BN leaves them silent: constant logits, zero gradients).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from snnsec import harness, models
from snnsec.harness import calibrate_bn, override_surrogate, reset_backbone, spiking_neurons

T, P, H, W, B, K = 4, 2, 34, 34, 3, 10


def _frames(seed: int, batch: int = B, density: float = 0.25) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, T, P, H, W, generator=g) < density).float()


# every registered model, and the variants a keyword selects that change the network's structure
VARIANTS = [(name, {}) for name in models.names()] + [("spikformer", {"cml": False}), ("spikingformer", {"cml": True})]


@pytest.fixture(scope="module", params=VARIANTS, ids=[n + "".join(f"-{k}={v}" for k, v in kw.items()) for n, kw in VARIANTS])
def built(request):
    torch.manual_seed(0)
    name, kwargs = request.param
    model = models.build(name, in_channels=P, num_classes=K, sensor_hw=(H, W), T=T, **kwargs)
    x = _frames(1)
    calibrate_bn(model, x)
    model.eval()
    return name, model, x


# -- checks shared with the teeth test ------------------------------------------------------------


def check_stateless(model, x: torch.Tensor) -> None:
    """Same input -> same logits after other inputs of the same and of a different batch size."""
    with torch.no_grad():
        first = model(x)
        assert torch.equal(model(x), first), "repeated call changed the logits"
        model(_frames(7, batch=x.shape[0], density=0.6))
        assert torch.equal(model(x), first), "an intervening batch of the same size changed the logits"
        small = model(x[:1])
        assert torch.equal(model(x), first), "a smaller batch in between changed the logits"
        assert torch.allclose(small, first[:1], atol=1e-5), "a sample's logits depend on the batch it is in"


def check_eval_gradient(model, x: torch.Tensor) -> None:
    """Eval-mode logits with autograd on equal no-grad eval logits, and every sample has an input gradient."""
    assert not model.training
    with torch.no_grad():
        plain = model(x)
    xr = x.clone().requires_grad_(True)
    logits = model(xr)
    assert torch.equal(logits, plain)
    y = torch.arange(x.shape[0]) % K
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, y), xr)
    per_sample = grad.flatten(1).abs().sum(1)
    assert (per_sample > 0).all(), f"zero input gradient for samples {torch.nonzero(per_sample == 0).flatten().tolist()}"


# -- the contract, per registered model -------------------------------------------------------------


def test_forward_shape_and_batch_first(built):
    name, model, x = built
    logits = model(x)
    assert logits.shape == (B, K)
    assert model.input_shape == (T, P, H, W) and model.T == T and model.num_classes == K
    assert model.arch == name


def test_state_is_reset_between_forwards(built):
    _, model, x = built
    check_stateless(model, x)


def test_eval_logits_match_bare_backbone_and_attack_mode(built):
    name, model, x = built
    check_eval_gradient(model, x)
    # by hand: reset, time-first sequence through the bare backbone in eval mode, mean over T
    bb = model.backbone
    with torch.no_grad():
        reset_backbone(bb)
        out = bb(x.transpose(0, 1))
        reset_backbone(bb)
    if isinstance(out, tuple):
        out = out[1]  # membrane record of a record-returning backbone
    by_hand = out.mean(0) if out.ndim == 3 else out
    assert torch.allclose(model(x), by_hand, atol=1e-6)


def test_train_mode_forward_backward(built):
    _, model, x = built
    with harness.preserve_modes(model):
        model.train()
        xr = x.clone().requires_grad_(True)
        model(xr).sum().backward()
        model.zero_grad(set_to_none=True)
    assert xr.grad is not None and xr.grad.abs().sum() > 0
    assert not any(m.training for m in model.modules())


def test_surrogate_override_changes_gradients_and_is_restored(built, monkeypatch):
    _, model, x = built
    invalidated = []
    real = harness.sj_functional.invalidate_reset_cache

    def spy(net):
        invalidated.append(net)
        real(net)

    monkeypatch.setattr(harness.sj_functional, "invalidate_reset_cache", spy)

    def logits_and_grad():
        xr = x.clone().requires_grad_(True)
        logits = model(xr)
        (g,) = torch.autograd.grad(logits.sum(), xr)
        return logits.detach(), g

    before = [(m, attr, getattr(m, attr)) for _, m, attr in spiking_neurons(model)]
    assert before, "no spiking neuron found"
    logits0, g0 = logits_and_grad()
    # PiecewiseQuadratic (triangle) is no registered model's default surrogate
    with override_surrogate(model, "triangle", width=0.5) as n:
        assert model.backbone in invalidated, "spikingjelly's reset cache was not invalidated on entry"
        assert n == len(before)
        swapped = [getattr(m, attr) for m, attr, _ in before]
        assert len({id(s) for s in swapped}) == len(swapped), "surrogate instances are shared between neurons"
        logits1, g1 = logits_and_grad()
        invalidated.clear()
    assert torch.equal(logits1, logits0), "a surrogate override changed the forward pass"
    assert not torch.allclose(g1, g0), "the surrogate override did not change the input gradient"
    assert all(getattr(m, attr) is orig for m, attr, orig in before), "original surrogates not restored"
    assert model.backbone in invalidated, "spikingjelly's reset cache was not invalidated on exit"
    logits2, g2 = logits_and_grad()
    assert torch.equal(logits2, logits0) and torch.equal(g2, g0)


def test_taps_shapes_and_consistency(built):
    _, model, x = built
    with torch.no_grad():
        taps, logits = model.taps(x, return_logits=True)
        assert torch.equal(logits, model(x))
    for key in ("features", "membrane", "last_conv"):
        seq = taps[f"{key}_seq"]
        assert seq.ndim == 3 and seq.shape[:2] == (B, T), (key, seq.shape)
        assert taps[key].shape == (B, seq.shape[2])
        assert torch.allclose(taps[key], seq.mean(1), atol=1e-6)
    assert taps["last_conv"].shape[1] == model.last_conv()[1].out_channels
    # the taps pass must leave the original surrogates and a clean state behind
    check_stateless(model, x)


def test_attack_view_matches_forward(built):
    _, model, x = built
    view = model.attack_view()
    packed = view.pack(x)
    assert packed.shape == (B, T * P, H, W)
    with torch.no_grad():
        assert torch.equal(view(packed), model(x))
    assert torch.equal(view.unpack(packed), x)


# -- teeth: the checks above catch a model that forgets to reset --------------------------------------


def test_state_check_catches_a_missing_reset():
    torch.manual_seed(0)
    model = models.build("csnn", in_channels=P, num_classes=K, sensor_hw=(H, W), T=T)
    x = _frames(1)
    calibrate_bn(model, x)
    model.eval()
    check_stateless(model, x)

    class Forgetful(torch.nn.Module):
        """A wrapper that forgets to reset its neurons."""

        def __init__(self, backbone):
            super().__init__()
            self.backbone = backbone

        def forward(self, frames):
            return self.backbone(frames.transpose(0, 1)).mean(0)

    with pytest.raises(AssertionError):
        check_stateless(Forgetful(model.backbone), x)


def test_a_neuron_swapped_in_after_the_first_forward_is_reset_too():
    """spikingjelly caches the modules it resets; the harness notices structural changes."""
    from spikingjelly.activation_based import neuron, surrogate

    torch.manual_seed(0)
    model = models.build("csnn", in_channels=P, num_classes=K, sensor_hw=(H, W), T=T)
    x = _frames(1)
    calibrate_bn(model, x)
    model.eval()
    check_stateless(model, x)
    old = model.backbone[2]
    model.backbone[2] = neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan(), detach_reset=True, step_mode="m")
    assert old is not None  # keep the old neuron alive, as the spikingjelly gotcha requires
    check_stateless(model, x)


def _order(model) -> list[str]:
    """The module types of a model's forward path, containers and neurons' internals left out."""
    from spikingjelly.activation_based.neuron import LIFNode

    out = []
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.MaxPool2d, LIFNode)):
            out.append({"Conv2d": "conv", "BatchNorm2d": "bn", "MaxPool2d": "pool", "LIFNode": "lif"}[type(m).__name__])
    return out


@pytest.mark.parametrize("arch", ["spikformer", "spikingformer"])
def test_cml_moves_each_pool_before_its_neuron_and_keeps_the_parameters(arch):
    kw = dict(in_channels=P, num_classes=K, sensor_hw=(H, W), T=T)
    cml, original = models.build(arch, cml=True, **kw), models.build(arch, cml=False, **kw)
    assert [(k, v.shape) for k, v in cml.state_dict().items()] != [] and \
        sorted((v.shape for v in cml.parameters()), key=str) == sorted((v.shape for v in original.parameters()), key=str)
    stem = lambda m: " ".join(_order(m)[:16])  # noqa: E731  (the patch stem / tokenizer)
    # CML: BN -> pool -> LIF (the pool sees membrane inputs); original: LIF -> pool (it sees spikes)
    assert "bn pool lif" in stem(cml) and "lif pool" not in stem(cml)
    assert "lif pool" in stem(original) and "bn pool" not in stem(original)


def test_lean_kernels_give_the_same_logits_and_input_gradients_and_restore_the_classes(built):
    from snnsec.lean_kernels import lean_kernels

    _, model, x = built
    classes = [type(m) for m in model.modules()]
    y = torch.arange(x.shape[0]) % K

    def input_gradient():
        xr = x.clone().requires_grad_(True)
        return torch.autograd.grad(F.cross_entropy(model(xr), y), xr)[0]

    with torch.no_grad():
        plain = model(x)
    plain_grad = input_gradient()
    with lean_kernels(model):
        with torch.no_grad():
            assert torch.equal(model(x), plain)
        check_stateless(model, x)
        assert torch.equal(input_gradient(), plain_grad)
    assert [type(m) for m in model.modules()] == classes
