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


# The leaderboard bench kind (snnsec.runs.leaderboard) writes one row per metric, attack "leaderboard".
LEADERBOARD_ATTACK = "leaderboard"
_ROBUST = re.compile(r"^robust_accuracy@(.+)$")


def _eps_value(label: str) -> float:
    a, _, b = label.partition("/")
    return float(a) / float(b) if b else float(a)


def _leaderboard_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard rows with their ``variant``; of a variant measured under more than one
    evaluation setting (attacks, eps, gradient estimators: an older spec's cells stay in the store
    beside a newer spec's), only the setting stored last, so that no table averages the two."""
    import json

    from snnsec.report.schema import MissingData, normalize

    d = normalize(df)
    d = d[d["attack"].astype(str) == LEADERBOARD_ATTACK]
    if d.empty:
        raise MissingData("leaderboard rows (attack 'leaderboard', from `snnsec bench attacks/leaderboard-nmnist.toml`)")
    d = d.assign(variant=[(e or {}).get("variant") or m for e, m in zip(d["extra"], d["model"])],
                 setting=[json.dumps(a, sort_keys=True) for a in d["attack_params"]],
                 stored=d["time"].fillna("").astype(str))
    keys = ["dataset", "variant"]
    last = (d.groupby([*keys, "setting"], as_index=False)["stored"].max().sort_values("stored")
            .drop_duplicates(keys, keep="last"))
    return d.merge(last[[*keys, "setting"]], on=[*keys, "setting"])


def leaderboard_table(df: pd.DataFrame) -> pd.DataFrame:
    """One line per (dataset, model variant): every leaderboard metric, mean over seeds, with
    ``n_seeds``, the worst-case robust accuracies in eps order, and ``unreliable`` when any
    seed's evaluation failed the integrity checklist (the last evaluation setting stored for each
    variant only: :func:`_leaderboard_rows`)."""
    d = _leaderboard_rows(df)
    keys = ["dataset", "variant"]
    table = d.pivot_table(index=keys, columns="metric", values="value", aggfunc="mean")
    robust = sorted((c for c in table.columns if _ROBUST.match(c)), key=lambda c: _eps_value(_ROBUST.match(c).group(1)))
    first = ["clean_accuracy", *robust, "reliable"]
    rest = [c for c in table.columns if c not in first]
    table = table[[c for c in first if c in table.columns] + sorted(rest)]
    table.insert(0, "n_seeds", d.groupby(keys)["seed"].nunique())
    extra = d.drop_duplicates(keys).set_index(keys)
    table["T"] = extra["T"]
    table["neuron"] = extra["extra"].map(lambda e: (e or {}).get("neuron"))
    table["framing"] = extra["extra"].map(lambda e: (e or {}).get("framing"))
    table["unreliable"] = table["reliable"] < 1 if "reliable" in table.columns else False
    return table.reset_index()


def _number(v) -> float | None:
    return None if v is None or pd.isna(v) else float(v)


def robustbench_entries(df: pd.DataFrame) -> list[dict]:
    """One RobustBench-style entry per (dataset, model variant, eps) of the leaderboard rows:
    RobustBench's fields (name, architecture, dataset, eps, clean_acc, autoattack_acc: here the
    per-sample worst case over the attacks run, named in ``attacks``; unreliable;
    number_forward_passes) and the SNN's (T, neuron, training surrogate, the gradient estimators
    the attacks used, framing, SOPs, energy). Accuracies in percent, as RobustBench writes them."""
    table = leaderboard_table(df)
    d = _leaderboard_rows(df)
    entries = []
    for r in table.to_dict("records"):
        one = d[(d["dataset"] == r["dataset"]) & (d["variant"] == r["variant"])]
        cfg, ap = one.iloc[0]["config"] or {}, one.iloc[0]["attack_params"] or {}
        for col in (c for c in r if _ROBUST.match(str(c))):
            label = _ROBUST.match(col).group(1)
            entries.append({
                "name": r["variant"], "architecture": str(r["variant"]).split("+")[0], "dataset": r["dataset"],
                "threat_model": "Linf", "eps": label, "eps_value": _eps_value(label),
                "clean_acc": round(100 * float(r["clean_accuracy"]), 2), "autoattack_acc": round(100 * float(r[col]), 2),
                "attacks": ap.get("attacks"), "unreliable": bool(r["unreliable"]),
                # RobustBench's count is forward passes per prediction: one, for a deterministic SNN
                "number_forward_passes": 1, "attack_forwards_per_sample": _number(r.get("attack_forwards_per_sample")),
                "additional_data": False, "reported": round(100 * float(r[col]), 2),
                "footnote": "per-sample worst case over the attacks named in 'attacks' (not standard AutoAttack "
                            "unless it names autoattack); evaluated by snnsec",
                "snn": {"T": None if pd.isna(r["T"]) else int(r["T"]), "neuron": r.get("neuron"),
                        "training_surrogate": "model's own", "gradient_estimators": ap.get("gradients") or ["model"],
                        "framing": r.get("framing") or cfg.get("slicing"), "sops": float(r.get("sops", float("nan"))),
                        "energy_pj": float(r.get("energy_pj", float("nan"))),
                        "spike_driven": bool(r.get("spike_driven", 0) >= 1), "n_seeds": int(r["n_seeds"])}})
    return entries
