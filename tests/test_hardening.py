"""TCL / STCL losses, augmentations, adversarial training objects and recipes, on a tiny SNN."""

from __future__ import annotations

import argparse
import math

import pytest
import torch
from spikingjelly.activation_based import functional, neuron, surrogate
from torch import nn

from snnsec.hardening import (PGD, AdversarialLoss, EventAugment, Recipe, STCLLoss, TCLLoss, add_arguments, build_recipe,
                              contrastive_masks, recipe_from_args, supcon_loss)
from snnsec.data.augment import jitter_time, shift
from snnsec.hardening.tcl import anchor_labels


class TinySNN(nn.Module):
    """Stand-in with the harness's surface: forward -> [B, K], taps() with features_seq, input_shape."""

    def __init__(self, T=4, P=2, H=6, W=6, K=3, D=8):
        super().__init__()
        self.T, self.num_classes, self._chw = T, K, (P, H, W)
        self.fc = nn.Linear(P * H * W, D)
        nn.init.normal_(self.fc.weight, 0.0, 0.5)  # strong enough that the neurons fire from the first step
        self.lif = neuron.LIFNode(step_mode="m", surrogate_function=surrogate.Sigmoid(), detach_reset=True)
        self.head = nn.Linear(D, K)

    def taps(self, x, return_logits=False):
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"expected [B, {self.input_shape}], got {tuple(x.shape)}")  # as the harness refuses
        functional.reset_net(self)
        s = self.lif(self.fc(x.transpose(0, 1).flatten(2)))  # [T, B, D]
        taps = {"features_seq": s.transpose(0, 1), "features": s.mean(0)}
        return (taps, self.head(s).mean(0)) if return_logits else taps

    def forward(self, x):
        return self.taps(x, return_logits=True)[1]

    @property
    def input_shape(self):
        return (self.T, *self._chw)


def _batch(B=6, T=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(B, T, 2, 6, 6, generator=g) < 0.4).float()
    y = torch.arange(B) % 3
    return x, y


# ---- the contrastive loss ----------------------------------------------------------------------

def test_masks_over_sample_and_step_anchors():
    lab = anchor_labels(torch.tensor([0, 0, 1]), T=2)  # anchors (i, t): (0,0) (0,1) (1,0) (1,1) (2,0) (2,1)
    assert lab.tolist() == [0, 0, 0, 0, 1, 1]
    pos, neg = contrastive_masks(lab)
    expect_pos = torch.tensor([[0, 1, 1, 1, 0, 0],
                               [1, 0, 1, 1, 0, 0],
                               [1, 1, 0, 1, 0, 0],
                               [1, 1, 1, 0, 0, 0],
                               [0, 0, 0, 0, 0, 1],
                               [0, 0, 0, 0, 1, 0]], dtype=torch.bool)
    assert torch.equal(pos, expect_pos)
    assert torch.equal(neg, ~expect_pos & ~torch.eye(6, dtype=torch.bool))
    # the same sample at its other step is a positive (temporal constraint)
    assert pos[4, 5] and pos[0, 1]
    # two views: anchor (view 0, sample 0, t 0) and (view 1, sample 0, t 1) are positives
    lab2 = anchor_labels(torch.tensor([0, 1]), T=2, views=2)
    assert lab2.tolist() == [0, 0, 1, 1, 0, 0, 1, 1]
    assert contrastive_masks(lab2)[0][0, 5]


def test_supcon_equals_hand_computation():
    z = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 2])  # anchors 2 and 3 have no positive: excluded
    tau = 0.5
    # anchor 0, positive 1: s01 = 0.6/0.5 = 1.2; denominator over b != 0: s01, s02 = 0, s03 = -2
    l0 = -(1.2 - math.log(math.exp(1.2) + math.exp(0.0) + math.exp(-2.0)))
    # anchor 1, positive 0: s10 = 1.2; s12 = 0.8/0.5 = 1.6; s13 = -0.6/0.5 = -1.2
    l1 = -(1.2 - math.log(math.exp(1.2) + math.exp(1.6) + math.exp(-1.2)))
    assert supcon_loss(z, labels, tau).item() == pytest.approx((l0 + l1) / 2, rel=1e-6)


def test_supcon_averages_over_several_positives_and_normalises():
    z = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])  # not unit length: normalised inside
    labels = torch.tensor([0, 0, 0])
    tau = 1.0
    u = torch.nn.functional.normalize(z, dim=1)
    s = (u @ u.T).tolist()
    total = 0.0
    for a in range(3):
        others = [b for b in range(3) if b != a]
        logden = math.log(sum(math.exp(s[a][b]) for b in others))
        total += -sum(s[a][p] - logden for p in others) / 2
    assert supcon_loss(z, labels, tau).item() == pytest.approx(total / 3, rel=1e-6)


def test_supcon_without_positives_is_zero_and_bad_input_raises():
    z = torch.randn(3, 4, requires_grad=True)
    assert supcon_loss(z, torch.tensor([0, 1, 2])).item() == 0.0
    with pytest.raises(ValueError, match="tau"):
        supcon_loss(z, torch.tensor([0, 0, 1]), tau=0)
    with pytest.raises(ValueError, match=r"\[N, d\]"):
        supcon_loss(torch.randn(2, 3, 4), torch.tensor([0, 0]))


def test_tcl_loss_is_ce_plus_lambda_times_contrastive():
    torch.manual_seed(0)
    model, (x, y) = TinySNN(), _batch()
    loss_fn = TCLLoss(8, tau=0.2, lam=0.5, proj_dim=4)
    total, logits_out = loss_fn(model, x, y)
    taps, logits = model.taps(x, return_logits=True)
    ce = torch.nn.functional.cross_entropy(logits, y)
    z = loss_fn.head(taps["features_seq"].reshape(-1, 8))
    con = supcon_loss(z, y.repeat_interleave(4), 0.2)  # sample-major anchors: (i, t) -> i*T + t
    assert total.item() == pytest.approx((ce + 0.5 * con).item(), rel=1e-5)
    assert torch.allclose(logits_out, logits)
    assert loss_fn.last["contrastive"] == pytest.approx(con.item(), rel=1e-5)


def test_contrastive_gradients_reach_backbone_and_head():
    torch.manual_seed(0)
    model, (x, y) = TinySNN(), _batch()
    loss_fn = TCLLoss(8, lam=1.0)
    loss_fn.contrastive(model.taps(x)["features_seq"].unsqueeze(0), y).backward()
    assert model.fc.weight.grad is not None and model.fc.weight.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in loss_fn.head.parameters() if p.ndim == 2)
    # the readout gets no gradient from the contrastive term: only through CE
    assert model.head.weight.grad is None


def test_tcl_training_steps_lower_the_loss():
    torch.manual_seed(0)
    model, (x, y) = TinySNN(), _batch(B=12)
    loss_fn = TCLLoss(8, tau=0.5)
    opt = torch.optim.Adam([*model.parameters(), *loss_fn.parameters()], lr=1e-2)
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss, _ = loss_fn(model, x, y)
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < first


# ---- STCL views ---------------------------------------------------------------------------------

def test_stcl_views_differ_and_keep_shape_and_domain():
    torch.manual_seed(0)
    x, y = _batch()
    loss_fn = STCLLoss(8)
    v = loss_fn.views(x)
    assert v.shape == (12, *x.shape[1:])
    assert not torch.equal(v[:6], v[6:])
    assert not torch.equal(v[:6], x)
    assert set(v.unique().tolist()) <= {0.0, 1.0}  # binary frames stay binary


def test_stcl_loss_backpropagates_through_both_views():
    torch.manual_seed(0)
    model, (x, y) = TinySNN(), _batch()
    loss_fn = STCLLoss(8, lam=1.0)
    loss, logits = loss_fn(model, x, y)
    assert logits.shape == (6, 3)  # the first view's, matching y
    loss.backward()
    assert torch.isfinite(loss) and model.fc.weight.grad.abs().sum() > 0
    assert set(loss_fn.last) == {"ce", "contrastive"}


def test_shift_translates_each_sample_without_losing_inner_events():
    x = torch.zeros(3, 2, 1, 9, 9)
    x[:, :, :, 4, 4] = 1.0
    g = torch.Generator().manual_seed(1)
    out = shift(x, 2, g)
    assert torch.equal(out.sum((1, 2, 3, 4)), x.sum((1, 2, 3, 4)))
    pos = [tuple(torch.nonzero(out[b, 0, 0]).flatten().tolist()) for b in range(3)]
    assert all(abs(r - 4) <= 2 and abs(c - 4) <= 2 for r, c in pos)
    assert torch.equal(shift(x, 0), x)


def test_time_jitter_moves_counts_to_neighbour_steps_and_keeps_them():
    x = torch.zeros(1, 5, 1, 4, 4)
    x[0, 2] = 3.0
    out = jitter_time(x, 1.0, torch.Generator().manual_seed(0))
    assert out.sum() == x.sum()
    assert out[0, 2].sum() == 0 and out[0, [0, 4]].sum() == 0  # every entry moved exactly one step


def test_augment_drop_and_polarity_flip_and_validation():
    x = torch.zeros(2, 3, 2, 4, 4)
    x[:, :, 0] = 1.0
    assert EventAugment(max_shift=0, drop=1.0, time_jitter=0, flip_polarity=0)(x).sum() == 0
    flipped = EventAugment(max_shift=0, drop=0, time_jitter=0, flip_polarity=1.0)(x)
    assert flipped[:, :, 1].sum() == x[:, :, 0].sum() and flipped[:, :, 0].sum() == 0
    with pytest.raises(ValueError, match="drop"):
        EventAugment(drop=1.5)
    with pytest.raises(ValueError, match=r"\[B, T, P, H, W\]"):
        EventAugment()(torch.zeros(3, 4))


# ---- adversarial training ----------------------------------------------------------------------

def test_pgd_stays_in_ball_and_domain_raises_loss_and_restores_modes():
    torch.manual_seed(0)
    model, (x, y) = TinySNN(), _batch(B=12)
    model.train()
    eps = 8 / 255
    x_adv = PGD(model, eps=eps, alpha=2 / 255, steps=10)(x, y)
    assert model.training and model.lif.training
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    ce = torch.nn.functional.cross_entropy
    with torch.no_grad():
        assert ce(model(x_adv), y) > ce(model(x), y)
    assert torch.equal(PGD(model, eps=0)(x, y), x)
    with pytest.raises(ValueError, match="labels"):
        PGD(model)(x)


@pytest.mark.parametrize("method", ["pgd", "trades"])
def test_adversarial_loss_wraps_tcl_and_trains_head_and_backbone(method):
    torch.manual_seed(0)
    model, (x, y) = TinySNN(), _batch()
    loss_fn = AdversarialLoss(TCLLoss(8), method=method, eps=4 / 255, alpha=2 / 255, steps=2)
    assert len(list(loss_fn.parameters())) == 4  # the projection head
    loss, logits = loss_fn(model, x, y)
    loss.backward()
    assert torch.isfinite(loss) and logits.shape == (6, 3)
    assert model.fc.weight.grad.abs().sum() > 0
    assert next(loss_fn.parameters()).grad is not None
    if method == "trades":
        assert loss.item() == pytest.approx(loss_fn.last["natural"] + 6.0 * loss_fn.last["robust"], rel=1e-5)


# ---- recipes ------------------------------------------------------------------------------------

def test_recipe_dict_round_trip_and_names():
    r = Recipe(loss="tcl", tau=0.2, lam=0.5, adv="pgd", adv_eps=4 / 255)
    d = r.to_dict()
    assert d["name"] == "tcl+pgd" and d["tau"] == 0.2 and "augment" not in d and "trades_beta" not in d
    assert build_recipe(d) == r
    assert build_recipe(None) == Recipe() and Recipe().to_dict() == {"name": "ce", "loss": "ce", "adv": "none"}
    s = Recipe(loss="stcl", augment={"drop": 0.3}).to_dict()
    assert s["augment"]["drop"] == 0.3 and s["augment"]["max_shift"] == 2


def test_recipe_rejects_bad_fields_naming_them():
    with pytest.raises(ValueError, match="model.json.*unknown recipe field.*'temp'"):
        build_recipe({"loss": "tcl", "temp": 0.1}, source="model.json")
    with pytest.raises(ValueError, match="'loss'.*'mse'"):
        build_recipe({"loss": "mse"})
    with pytest.raises(ValueError, match="'tau'"):
        Recipe(loss="tcl", tau=0.0)
    with pytest.raises(ValueError, match="max_shift"):
        Recipe(loss="stcl", augment={"max_shift": -1})


def test_recipe_build_gives_the_right_objects():
    model = TinySNN()
    assert isinstance(Recipe(loss="tcl").build(model), TCLLoss)
    assert Recipe(loss="tcl").build(model).head.net[0].in_features == 8  # probed from features_seq
    stcl_at = Recipe(loss="stcl", adv="trades", trades_beta=3.0).build(model)
    assert isinstance(stcl_at, AdversarialLoss) and isinstance(stcl_at.base, STCLLoss) and stcl_at.beta == 3.0
    ce = Recipe().build(model)
    assert not isinstance(ce, nn.Module)  # the training loop's own CrossEntropy: nothing extra to optimise
    x, y = _batch()
    loss, logits = ce(model, x, y)
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(model(x), y).item(), rel=1e-6)


def test_cli_flags_map_to_recipe():
    p = argparse.ArgumentParser()
    add_arguments(p, builtin_losses=("ce", "mse-rate"))
    r = recipe_from_args(p.parse_args(["--loss", "stcl", "--tcl-tau", "0.1", "--tcl-lambda", "2", "--aug-drop", "0.2",
                                       "--adv", "pgd", "--adv-eps", "4/255", "--adv-steps", "3"]))
    assert (r.loss, r.tau, r.lam, r.augment["drop"], r.adv, r.adv_steps) == ("stcl", 0.1, 2.0, 0.2, "pgd", 3)
    assert r.adv_eps == pytest.approx(4 / 255)
    assert recipe_from_args(p.parse_args(["--loss", "ce", "--adv", "trades"])).name == "ce+trades"
    # plain training with a built-in loss is the training loop's own business
    assert recipe_from_args(p.parse_args([])) is None
    assert recipe_from_args(p.parse_args(["--loss", "mse-rate"])) is None
    with pytest.raises(ValueError, match="--adv pgd works with --loss"):
        recipe_from_args(p.parse_args(["--loss", "mse-rate", "--adv", "pgd"]))
    with pytest.raises(ValueError, match="command line.*'tau'"):
        recipe_from_args(p.parse_args(["--loss", "tcl", "--tcl-tau", "-1"]))
    with pytest.raises(SystemExit):
        p.parse_args(["--loss", "supcon"])
