"""Figures and tables from result rows (never recomputed): accuracy against inference time steps,
and clean/robust accuracy per recipe.

Rows come from :func:`snnsec.results.load`. A hardening run records the accuracy after the
first ``t`` steps as metric ``accuracy_at_t<t>`` (the ``hardening`` bench kind) or as metric
``accuracy_at_T`` with ``extra.T_infer = t``; the recipe is ``defense_params.recipe.name``,
else the defense name after ``hardening:``.
"""

from __future__ import annotations

import json
import re

import pandas as pd

_STEP_METRIC = re.compile(r"^accuracy_at_t(\d+)$")
_TABLE_METRIC = re.compile(r"^(clean_accuracy|accuracy_at_t\d+|robust_accuracy_eps.+)$")


def _as_dict(v) -> dict:
    if isinstance(v, dict):
        return v
    if isinstance(v, str) and v.strip().startswith("{"):
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return {}
    return {}


def _recipe_label(row) -> str:
    rec = _as_dict(row.get("defense_params")).get("recipe")
    if isinstance(rec, dict) and rec.get("name"):
        return str(rec["name"])
    if isinstance(rec, str) and rec:
        return rec
    d = row.get("defense")
    return str(d).split(":", 1)[-1] if isinstance(d, str) and d else "ce"


def timestep_table(df: pd.DataFrame) -> pd.DataFrame:
    """Tidy ``(dataset, model, recipe, t, seed, accuracy)`` rows from result rows."""
    out = []
    for _, row in df.iterrows():
        m = _STEP_METRIC.match(str(row["metric"]))
        if m:
            t = int(m.group(1))
        elif row["metric"] == "accuracy_at_T" and _as_dict(row.get("extra")).get("T_infer") is not None:
            t = int(_as_dict(row.get("extra"))["T_infer"])
        else:
            continue
        out.append({"dataset": row.get("dataset"), "model": row.get("model"), "recipe": _recipe_label(row), "t": t,
                    "seed": row.get("seed"), "accuracy": float(row["value"])})
    return pd.DataFrame(out, columns=["dataset", "model", "recipe", "t", "seed", "accuracy"])


def fig_accuracy_vs_timesteps(df: pd.DataFrame, *, title: str | None = None):
    """One line per recipe (mean over seeds, error bars = std where there are several), one panel per dataset."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    tab = timestep_table(df)
    if tab.empty:
        raise ValueError("accuracy-vs-time-steps figure: no rows with metric accuracy_at_t<t> (or accuracy_at_T with "
                         "extra.T_infer); run the 'hardening' bench kind first")
    datasets = sorted(tab["dataset"].astype(str).unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.4), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        sub = tab[tab["dataset"].astype(str) == ds]
        for recipe, g in sorted(sub.groupby("recipe"), key=lambda kv: kv[0]):
            stats = g.groupby("t")["accuracy"].agg(["mean", "std", "count"]).sort_index()
            err = stats["std"].where(stats["count"] > 1)
            ax.errorbar(stats.index, stats["mean"], yerr=None if err.isna().all() else err.fillna(0), marker="o",
                        capsize=3, label=recipe)
        ts = sorted(sub["t"].unique())
        ax.set_xscale("log", base=2)
        ax.set_xticks(ts, [str(t) for t in ts])
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("inference time steps t")
        ax.set_ylabel("accuracy")
        ax.set_title(ds)
        ax.grid(alpha=0.3)
        ax.legend(title="recipe", fontsize=8)
    fig.suptitle(title or "Accuracy against inference time steps")
    fig.tight_layout()
    return fig


def recipe_table(df: pd.DataFrame) -> pd.DataFrame:
    """Clean accuracy, accuracy at each t and robust accuracy at each eps: one row per
    (dataset, model, recipe), means over seeds, ``n_seeds`` beside them."""
    rows = [{"dataset": r.get("dataset"), "model": r.get("model"), "recipe": _recipe_label(r), "seed": r.get("seed"),
             "metric": r["metric"], "value": float(r["value"])}
            for _, r in df.iterrows() if _TABLE_METRIC.match(str(r["metric"]))]
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
