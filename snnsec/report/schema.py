"""Which result rows each figure reads: the one table to edit when a metric is renamed.

Rows are the tidy rows of :mod:`snnsec.results` (one metric per row). What a producer must
write for each figure (all through ``results.make_rows``; ``extra`` is its ``extra=``):

=====================  ======================================================================
figure                 rows
=====================  ======================================================================
backdoor_rate          attack ``backdoor:<trigger>``, no defense; metrics ``clean_accuracy``,
                       ``attack_success_rate``; ``attack_params.trigger``, ``attack_params.rate``
robust_accuracy        metric ``robust_accuracy``, attack ``adversarial:<name>`` (or the bare name),
                       ``attack_params.eps`` (float) and optional ``.eps_label`` ("4/255"); the
                       per-sample worst case as attack ``adversarial:worst-case``; the run's clean
                       accuracy as metric ``clean_accuracy`` with attack ``adversarial``. A failed
                       integrity check: metric ``reliable`` = 0 or ``extra.reliable = false``, with
                       ``extra.unreliable_reasons``; every row of that ``run_id`` is then flagged
defense_heatmap_*      defense set, attack ``backdoor:<trigger>``; metric ``attack_success_rate``
                       or ``asr`` (after the defense) and/or ``auroc`` / ``detection_auroc``
trigger_gallery        metric ``gallery_clip`` (value: T), attack ``backdoor:<trigger>``,
                       ``extra = {"variant": "clean" | "poisoned", "sample": i,
                       "frames": [T][P][H][W] list}``; one row per variant
anomaly_index          metrics ``anomaly_index_class_<k>`` (one per class k, one make_rows call) or
                       metric ``anomaly_index`` with ``extra.class``; threshold from
                       ``defense_params.anomaly_threshold`` (or ``.threshold``)
detector_roc           metric ``detector_score`` (higher = more suspicious), defense ``detector:<name>``,
                       ``extra = {"class": k, "planted_target": t or null, "detector": label}``; one
                       row per detector per audited model (:func:`snnsec.audit.decision.score_groups`)
strip_entropy          metric ``strip_entropy`` with ``extra = {"triggered": bool, "entropies": [...]}``
                       (one row per group; value = mean) or one row per sample with
                       ``extra = {"triggered": bool, "sample": i}``; optional metric
                       ``strip_threshold``. Entropies in nats
timesteps              defense ``hardening:<recipe>`` (recipe name also in
                       ``defense_params.recipe`` or ``.recipe.name``); metrics ``accuracy_at_t<t>``,
                       or ``accuracy_at_T`` with ``extra.T_infer``
firing_rate            metrics ``firing_rate:<layer>`` with ``extra = {"triggered": bool}`` (one call
                       per group) or metric ``firing_rate`` with ``extra = {"layer": name,
                       "layer_index": i, "triggered": bool}``; rate in spikes per neuron per step
leaderboard,           attack ``leaderboard``, ``extra.variant`` (model and compression); metrics
robustness_energy      ``clean_accuracy``, ``robust_accuracy@<eps>``, ``reliable``, ``asr:<trigger>``,
                       ``audit_correct:<trigger>``, ``energy_pj``, ``sops``, ``spike_driven``
                       (:mod:`snnsec.runs.leaderboard`)
=====================  ======================================================================
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

COLUMNS = ("run_id", "time", "dataset", "model", "T", "attack", "attack_params", "defense", "defense_params",
           "seed", "metric", "value", "config", "config_hash", "versions", "extra")
JSON_COLUMNS = ("attack_params", "defense_params", "config", "versions", "extra")

# metric role -> the metric names that play it (synonyms: different producers, same quantity).
METRICS: dict[str, tuple[str, ...]] = {
    "clean_accuracy": ("clean_accuracy",),
    # The defense bench writes "asr" (beside "asr_before") for the ASR after a repair.
    "asr": ("attack_success_rate", "asr"),
    "robust_accuracy": ("robust_accuracy",),
    "worst_case": ("robust_accuracy_worst", "worst_case_robust_accuracy"),
    "auroc": ("detection_auroc", "auroc"),
    "anomaly_index": ("anomaly_index",),
    "strip_entropy": ("strip_entropy",),
    "strip_threshold": ("strip_threshold",),
    # accuracy after the first t steps: "accuracy_at_T" with extra.T_infer, or "accuracy_at_t<t>".
    "timestep_accuracy": ("accuracy_at_T",),
    "timestep_accuracy_named": ("accuracy_at_t",),
    "firing_rate": ("firing_rate",),
    "gallery": ("gallery_clip",),
    "reliable": ("reliable",),
    "unreliable": ("unreliable",),
}

# snnsec.attacks.adversarial names its rows "adversarial:<attack>" ("adversarial" alone for the
# run's clean accuracy, "adversarial:check" for the integrity checks).
ADVERSARIAL_PREFIX = "adversarial:"
ADVERSARIAL_CLEAN_ATTACK = "adversarial"
# Attack names (after the prefix) that mean "per-sample worst case over every attack run".
WORST_CASE_ATTACKS = ("worst_case", "worst-case", "worst", "ensemble")

# Where a row keeps each parameter, searched in order (JSON column, key).
PARAMS: dict[str, tuple[tuple[str, str], ...]] = {
    "trigger": (("attack_params", "trigger"), ("config", "trigger")),
    "rate": (("attack_params", "rate"), ("attack_params", "poison_rate"), ("config", "rate")),
    "eps": (("attack_params", "eps"), ("extra", "eps")),
    "eps_label": (("attack_params", "eps_label"),),
    "recipe": (("defense_params", "recipe"), ("config", "recipe"), ("extra", "recipe")),
    "T_infer": (("extra", "T_infer"), ("defense_params", "T_infer"), ("attack_params", "T_infer"), ("config", "T_infer")),
    "class": (("extra", "class"), ("extra", "label")),
    "layer": (("extra", "layer"),),
    "planted_target": (("extra", "planted_target"),),
    "detector": (("extra", "detector"),),
    "layer_index": (("extra", "layer_index"),),
    "triggered": (("extra", "triggered"),),
    "variant": (("extra", "variant"),),
    "frames": (("extra", "frames"),),
    "entropies": (("extra", "entropies"),),
    "sample": (("extra", "sample"),),
    "threshold": (("defense_params", "threshold"), ("defense_params", "anomaly_threshold"), ("extra", "threshold")),
    "flagged": (("extra", "flagged"), ("extra", "flagged_classes")),
}

# Rows whose metric is one of these carry arrays in ``extra``, not a number worth a table cell.
ARRAY_METRICS = ("gallery_clip", "strip_entropy")

_HARDENING_PREFIXES = ("hardening", "tcl", "stcl", "adversarial_training")


@dataclass(frozen=True)
class FigureSpec:
    name: str
    function: str
    title: str
    needs: str


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec("backdoor_rate", "fig_backdoor_rate", "Clean accuracy and attack success rate against poison rate",
               "backdoor rows (attack 'backdoor:<trigger>', no defense) with metrics clean_accuracy and "
               "attack_success_rate, attack_params.trigger and attack_params.rate"),
    FigureSpec("robust_accuracy", "fig_robust_accuracy", "Robust accuracy against perturbation budget",
               "adversarial rows with metric robust_accuracy and attack_params.eps, one attack per row; the "
               "per-sample worst case as attack 'worst_case' (or metric robust_accuracy_worst)"),
    FigureSpec("defense_heatmap_asr", "fig_defense_heatmap", "ASR after defense, per defense and trigger",
               "defense rows (defense set, attack 'backdoor:<trigger>') with metric attack_success_rate (or asr)"),
    FigureSpec("defense_heatmap_auroc", "fig_defense_heatmap", "Detection AUROC, per defense and trigger",
               "defense rows (defense set, attack 'backdoor:<trigger>') with metric detection_auroc (or auroc)"),
    FigureSpec("trigger_gallery", "fig_trigger_gallery", "Clean and poisoned frames over time",
               "rows with metric gallery_clip, extra.variant 'clean' or 'poisoned' and extra.frames [T][P][H][W]"),
    FigureSpec("anomaly_index", "fig_anomaly_index", "Audit anomaly index per class",
               "defense rows with metric anomaly_index and extra.class (or metric anomaly_index_class_<k>)"),
    FigureSpec("detector_roc", "fig_detector_roc", "Backdoor detection ROC per detector, over audited models",
               "audit bench rows with metric detector_score, defense 'detector:<name>', extra.class and "
               "extra.planted_target (one per detector per audited model)"),
    FigureSpec("strip_entropy", "fig_strip_entropy", "STRIP entropy, clean against triggered inputs",
               "defense rows with metric strip_entropy and extra.triggered, one row per sample (value) or "
               "one row per group with extra.entropies [..]"),
    FigureSpec("timesteps", "fig_accuracy_vs_timesteps", "Accuracy against inference time steps, per recipe",
               "hardening rows with metric accuracy_at_T, the inference time steps in extra.T_infer (or the "
               "T column) and the recipe in defense_params.recipe (or the defense name)"),
    FigureSpec("firing_rate", "fig_firing_rate", "Firing rate per layer, clean against triggered inputs",
               "rows with metric firing_rate, extra.layer and extra.triggered (or metric firing_rate:<layer>)"),
    FigureSpec("leaderboard", "fig_leaderboard", "Leaderboard: accuracy, robustness, backdoors, energy per model",
               "leaderboard bench rows (attack 'leaderboard'; extra.variant names the model and compression)"),
    FigureSpec("robustness_energy", "fig_robustness_energy", "Worst-case robust accuracy against energy per model",
               "leaderboard bench rows with metrics energy_pj and robust_accuracy@<eps>"),
)


class MissingData(ValueError):
    """The rows hold nothing a figure can be drawn from; the message says what is needed."""


def _blank(v) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) or v == ""


def as_text(col: pd.Series) -> pd.Series:
    """A column as display and key text, missing values (and their spellings "None", "nan",
    "<NA>") as "". pandas 3 keeps missing values missing under ``astype(str)``, so a clean
    model's row (no attack) would otherwise neither sort nor match among strings."""
    text = col.astype(object).where(col.notna(), "").astype(str)
    return text.replace({"None": "", "nan": "", "<NA>": ""})


def _parse(v):
    if isinstance(v, dict):
        return v
    if _blank(v):
        return {}
    if isinstance(v, (bytes, bytearray)):
        v = v.decode("utf-8")
    if isinstance(v, str):
        try:
            out = json.loads(v)
        except json.JSONDecodeError:
            return {"_raw": v}
        return out if isinstance(out, dict) else {"_value": out}
    return {"_value": v}


def normalize(df: pd.DataFrame | list[dict] | None) -> pd.DataFrame:
    """Rows as :func:`snnsec.results.load` gives them, or as :func:`snnsec.results.make_rows`
    builds them (a list of dicts) -> every documented column, JSON parsed."""
    if df is None:
        df = pd.DataFrame(columns=list(COLUMNS))
    if isinstance(df, list):
        df = pd.DataFrame(df, columns=list(COLUMNS))
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"expected a pandas DataFrame of result rows, got {type(df).__name__}")
    if getattr(df, "attrs", {}).get("snnsec_normalized"):
        return df
    out = df.copy()
    for c in COLUMNS:
        if c not in out.columns:
            out[c] = None
    for c in JSON_COLUMNS:
        out[c] = [_parse(v) for v in out[c]]
    # Object dtype keeps None as None: pandas' string dtype would turn it into NaN, which is truthy.
    for c in ("attack", "defense", "dataset", "model", "run_id", "metric"):
        out[c] = pd.Series([None if _blank(v) else str(v) for v in out[c]], index=out.index, dtype=object)
    out["value"] = pd.to_numeric(out["value"], errors="coerce")
    out.attrs["snnsec_normalized"] = True
    return out


def where(df: pd.DataFrame, pred) -> pd.DataFrame:
    """Rows for which ``pred(row)`` holds (an empty frame stays a frame with every column)."""
    return df.loc[np.fromiter((bool(pred(r)) for r in df.to_dict("records")), dtype=bool, count=len(df))]


def param(row, name: str, default=None):
    """A row's parameter ``name``, from wherever :data:`PARAMS` says producers put it."""
    for col, key in PARAMS[name]:
        d = row[col] if isinstance(row[col], dict) else {}
        if key in d and d[key] is not None:
            return d[key]
    return default


def params(df: pd.DataFrame, name: str, default=None) -> list:
    return [param(r, name, default) for r in df.to_dict("records")]


def select(df: pd.DataFrame, role: str) -> pd.DataFrame:
    """Rows whose metric plays ``role`` (the names listed for a role are synonyms)."""
    return df[df["metric"].isin(METRICS[role])]


def keyed(df: pd.DataFrame, role: str, key: str, suffixes: tuple[str, ...], key_pattern: str = r".+") -> pd.DataFrame:
    """Rows of a per-class / per-layer metric, with the class or layer in column ``key``.

    Producers that pass a metrics dict write the key into the name (``anomaly_index_class_3``,
    ``firing_rate:conv1``); others write ``extra[key]``. Both end up in one column here.
    """
    parts = []
    for name in METRICS[role]:
        plain = df[df["metric"] == name]
        if not plain.empty:
            vals = params(plain, key)
            parts.append(plain.assign(**{key: vals}).loc[np.asarray([v is not None for v in vals], dtype=bool)])
        pattern = re.compile("^" + re.escape(name) + "(?:" + "|".join(re.escape(s) for s in suffixes) + ")(" + key_pattern + ")$")
        m = df["metric"].astype(str).str.extract(pattern, expand=False)
        named = df[m.notna()]
        if not named.empty:
            parts.append(named.assign(**{key: m[m.notna()].tolist()}))
    if not parts:
        return df.iloc[0:0].assign(**{key: []})
    return pd.concat(parts)


def trigger_of(row) -> str | None:
    t = param(row, "trigger")
    if t is not None:
        return str(t)
    a = row["attack"]
    if isinstance(a, str) and a.startswith("backdoor"):
        return a.split(":", 1)[1] if ":" in a else a
    return None


def is_backdoor(row) -> bool:
    a = row["attack"]
    return isinstance(a, str) and a.startswith("backdoor")


def attack_name(row) -> str | None:
    """The attack as a figure names it: ``adversarial:pgd`` -> ``pgd``."""
    a = row["attack"]
    if isinstance(a, str) and a.lower().startswith(ADVERSARIAL_PREFIX):
        return a[len(ADVERSARIAL_PREFIX):]
    return a


def is_worst_case(row) -> bool:
    a = attack_name(row)
    return (isinstance(a, str) and a.lower() in WORST_CASE_ATTACKS) or bool(row["attack_params"].get("worst_case"))


def is_hardening(row) -> bool:
    d = row["defense"] or ""
    kind = row["config"].get("kind", "") if isinstance(row["config"], dict) else ""
    return str(d).lower().startswith(_HARDENING_PREFIXES) or str(kind).lower() in ("hardening", "timesteps") \
        or param(row, "T_infer") is not None


# Keys in ``extra`` that make a row one item of a series (a class, a layer, a sample, a time
# step): a summary line per setting would average over them, so they stay out of the tables.
ITEM_KEYS = ("class", "label", "layer", "layer_index", "sample", "triggered", "T_infer", "variant", "entropies", "frames")


def family(row) -> str:
    """Which section of the summary a row belongs to ("items" rows are not summarised)."""
    ex = row["extra"] if isinstance(row["extra"], dict) else {}
    if row["metric"] in ARRAY_METRICS or any(k in ex for k in ITEM_KEYS) or str(row["metric"]).startswith("firing_rate"):
        return "items"
    if str(row["metric"]).startswith("check:"):
        return "checks"
    if is_hardening(row):
        return "hardening"
    if row["defense"]:
        return "defense"
    if is_backdoor(row):
        return "backdoor"
    if row["attack"]:
        return "adversarial"
    return "other"


def unreliable_runs(df: pd.DataFrame) -> dict[str, str]:
    """run_id -> why its evaluation is marked unreliable.

    Accepted marks: metric ``reliable`` = 0, metric ``unreliable`` != 0, or
    ``extra.unreliable`` true / ``extra.reliable`` false (with ``extra.reasons`` or
    ``extra.failed_checks`` naming why).
    """
    df = normalize(df)
    out: dict[str, str] = {}
    for r in df.to_dict("records"):
        ex = r["extra"]
        marked = (r["metric"] in METRICS["reliable"] and r["value"] == 0) \
            or (r["metric"] in METRICS["unreliable"] and not pd.isna(r["value"]) and r["value"] != 0) \
            or ex.get("unreliable") is True or ex.get("reliable") is False
        if not marked:
            continue
        why = "unreliable"
        detail = ex.get("unreliable_reasons") or ex.get("failed_checks") or ex.get("reasons")
        if detail:
            why += ": " + (", ".join(map(str, detail)) if isinstance(detail, (list, tuple)) else str(detail))
        run = str(r["run_id"])
        if len(why) > len(out.get(run, "")):
            out[run] = why
    return out
