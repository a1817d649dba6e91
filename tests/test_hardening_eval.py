"""Evaluation helpers, config/spec parsing, the recipe table, and the accuracy-vs-time-steps figure
(snnsec.report.figures) drawn from hardening rows."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from snnsec.hardening.evaluate import accuracy_at_steps, eps_label, inference_steps
from snnsec.report.tables import recipe_table
from snnsec.runs.hardening import HardeningConfig, parse_eps
from test_hardening import TinySNN, _batch

REPO = Path(__file__).resolve().parents[1]


def test_accuracy_at_steps_reads_the_first_t_steps():
    torch.manual_seed(0)
    model, (x, y) = TinySNN(T=8), _batch(B=10, T=8)
    model.train()
    acc = accuracy_at_steps(model, x, y, (1, 2, 4), batch_size=3)
    assert list(acc) == [1, 2, 4, 8]
    assert model.training  # modes restored
    assert model.T == 8 and model.input_shape[0] == 8
    with torch.no_grad():
        model.eval()
        seq_logits = model.head(model.taps(x)["features_seq"])  # per-step readout of the full 8-step run
        for t in (1, 2, 4, 8):
            # the first t outputs of the full run, averaged: what "stop after t steps" means
            assert acc[t] == pytest.approx((seq_logits[:, :t].mean(1).argmax(1) == y).float().mean().item())


def test_inference_steps_and_eps_parsing():
    assert inference_steps(8, (4, 1, 2, 4)) == [1, 2, 4, 8]
    with pytest.raises(ValueError, match="1 <= t <= T=8"):
        inference_steps(8, (0, 16))
    assert parse_eps("2/255") == pytest.approx(2 / 255) and parse_eps(0.1) == 0.1
    with pytest.raises(ValueError, match="'eps'"):
        parse_eps(2)
    with pytest.raises(ValueError, match="'eps'"):
        parse_eps("two")
    assert eps_label(8 / 255) == "8/255" and eps_label(0.01) == "0.01"


def test_config_from_cell_merges_recipe_fields_and_rejects_unknown():
    cfg = HardeningConfig.from_cell({"kind": "hardening", "dataset": "ndigits", "model": "csnn", "seed": 1,
                                     "recipe": "tcl+pgd", "tau": 0.2, "adv_eps": "4/255", "eps": ["2/255"]})
    assert cfg.recipe["name"] == "tcl+pgd" and cfg.recipe["tau"] == 0.2
    assert cfg.eps == [pytest.approx(2 / 255)] and cfg.seed == 1
    with pytest.raises(ValueError, match="unknown field.*'temperature'"):
        HardeningConfig.from_cell({"dataset": "ndigits", "model": "csnn", "temperature": 1})
    assert HardeningConfig.from_cell({"dataset": "ndigits", "gradients": ["model", "assg:0.43"]}).gradients == \
        ["model", "assg:0.43"]
    with pytest.raises(ValueError, match="unknown gradient estimator 'asg'"):
        HardeningConfig.from_cell({"dataset": "ndigits", "gradients": ["asg"]})


def test_hardening_spec_expands_to_the_issue_grid():
    from snnsec.bench import load_spec

    spec = load_spec(REPO / "defenses" / "hardening.toml")
    assert spec.kind == "hardening"
    grid = {(c["dataset"], c["recipe"]) for c in spec.cells}
    assert grid == {(d, r) for d in ("ndigits", "nmnist") for r in ("ce", "tcl", "stcl", "ce+pgd", "ce+trades", "tcl+pgd")}
    at16 = {c["recipe"] for c in spec.cells if c.get("adv_eps") == "16/255"}
    assert at16 == {"ce+pgd", "ce+trades", "tcl+pgd"}
    for c in spec.cells:
        HardeningConfig.from_cell(c)


def _rows():
    rows = []
    for recipe, accs in {"ce": [0.3, 0.5, 0.8, 0.9], "tcl": [0.6, 0.7, 0.85, 0.88]}.items():
        for seed, jitter in ((0, 0.0), (1, 0.02)):
            for t, a in zip((1, 2, 4, 8), accs):
                rows.append({"dataset": "nmnist", "model": "csnn", "seed": seed, "metric": f"accuracy_at_t{t}", "value": a + jitter,
                             "defense": f"hardening:{recipe}", "defense_params": json.dumps({"recipe": {"name": recipe}}),
                             "extra": None})
    rows.append({"dataset": "nmnist", "model": "csnn", "seed": 0, "metric": "accuracy_at_T", "value": 0.4,
                 "defense": "hardening:stcl", "defense_params": {}, "extra": json.dumps({"T_infer": 2})})
    rows.append({"dataset": "nmnist", "model": "csnn", "seed": 0, "metric": "clean_accuracy", "value": 0.9,
                 "defense": "hardening:ce", "defense_params": {}, "extra": None})
    return pd.DataFrame(rows)


def test_timestep_figure_one_line_per_recipe():
    from snnsec.report.figures import fig_accuracy_vs_timesteps, figure_data
    from snnsec.report.schema import MissingData

    (panel,) = figure_data(fig_accuracy_vs_timesteps(_rows()))
    lines = {label: (x, y) for label, x, y in panel["lines"]}
    assert sorted(lines) == ["ce", "stcl", "tcl"]
    x, y = lines["ce"]
    assert list(x) == [1, 2, 4, 8]
    assert list(y) == pytest.approx([0.31, 0.51, 0.81, 0.91])  # mean of the two seeds
    assert list(lines["stcl"][0]) == [2]
    with pytest.raises(MissingData, match="accuracy_at_t"):
        fig_accuracy_vs_timesteps(_rows().iloc[-1:])


def test_recipe_table_orders_columns_and_averages_seeds():
    df = _rows()
    extra = [{"dataset": "nmnist", "model": "csnn", "seed": s, "metric": m, "value": v, "defense": "hardening:ce+pgd",
              "defense_params": {"recipe": {"name": "ce+pgd"}}, "extra": None}
             for s, m, v in ((0, "robust_accuracy_eps8/255", 0.2), (0, "robust_accuracy_eps2/255", 0.6),
                             (1, "robust_accuracy_eps2/255", 0.4), (0, "clean_accuracy", 0.9))]
    tab = recipe_table(pd.concat([df, pd.DataFrame(extra)], ignore_index=True))
    assert list(tab.columns) == ["dataset", "model", "recipe", "clean_accuracy", "accuracy_at_t1", "accuracy_at_t2",
                                 "accuracy_at_t4", "accuracy_at_t8", "robust_accuracy_eps2/255",
                                 "robust_accuracy_eps8/255", "n_seeds"]
    at = tab.set_index("recipe").loc["ce+pgd"]
    assert at["robust_accuracy_eps2/255"] == pytest.approx(0.5) and at["n_seeds"] == 2
    assert tab.set_index("recipe").loc["tcl", "accuracy_at_t1"] == pytest.approx(0.61)
