"""Per-sample results that do not depend on batch-mates, and the cascade that relies on them."""

from __future__ import annotations

import pytest
import torch

from adversarial_helpers import hard_threshold_copy, trained_csnn
from snnsec.attacks.adversarial import EvalConfig, evaluate
from snnsec.attacks.adversarial.adapter import Attack
from snnsec.attacks.adversarial.evaluate import cascade_order, leading_attacks
from snnsec.attacks.adversarial.gradients import gradient_mode
from snnsec.attacks.adversarial.per_sample import FixedBatch, keyed_draws


@pytest.fixture(scope="module")
def trained():
    return trained_csnn()


def test_fixed_batch_gives_each_sample_the_same_logits_in_any_batch(trained):
    model, x, _ = trained
    fixed = FixedBatch(model, 4)
    with torch.no_grad():
        full = fixed(x)
        for idx in (torch.tensor([3]), torch.tensor([5, 0, 17]), torch.arange(1, 48, 2), torch.tensor([47, 2, 9, 30, 31])):
            assert torch.equal(fixed(x[idx]), full[idx])
    assert fixed.num_classes == model.num_classes and fixed.input_shape == model.input_shape
    # the wrapper has no mode of its own
    model.train()
    assert fixed.training
    model.eval()
    assert not fixed.training


@pytest.mark.parametrize("attack", ["sapgd", "pgd"])
def test_assg_statistics_follow_each_sample_whatever_the_chunks(trained, attack):
    # ASSG's statistics carry over an attack's iterations per sample: chunk k of a batch must not
    # inherit chunk k - 1's (they did before select_chunk, which weakened ASSG by 22 points at 8/255)
    model, x, y = trained
    idx = torch.arange(12)
    with torch.no_grad():
        keep = model(x[idx]).argmax(1) == y[idx]
    idx = idx[keep][:6]
    runs = {}
    for size in (1, 2, 6):
        atk = Attack(FixedBatch(model, size), attack, 16 / 255, steps=8, seed=1)
        with gradient_mode(model, "assg:0.43"):
            runs[size] = atk(x[idx], y[idx], keys=idx)
    assert torch.equal(runs[2], runs[1]) and torch.equal(runs[6], runs[1])
    assert (runs[1] - x[idx]).abs().amax() > 0


def test_pdsg_sigma_ignores_the_padding_rows(trained):
    # PDSG's sigma is a batch statistic: under FixedBatch the batch is the chunk's real rows, so a
    # batch of 3 in a chunk of 8 gets the gradient it gets alone, and a chunk-mate changes it
    model, x, y = trained
    loss = torch.nn.CrossEntropyLoss(reduction="sum")

    def grad(net, xs, ys):
        xs = xs.clone().requires_grad_(True)
        with gradient_mode(model, "pdsg"):
            (g,) = torch.autograd.grad(loss(net(xs), ys), xs)
        return g

    alone = grad(model, x[:3], y[:3])
    padded = grad(FixedBatch(model, 8), x[:3], y[:3])
    torch.testing.assert_close(padded, alone, rtol=1e-5, atol=1e-7)
    assert alone.abs().amax() > 0
    assert not torch.allclose(grad(FixedBatch(model, 8), x[:4], y[:4])[:3], alone)
    # after a FixedBatch forward the model's own batches are whole again
    torch.testing.assert_close(grad(model, x[:5], y[:5]), grad(FixedBatch(model, 5), x[:5], y[:5]), rtol=1e-5, atol=1e-7)


def test_fixed_batch_refuses_a_training_batchnorm():
    import torch.nn as nn

    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.BatchNorm1d(3)).train()
    with pytest.raises(RuntimeError, match="training mode"):
        FixedBatch(net, 2)(torch.rand(5, 4))
    with pytest.raises(ValueError, match="chunk size"):
        FixedBatch(net, 0)


def test_keyed_draws_give_a_sample_its_own_random_start_anywhere(trained):
    model, x, y = trained
    fixed = FixedBatch(model, 4)
    atk = Attack(fixed, "pgd", 8 / 255, seed=3)
    idx = torch.tensor([7, 1, 30, 12])
    full = atk(x, y, keys=torch.arange(x.shape[0]))
    part = atk(x[idx], y[idx], keys=idx)
    assert torch.equal(part, full[idx])
    # without keys, the i-th sample of any batch gets the i-th slice of one stream
    assert not torch.equal(atk(x[idx], y[idx]), full[idx])
    # draws not shaped like the batch keep coming from the global stream; keyed rows differ by key
    with keyed_draws([0, 1], seed=0, rank=2):
        torch.manual_seed(0)
        a, b = torch.rand(2, 3), torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(b, torch.rand(3))
    assert not torch.equal(a[0], a[1])


@pytest.mark.parametrize("attacks", [("pgd", "apgd", "square"), ("fgsm", "pgd", "cw")])
def test_cascade_equals_the_full_run_sample_by_sample(trained, attacks):
    model, x, y = trained
    # the quadrant csnn is robust up to 32/255; PGD breaks some samples at 64/255 and all at 128/255
    kw = dict(attacks=attacks, eps=("8/255", "64/255", "128/255"), fast=True, queries=60, steps_check=True)
    full = evaluate(model, x, y, EvalConfig(cascade=False, **kw), progress=False)
    fast = evaluate(model, x, y, EvalConfig(cascade=True, **kw), progress=False)
    for e in full.config.eps:
        assert torch.equal(full.robust_mask(e), fast.robust_mask(e)), e
    assert [(r["check"], r["passed"], r.get("estimator")) for r in full.check_rows] == \
           [(r["check"], r["passed"], r.get("estimator")) for r in fast.check_rows]
    assert full.reliable == fast.reliable
    cost = lambda ev: sum(r.counts["forward_samples"] for r in ev.runs)  # noqa: E731
    assert cost(fast) < cost(full)
    # the first attack ran on every clean-correct sample in both
    lead = fast.runs[0] if attacks[0] != "fgsm" else next(r for r in fast.runs if r.attack == "fgsm")
    assert torch.equal(lead.attacked, fast.clean_correct)


def test_cascade_per_attack_numbers_are_cumulative(trained):
    model, x, y = trained
    ev = evaluate(model, x, y, EvalConfig(attacks=("square", "pgd"), eps=("64/255",), fast=True, queries=40,
                                          checks=False), progress=False)
    assert [r.attack for r in ev.runs] == ["pgd", "square"]  # white-box first, whatever the order given
    e = ev.config.eps[0]
    assert torch.equal(ev.robust_mask(e, "square"), ev.robust_mask(e))
    sq = next(r for r in ev.runs if r.attack == "square")
    assert torch.equal(sq.attacked, ev.robust_mask(e, "pgd"))
    assert sq.params["cascade"] is True


def test_cascade_order_and_leading_attacks():
    cfg = EvalConfig(attacks=("square", "autoattack", "apgd", "pgd"), gradients=("model", "atan"))
    todo = cascade_order(cfg)
    assert todo == [("pgd", "model"), ("pgd", "atan"), ("apgd", "model"), ("apgd", "atan"),
                    ("autoattack", "model"), ("autoattack", "atan"), ("square", "model")]
    assert leading_attacks(todo) == [("pgd", "model"), ("pgd", "atan")]


def test_masked_model_cascade_stays_unreliable(trained):
    model, x, y = trained
    masked = hard_threshold_copy(model)
    ev = evaluate(masked, x, y, EvalConfig(attacks=("pgd", "square"), eps=("8/255",), fast=True, queries=40),
                  progress=False)
    assert not ev.reliable


def test_a_rate_coded_model_evaluates_through_eot_in_chunks(trained):
    import copy

    m = copy.deepcopy(trained[0])
    m.encoder = "poisson"  # static images [B, P, H, W] are rate coded into T frames
    img = trained[1][:8].mean(1) * 0.9
    cfg = EvalConfig(attacks=("pgd",), eps=("8/255",), fast=True, eot=2, checks=False)
    a, b = (evaluate(m, img, trained[2][:8], cfg, progress=False) for _ in range(2))
    assert torch.equal(a.robust_mask(cfg.eps[0]), b.robust_mask(cfg.eps[0]))


def test_estimator_order_makes_each_estimators_gain_exact(trained):
    model, x, y = trained
    cfg = EvalConfig(attacks=("square", "apgd", "pgd"), gradients=("model", "atan"), order="estimator")
    assert cascade_order(cfg) == [("pgd", "model"), ("apgd", "model"), ("pgd", "atan"), ("apgd", "atan"),
                                  ("square", "model")]
    assert leading_attacks(cascade_order(cfg)) == [("pgd", "model"), ("pgd", "atan")]
    with pytest.raises(ValueError, match="order"):
        EvalConfig(order="random")
    kw = dict(attacks=("pgd", "apgd"), eps=("64/255",), fast=True, checks=False)
    both = evaluate(model, x, y, EvalConfig(gradients=("model", "atan:4"), order="estimator", **kw), progress=False)
    alone = evaluate(model, x, y, EvalConfig(gradients=("model",), **kw), progress=False)
    e = both.config.eps[0]
    steps = both.cumulative(e)
    assert [(s["attack"], s["gradient"]) for s in steps] == [("pgd", "model"), ("apgd", "model"), ("pgd", "atan:4"),
                                                             ("apgd", "atan:4")]
    # the prefix through the model's own estimator is the evaluation that used it alone
    assert steps[1]["robust_accuracy"] == alone.robust_accuracy[e]
    assert steps[-1]["robust_accuracy"] == both.robust_accuracy[e]
    assert [s["robust_accuracy"] for s in steps] == sorted((s["robust_accuracy"] for s in steps), reverse=True)


def test_lean_kernels_leave_every_per_sample_result_unchanged(trained):
    from snnsec.lean_kernels import lean_kernels

    model, x, y = trained
    with lean_kernels(model) as swapped:
        assert swapped > 0
    # ASSG's statistics and HART's recorder live in the surrogate's forward: never bypassed
    kw = dict(attacks=("pgd", "square"), eps=("8/255", "64/255"), fast=True, queries=60,
              gradients=("model", "assg:0.43", "hart:0.5"))
    ref = evaluate(model, x, y, EvalConfig(lean_kernels=False, **kw), progress=False)
    lean = evaluate(model, x, y, EvalConfig(**kw), progress=False)
    for e in ref.config.eps:
        assert torch.equal(ref.robust_mask(e), lean.robust_mask(e)), e
    assert [(r["check"], r["passed"], r["value"]) for r in ref.check_rows] == \
           [(r["check"], r["passed"], r["value"]) for r in lean.check_rows]
    assert [r.counts for r in ref.runs] == [r.counts for r in lean.runs]
