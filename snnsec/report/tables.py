"""The per-recipe table from result rows (never recomputed): clean accuracy, accuracy at each
inference time-step budget and robust accuracy at each eps.

The accuracy-against-time-steps figure is :func:`snnsec.report.figures.fig_accuracy_vs_timesteps`
(``snnsec report`` draws it from the same rows). A hardening run records the accuracy after the
first ``t`` steps as metric ``accuracy_at_t<t>`` (the ``hardening`` bench kind); the recipe is
``defense_params.recipe.name``, else the defense name after ``hardening:``.
"""

from __future__ import annotations

import re

import pandas as pd

_STEP_METRIC = re.compile(r"^accuracy_at_t(\d+)$")
_TABLE_METRIC = re.compile(r"^(clean_accuracy|accuracy_at_t\d+|robust_accuracy_eps.+)$")


def recipe_table(df: pd.DataFrame) -> pd.DataFrame:
    """Clean accuracy, accuracy at each t and robust accuracy at each eps: one row per
    (dataset, model, recipe), means over seeds, ``n_seeds`` beside them."""
    from snnsec.report.figures import recipe_name
    from snnsec.report.schema import normalize

    rows = [{"dataset": r["dataset"], "model": r["model"], "recipe": recipe_name(r), "seed": r["seed"],
             "metric": r["metric"], "value": float(r["value"])}
            for r in normalize(df).to_dict("records") if _TABLE_METRIC.match(str(r["metric"]))]
    if not rows:
        raise ValueError("recipe table: no rows with clean_accuracy, accuracy_at_t<t> or robust_accuracy_eps<eps>")
    long = pd.DataFrame(rows)
    keys = ["dataset", "model", "recipe"]
    table = long.pivot_table(index=keys, columns="metric", values="value", aggfunc="mean")

    def order(name: str) -> tuple:
        m = _STEP_METRIC.match(name)
        if name == "clean_accuracy":
            return (0, 0.0)
        if m:
            return (1, float(m.group(1)))
        num, _, den = name.removeprefix("robust_accuracy_eps").partition("/")
        try:
            return (2, float(num) / float(den or 1))
        except ValueError:
            return (3, 0.0)

    table = table[sorted(table.columns, key=order)]
    table["n_seeds"] = long.groupby(keys)["seed"].nunique()
    return table.reset_index()
