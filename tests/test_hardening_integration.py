"""snnsec.hardening with the real harness, models, checkpoints and (where landed) training loop and data."""

from __future__ import annotations

import pytest
import torch

from snnsec.checkpoint import load, save
from snnsec.data.spec import DataSpec
from snnsec.hardening import Recipe, build_recipe, recipe_from_meta
from snnsec.hardening.evaluate import accuracy_at_steps, first_steps
from snnsec.models import build


def _csnn(T=4, seed=0):
    torch.manual_seed(seed)
    return build("csnn", in_channels=2, num_classes=3, sensor_hw=(8, 8), T=T, channels=(4, 8), hidden=16)


def _batch(B=6, T=4):
    g = torch.Generator().manual_seed(0)
    return (torch.rand(B, T, 2, 8, 8, generator=g) < 0.4).float(), torch.arange(B) % 3


@pytest.mark.parametrize("name", ["tcl", "stcl", "tcl+pgd", "stcl+trades"])
def test_recipe_losses_reach_the_backbone_convolutions(name):
    model, (x, y) = _csnn(), _batch()
    model.train()
    loss_fn = build_recipe(name).build(model)
    assert next(loss_fn.parameters()).shape[1] == 16  # head sized from features_seq (hidden=16)
    loss, logits = loss_fn(model, x, y)
    assert logits.shape == (6, 3)
    loss.backward()
    conv = model.last_conv()[1]
    assert torch.isfinite(loss) and conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert model.training  # adversarial generation restored the training mode


def test_first_steps_on_the_harness_model():
    model, (x, _) = _csnn(T=4), _batch(T=4)
    model.eval()
    with torch.no_grad():
        with first_steps(model, 2):
            assert model.input_shape[0] == 2
            short = model(x[:, :2])
        assert model.T == 4 and model(x).shape == (6, 3)
        with pytest.raises(ValueError):
            model(x[:, :2])  # the harness refuses a 2-step input outside first_steps
    acc = accuracy_at_steps(model, x, torch.arange(6) % 3, (1, 2))
    assert acc[2] == pytest.approx((short.argmax(1) == torch.arange(6) % 3).float().mean().item())
    assert set(acc) == {1, 2, 4}


def test_checkpoint_records_the_recipe(tmp_path):
    model = _csnn()
    recipe = Recipe(loss="stcl", lam=0.5, adv="pgd", adv_eps=4 / 255, augment={"flip_polarity": 0.0})
    spec = DataSpec("toy", (8, 8, 2), T=4, classes=("a", "b", "c"))
    # the layout snnsec.train.run_training writes
    save(tmp_path / "ck", model, arch="csnn", arch_kwargs={"channels": [4, 8], "hidden": 16}, spec=spec,
         recipe={**recipe.to_dict(), "train": {"epochs": 1, "lr": 1e-3}})
    loaded, meta = load(tmp_path / "ck")
    assert meta["recipe"]["name"] == "stcl+pgd" and meta["recipe"]["augment"]["flip_polarity"] == 0.0
    assert recipe_from_meta(meta["recipe"]) == recipe
    assert recipe_from_meta({}) == Recipe()
    with pytest.raises(ValueError, match="model.json: field 'recipe'.*unknown recipe field"):
        recipe_from_meta({"loss": "tcl", "tempo": 1})


@pytest.mark.parametrize("name", ["tcl", "stcl+pgd"])
def test_training_loop_optimises_the_projection_head(name):
    from snnsec.train import TrainConfig, train

    model = _csnn()
    x, y = _batch(B=16)
    loss_fn = build_recipe(name).build(model)
    head_before = [p.detach().clone() for p in loss_fn.parameters()]
    hist = train(model, torch.utils.data.TensorDataset(x, y), None, TrainConfig(epochs=1, batch_size=8), progress=False,
                 loss_fn=loss_fn)
    assert all(not torch.equal(a, b) for a, b in zip(head_before, loss_fn.parameters()))
    assert 0.0 <= hist["train_accuracy"][0] <= 1.0  # the losses hand the loop their logits


def test_snnsec_train_path_records_the_recipe_in_checkpoint_and_rows(tmp_path):
    from snnsec import results
    from snnsec.train import TrainConfig, run_training

    recipe = Recipe(loss="tcl", tau=0.1, adv="pgd")
    res = run_training(data="ndigits", model="csnn", config=TrainConfig(epochs=0), out=tmp_path / "ck", T=4,
                       model_kwargs={"channels": [4, 8], "hidden": 16}, recipe=recipe, store=tmp_path / "r.sqlite",
                       progress=False)
    _, meta = load(res.out.parent if res.out.is_file() else res.out)
    assert recipe_from_meta(meta["recipe"]) == recipe
    rows = results.load(tmp_path / "r.sqlite")
    assert set(rows["defense"]) == {"hardening:tcl+pgd"}


@pytest.mark.slow  # loads and frames the whole ndigits train split (1,437 recordings) for the poisoning wrapper
def test_hardening_bench_cell_end_to_end_on_ndigits():
    from snnsec.bench import get_kind

    out = get_kind("hardening")({"kind": "hardening", "dataset": "ndigits", "model": "csnn", "T": 4, "epochs": 0,
                                 "model_kwargs": {"channels": [4, 8], "hidden": 16}, "recipe": "stcl", "steps": [1, 2],
                                 "eps": ["8/255"], "robust_n": 8, "seed": 0,
                                 "backdoor": {"trigger": "static", "rate": 0.1, "target": 0}},
                                progress=False)
    m = out["metrics"]
    assert set(m) == {"accuracy_at_t1", "accuracy_at_t2", "accuracy_at_t4", "clean_accuracy", "attack_success_rate",
                      "backdoor_robust_accuracy", "robust_accuracy_eps8/255", "robust_reliable"}
    assert m["clean_accuracy"] == m["accuracy_at_t4"] and all(0 <= v <= 1 for v in m.values())
    assert out["defense"] == "hardening:stcl" and out["defense_params"]["recipe"]["loss"] == "stcl"
    assert out["attack"] == "backdoor:static"
