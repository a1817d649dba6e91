"""Figures drawn from result rows only: ``fig_xxx(df) -> matplotlib.figure.Figure``.

Each function takes the DataFrame of :func:`snnsec.results.load` (JSON columns as text or
already parsed) or the list of rows :func:`snnsec.results.make_rows` builds, picks its rows by
the names in :mod:`snnsec.report.schema`, and plots the stored values. Nothing is recomputed:
where several seeds share a setting the line shows their mean and the bars their min-max range.
A figure with no rows to draw from raises :class:`~snnsec.report.schema.MissingData` saying
which rows it needs.

Figures are not attached to pyplot (no global state, nothing to close); ``fig.savefig``
renders them with Agg. Each figure carries the rows it was drawn from as
``fig.snnsec_rows`` so a report can show the settings and versions behind every point.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from snnsec.report import style
from snnsec.report.schema import (
    ADVERSARIAL_CLEAN_ATTACK,
    METRICS,
    MissingData,
    as_text,
    attack_name,
    is_backdoor,
    is_hardening,
    is_worst_case,
    keyed,
    normalize,
    param,
    params,
    select,
    trigger_of,
    unreliable_runs,
    where,
)

MAX_PANELS = 6

__all__ = [
    "fig_backdoor_rate",
    "fig_robust_accuracy",
    "fig_defense_heatmap",
    "fig_trigger_gallery",
    "fig_anomaly_index",
    "fig_detector_roc",
    "fig_strip_entropy",
    "fig_accuracy_vs_timesteps",
    "fig_firing_rate",
    "fig_leaderboard",
    "fig_robustness_energy",
    "figure_data",
]


# ----------------------------------------------------------------------------- helpers

# Config keys that name a run, not a setting: runs differing only in these are repeats.
_NOT_SETTINGS = ("seed", "kind", "out", "store", "root", "progress", "run_id")


def _strip(v, exclude: tuple[str, ...]):
    # Configs nest the swept value too (a backdoor config inside a hardening config).
    if isinstance(v, dict):
        return {k: _strip(x, exclude) for k, x in v.items() if k not in exclude and k not in _NOT_SETTINGS}
    return v


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _variant_key(v) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def setting_keys(d: pd.DataFrame, exclude: tuple[str, ...] = (), *, col: str = "attack_params") -> list[str]:
    """Per row, its setting as a string: the keys of ``col`` and of the run's config, minus
    ``exclude`` and the keys that only name a run (seed, output paths). Rows with equal keys
    are repeats of one setting."""
    keys = []
    for p, cfg in zip(d[col], d["config"]):
        setting = {k: _strip(v, exclude) for k, v in (cfg or {}).items() if k not in exclude and k not in _NOT_SETTINGS}
        setting.update({k: _strip(v, exclude) for k, v in (p or {}).items() if k not in exclude})
        keys.append(_variant_key(setting))
    return keys


def _settings_note(p: pd.DataFrame, how: str, *, col: str = "attack_params") -> str:
    """A title line for a panel whose rows come from runs with different settings."""
    n = len(set(setting_keys(p, col=col)))
    return f"\n({how} of {n} settings)" if n > 1 else ""


def series(d: pd.DataFrame, group: str, exclude: tuple[str, ...], *, col: str = "attack_params",
           max_lines: int = 8) -> pd.DataFrame:
    """Label each row with the line it belongs to: its ``group`` value, plus the settings
    (keys of ``col`` and of the run's config, minus ``exclude`` and the seed) that differ
    between rows of that group.

    Rows of one group that differ in other settings (trigger position, attack steps ...)
    are never silently averaged as if they were seeds: they get their own labelled line, or,
    when that would make more than ``max_lines`` lines, one line per group labelled
    "mean of k settings" with the min-max range as error bars.
    """
    d = d.assign(_variant=setting_keys(d, exclude, col=col))
    n_lines = d.groupby(group)["_variant"].nunique()
    out = []
    for g, rows in d.groupby(group, sort=True):
        variants = sorted(rows["_variant"].unique())
        if len(variants) == 1:
            out.append(rows.assign(series=str(g), variant_index=0))
        elif n_lines.sum() <= max_lines:
            flat = [_flatten(json.loads(v)) for v in variants]
            differ = sorted({k for dct in flat for k in dct if len({_variant_key(x.get(k)) for x in flat}) > 1})
            for i, (v, dct) in enumerate(zip(variants, flat)):
                # The same value is often both in the params and in the config: name it once.
                parts = list(dict.fromkeys(f"{k.rsplit('.', 1)[-1]}={dct.get(k)}" for k in differ))
                out.append(rows[rows["_variant"] == v].assign(series=f"{g} ({', '.join(parts)})", variant_index=i))
        else:
            out.append(rows.assign(series=f"{g} (mean of {len(variants)} settings)", variant_index=0))
    return pd.concat(out).drop(columns="_variant") if out else d.assign(series=[], variant_index=[])


def _stats(d: pd.DataFrame, by: list[str], x: str) -> pd.DataFrame:
    """Mean and min-max of stored values over the seeds (rows) sharing ``by`` and ``x``."""
    g = d.groupby(by + [x], sort=True, dropna=False)["value"].agg(["mean", "min", "max", "count"]).reset_index()
    return g.sort_values(by + [x], kind="stable")


def _panel_keys(d: pd.DataFrame, cols: list[str]) -> list[tuple]:
    keys = pd.DataFrame({c: as_text(d[c]) for c in cols}).drop_duplicates().itertuples(index=False, name=None)
    return sorted(keys)


def _panel_title(key: tuple, cols: list[str]) -> str:
    return " / ".join(str(v) for v, c in zip(key, cols) if v not in ("None", "nan", ""))


def _subset(d: pd.DataFrame, cols: list[str], key: tuple) -> pd.DataFrame:
    mask = np.ones(len(d), dtype=bool)
    for c, v in zip(cols, key):
        mask &= (as_text(d[c]) == v).to_numpy()
    return d[mask]


def _grid(n: int, *, panel_height: float = style.PANEL_HEIGHT, width: float = style.COLUMN_WIDTH):
    fig, axes = style.new_figure(n, 1, width=width, panel_height=panel_height)
    return fig, list(axes[:, 0])


def _note_truncated(fig, shown: int, total: int) -> None:
    if total > shown:
        fig.suptitle(f"first {shown} of {total} panels; filter the store for the rest", fontsize=6)


def _range(g: pd.DataFrame) -> np.ndarray:
    # The mean of equal values can land a rounding error outside [min, max].
    return np.clip(np.vstack([g["mean"] - g["min"], g["max"] - g["mean"]]).astype(float), 0.0, None)


def _errorbar(ax, g: pd.DataFrame, x: str, *, label: str, color: str, fmt: str, **kw):
    has_range = bool((g["count"] > 1).any())
    yerr = _range(g) if has_range else None
    ax.errorbar(g[x].to_numpy(float), g["mean"].to_numpy(float), yerr=yerr, fmt=fmt, color=color, label=label,
                capsize=2 if has_range else 0, elinewidth=0.7, **kw)


def _x_scale(ax, xs) -> None:
    xs = np.asarray([v for v in xs if v is not None and np.isfinite(v)], dtype=float)
    if len(xs) and (xs > 0).all() and xs.max() / xs.min() >= 20:
        ax.set_xscale("log")


def _legend(ax, ncol: int = 1, **kw) -> None:
    """In the axes when it is short; below them when it would cover the data."""
    n = len(ax.get_legend_handles_labels()[1])
    if n <= 4:
        ax.legend(loc="best", ncol=ncol, **kw)
    else:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2, **kw)


def _rate_legend(ax, p: pd.DataFrame) -> None:
    """One entry per line colour and one per quantity, instead of every (trigger, quantity) pair."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=style.color("trigger", t), marker=style.marker(int(vi)), linestyle="-", label=name)
               for (name, vi, t), _ in p.groupby(["series", "variant_index", "trigger"], sort=True)]
    handles += [Line2D([], [], color="#444444", linestyle="-", marker="o", label="ASR"),
                Line2D([], [], color="#444444", linestyle="--", marker="s", markerfacecolor="white", label="CA")]
    kw = {"loc": "best"} if len(handles) <= 5 else {"loc": "upper center", "bbox_to_anchor": (0.5, -0.3)}
    ax.legend(handles=handles, ncol=2, **kw)


def _mark_unreliable(ax, d: pd.DataFrame, x: str, bad: dict[str, str]) -> bool:
    hit = d[d["run_id"].astype(str).isin(bad)]
    if hit.empty:
        return False
    ax.scatter(hit[x].to_numpy(float), hit["value"].to_numpy(float), s=40, facecolors="none",
               edgecolors=style.UNRELIABLE_COLOR, linewidths=1.0, zorder=5, label="unreliable evaluation")
    return True


def _finish(fig, rows: pd.DataFrame):
    fig.snnsec_rows = rows
    return fig


def _need(d: pd.DataFrame, what: str) -> None:
    if d.empty:
        raise MissingData(what)


# ----------------------------------------------------------------------------- figures

def fig_backdoor_rate(df: pd.DataFrame):
    """Clean accuracy (dashed) and ASR (solid) against poison rate, one colour per trigger,
    one panel per dataset and model."""
    d = normalize(df)
    d = where(d, lambda r: is_backdoor(r) and not r["defense"])
    parts = []
    for role, what in (("asr", "ASR"), ("clean_accuracy", "CA")):
        s = select(d, role)
        parts.append(s.assign(quantity=what))
    d = pd.concat(parts)
    d = d.assign(trigger=[trigger_of(r) for r in d.to_dict("records")], rate=params(d, "rate"))
    # Some backdoors have no poison rate (the dynamic trigger trains a generator instead).
    no_rate = d[d["rate"].isna() & d["trigger"].notna()]
    d = d[d["rate"].notna() & d["trigger"].notna()]
    _need(d, "backdoor rows with attack_success_rate / clean_accuracy and attack_params.rate (run `snnsec attack backdoor` or a backdoor bench spec)")
    d = d.assign(rate=d["rate"].astype(float))
    cols = ["dataset", "model"]
    keys = _panel_keys(d, cols)
    shown = keys[:MAX_PANELS]
    bad = unreliable_runs(normalize(df))
    with style.paper_style():
        fig, axes = _grid(len(shown))
        for ax, key in zip(axes, shown):
            p = _subset(d, cols, key)
            p = series(p, "trigger", ("rate", "poison_rate"), max_lines=6)
            for (name, vi, trig), _ in p.groupby(["series", "variant_index", "trigger"], sort=True):
                for what, ls, mk in (("ASR", style.LINESTYLES[vi % 2 * 2], "o"), ("CA", "--", "s")):
                    q = p[(p["series"] == name) & (p["quantity"] == what)]
                    if q.empty:
                        continue
                    _errorbar(ax, _stats(q, [], "rate"), "rate", label=f"{name} {what}",
                              color=style.color("trigger", trig), fmt=ls + style.marker(vi) if what == "ASR" else ls + mk,
                              markerfacecolor="white" if what == "CA" else None)
            _mark_unreliable(ax, p, "rate", bad)
            _x_scale(ax, p["rate"])
            ax.set_ylim(-0.03, 1.03)
            ax.set_xlabel("poison rate (fraction of training set)")
            ax.set_ylabel("CA, ASR (fraction of test set)")
            skipped = sorted(set(_subset(no_rate, cols, key)["trigger"])) if not no_rate.empty else []
            ax.set_title(_panel_title(key, cols) + (f"\n(no poison rate, not shown: {', '.join(skipped)})" if skipped else ""))
            _rate_legend(ax, p)
        _note_truncated(fig, len(shown), len(keys))
    return _finish(fig, d)


def fig_robust_accuracy(df: pd.DataFrame):
    """Robust accuracy against eps, one line per attack and the per-sample worst case (black,
    thick), one panel per dataset and model; the dotted line is the clean accuracy of the
    same runs. Points from runs marked unreliable are ringed red."""
    full = normalize(df)
    ra = select(full, "robust_accuracy")
    ra = ra.assign(worst=[is_worst_case(r) for r in ra.to_dict("records")])
    d = pd.concat([ra, select(full, "worst_case").assign(worst=True)])
    d = d.assign(eps=params(d, "eps"), eps_label=params(d, "eps_label"))
    d = d[d["eps"].notna()]
    _need(d, "adversarial rows with metric robust_accuracy and attack_params.eps (run `snnsec attack adversarial`)")
    d = d.assign(eps=d["eps"].astype(float),
                 attack=[("worst case" if w else (attack_name(r) or "?")) for w, r in zip(d["worst"], d.to_dict("records"))])
    clean = full[(full["metric"].isin(METRICS["clean_accuracy"])) & (full["attack"] == ADVERSARIAL_CLEAN_ATTACK)
                 & full["run_id"].isin(set(d["run_id"]))]
    cols = ["dataset", "model"]
    keys = _panel_keys(d, cols)
    shown = keys[:MAX_PANELS]
    bad = unreliable_runs(full)
    with style.paper_style():
        fig, axes = _grid(len(shown))
        for ax, key in zip(axes, shown):
            p = _subset(d, cols, key)
            p = series(p, "attack", ("eps", "eps_label", "worst_case"), max_lines=8)
            for i, ((name, atk), q) in enumerate(p[p["attack"] != "worst case"].groupby(["series", "attack"], sort=True)):
                _errorbar(ax, _stats(q, [], "eps"), "eps", label=name, color=style.color("attack", atk),
                          fmt=style.LINESTYLES[int(q["variant_index"].iloc[0]) % 4] + style.marker(i))
            for name, w in p[p["attack"] == "worst case"].groupby("series", sort=True):
                _errorbar(ax, _stats(w, [], "eps"), "eps", label=name, color=style.color("attack", "worst_case"),
                          fmt=style.LINESTYLES[int(w["variant_index"].iloc[0]) % 4], linewidth=2.2, zorder=4)
            c = clean[clean["run_id"].isin(set(p["run_id"]))]["value"]
            if len(c):
                ax.axhline(float(c.mean()), color="#666666", linestyle=":", linewidth=1.0, label="clean accuracy")
            _mark_unreliable(ax, p, "eps", bad)
            ticks = p.drop_duplicates("eps").sort_values("eps")
            xs = ticks["eps"].to_numpy(float)
            # Budgets are usually doubled (1/255, 2/255, 4/255 ...): a log2 axis spaces them evenly.
            if len(xs) > 2 and xs[0] > 0 and xs[-1] / xs[0] >= 8:
                ax.set_xscale("log", base=2)
                ax.minorticks_off()
            if 1 < len(ticks) <= 8 and ticks["eps_label"].notna().all():
                ax.set_xticks(xs, [str(v) for v in ticks["eps_label"]])
            ax.set_ylim(-0.03, 1.03)
            ax.set_xlabel("perturbation budget ε (L∞, input scale [0, 1])")
            ax.set_ylabel("robust accuracy (fraction)")
            ax.set_title(_panel_title(key, cols) + ("  [UNRELIABLE]" if p["run_id"].astype(str).isin(bad).any() else ""),
                         color=style.UNRELIABLE_COLOR if p["run_id"].astype(str).isin(bad).any() else "black")
            _legend(ax)
        _note_truncated(fig, len(shown), len(keys))
    return _finish(fig, pd.concat([d, clean]))


_HEAT = {
    "asr": ("asr", "ASR after defense", "magma_r"),
    "auroc": ("auroc", "detection AUROC", "viridis"),
}


def fig_defense_heatmap(df: pd.DataFrame, metric: str = "auto"):
    """Defense (rows) x trigger (columns): ASR after the defense, or detection AUROC, as the
    mean over seeds; grey cells were not run.

    ``metric``: ``"asr"``, ``"auroc"``, or ``"auto"`` (ASR when the rows hold it)."""
    if metric not in ("auto", *_HEAT):
        raise ValueError(f"fig_defense_heatmap: metric must be 'auto', 'asr' or 'auroc', got {metric!r}")
    d = normalize(df)
    d = where(d, lambda r: bool(r["defense"]) and trigger_of(r) is not None and not is_hardening(r))
    choice = None
    for m in (("asr", "auroc") if metric == "auto" else (metric,)):
        s = select(d, _HEAT[m][0])
        if not s.empty:
            choice, d = m, s
            break
    if choice is None:
        what = {"asr": "attack_success_rate", "auroc": "auroc (or detection_auroc)"}.get(metric, "attack_success_rate or auroc")
        raise MissingData(f"defense rows (defense set, attack 'backdoor:<trigger>') with metric {what} (run a defense or `snnsec audit`)")
    role, label, cmap_name = _HEAT[choice]
    d = d.assign(trigger=[trigger_of(r) for r in d.to_dict("records")])
    cols = ["dataset", "model"]
    keys = _panel_keys(d, cols)
    shown = keys[:MAX_PANELS]
    import matplotlib

    cmap = matplotlib.colormaps[cmap_name].with_extremes(bad="#dddddd")
    with style.paper_style():
        n_def = d["defense"].nunique()
        fig, axes = _grid(len(shown), panel_height=max(1.9, 0.32 * n_def + 0.9))
        for ax, key in zip(axes, shown):
            p = _subset(d, cols, key)
            settings = p.assign(_v=[_variant_key({k: v for k, v in (a or {}).items() if k != "trigger"}) + _variant_key(b)
                                    for a, b in zip(p["attack_params"], p["defense_params"])])
            mixed = int(settings.groupby(["defense", "trigger"])["_v"].nunique().max())
            table = p.pivot_table(index="defense", columns="trigger", values="value", aggfunc="mean", dropna=False)
            table = table.sort_index().reindex(sorted(table.columns), axis=1)
            grid = np.ma.masked_invalid(table.to_numpy(float))
            im = ax.imshow(grid, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
            ax.grid(False)
            ax.set_xticks(range(table.shape[1]), [str(c) for c in table.columns])
            ax.set_yticks(range(table.shape[0]), [str(i) for i in table.index])
            for lbl in ax.get_xticklabels():
                lbl.set_color(style.color("trigger", lbl.get_text()))
            for (i, j), v in np.ndenumerate(table.to_numpy(float)):
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6.5,
                            color="white" if (v > 0.55) == (cmap_name == "magma_r") else "black")
            ax.set_xlabel("trigger")
            ax.set_ylabel("defense")
            ax.set_title(_panel_title(key, cols) + (f"\n(cells: mean of up to {mixed} settings; filter to pick one)" if mixed > 1 else ""))
            fig.colorbar(im, ax=ax, label=label, shrink=0.9)
        _note_truncated(fig, len(shown), len(keys))
    return _finish(fig, d)


def _clip(row) -> np.ndarray:
    frames = param(row, "frames")
    if frames is None:
        raise ValueError(f"run {row['run_id']}: gallery_clip row has no extra.frames [T][P][H][W]")
    a = np.asarray(frames, dtype=np.float64)
    if a.ndim == 3:  # [T, H, W]: single-polarity sensors
        a = a[:, None]
    if a.ndim != 4:
        raise ValueError(f"run {row['run_id']}: extra.frames must be [T][P][H][W], got shape {a.shape}")
    return a


def gallery_time_steps(T: int, max_frames: int = 8) -> np.ndarray:
    """The time steps the gallery shows for a clip of ``T`` frames."""
    return np.unique(np.linspace(0, T - 1, min(T, max_frames)).round().astype(int))


def fig_trigger_gallery(df: pd.DataFrame, max_frames: int = 8):
    """Rows of frames over time: the clean sample, then each trigger's poisoned version.
    ON events red, OFF events blue (see :func:`snnsec.report.style.polarity_rgb`)."""
    d = normalize(df)
    d = select(d, "gallery")
    _need(d, "rows with metric gallery_clip and extra.frames, extra.variant clean/poisoned (written by backdoor runs)")
    strips: list[tuple[str, str, np.ndarray, pd.Series]] = []
    seen_clean: list[np.ndarray] = []
    d = d.assign(trigger=[trigger_of(r) for r in d.to_dict("records")], variant=params(d, "variant", "poisoned"))
    for r in d.sort_values(["trigger", "time"], kind="stable").to_dict("records"):
        if r["variant"] != "clean":
            continue
        a = _clip(r)
        if any(a.shape == s.shape and np.array_equal(a, s) for s in seen_clean):
            continue
        seen_clean.append(a)
        sample = param(r, "sample")
        strips.append(("clean" + (f" #{sample}" if sample is not None else ""), "clean", a, r))
    for r in d.sort_values(["trigger", "time"], kind="stable").to_dict("records"):
        if r["variant"] == "clean":
            continue
        name, a = str(r["trigger"] or r["attack"] or "poisoned"), _clip(r)
        # Runs that differ only in poison rate or seed store the same clip: show it once.
        if any(n == name and a.shape == b.shape and np.array_equal(a, b) for n, _, b, _ in strips):
            continue
        strips.append((name, "poisoned", a, r))
    T = max(s[2].shape[0] for s in strips)
    ts = gallery_time_steps(T, max_frames)
    with style.paper_style():
        cell = 0.52
        width = min(style.DOUBLE_WIDTH, cell * len(ts) + 0.7)
        fig, axes = style.new_figure(len(strips), len(ts), width=width, panel_height=cell + 0.05)
        for i, (name, variant, a, r) in enumerate(strips):
            for j, t in enumerate(ts):
                ax = axes[i, j]
                ax.grid(False)
                ax.set_xticks([])
                ax.set_yticks([])
                for sp in ax.spines.values():
                    sp.set_visible(True)
                    sp.set_linewidth(0.4)
                    sp.set_color("#999999")
                if t < a.shape[0]:
                    ax.imshow(style.polarity_rgb(a[t]), interpolation="nearest")
                if i == 0:
                    ax.set_title(f"t={t}", fontsize=6.5)
                if j == 0:
                    ax.set_ylabel(name, fontsize=6.5, rotation=0, ha="right", va="center",
                                  color="black" if variant == "clean" else style.color("trigger", name))
        fig.supxlabel("time step (frame index); ON events red, OFF blue", fontsize=6.5)
    return _finish(fig, d)


def fig_anomaly_index(df: pd.DataFrame):
    """The audit's anomaly index per class, one panel per model, attack and defense; the
    dashed line is the threshold the rows record (``defense_params.anomaly_threshold``).
    Several runs in one panel (an audit and a defense bench cell of the same model, or seeds)
    give the mean and min-max range; the title says when they differ in settings."""
    d = normalize(df)
    d = keyed(d, "anomaly_index", "class", ("_class_", "_", ":"), key_pattern=r"\d+")
    _need(d, "defense rows with metric anomaly_index and extra.class (or metric anomaly_index_class_<k>) (run `snnsec audit`)")
    d = d.assign(**{"class": d["class"].astype(int), "defense": d["defense"].fillna("audit"),
                    "threshold": params(d, "threshold")})
    cols = ["dataset", "model", "attack", "defense"]
    keys = _panel_keys(d, cols)
    shown = keys[:MAX_PANELS]
    with style.paper_style():
        fig, axes = _grid(len(shown))
        for ax, key in zip(axes, shown):
            p = _subset(d, cols, key)
            g = _stats(p, [], "class")
            thr = p["threshold"].dropna()
            flagged = set()
            for fl in params(p, "flagged"):
                flagged.update(int(c) for c in (fl if isinstance(fl, (list, tuple)) else [fl]) if str(c).lstrip("-").isdigit())
            colors = [style.TRIGGERED_COLOR if c in flagged or (len(thr) and v > float(thr.iloc[0])) else "#999999"
                      for c, v in zip(g["class"], g["mean"])]
            has_range = bool((g["count"] > 1).any())
            ax.bar(g["class"].to_numpy(), g["mean"].to_numpy(float), color=colors, label="anomaly index",
                   yerr=_range(g) if has_range else None,
                   error_kw={"elinewidth": 0.7, "capsize": 2})
            if len(thr):
                ax.axhline(float(thr.iloc[0]), color="black", linestyle="--", linewidth=0.8, label=f"threshold {float(thr.iloc[0]):g}")
                ax.legend(loc="best")
            ax.set_xticks(g["class"].to_numpy())
            ax.set_xlabel("class")
            ax.set_ylabel("anomaly index (robust z-score)")
            ax.set_title(_panel_title(key, cols) + _settings_note(p, "mean", col="defense_params"))
        _note_truncated(fig, len(shown), len(keys))
    return _finish(fig, d)


def roc_points(scores, positive) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every threshold, from the highest score down; ``-inf`` scores are never flagged."""
    scores, positive = np.asarray(scores, float), np.asarray(positive, bool)
    order = np.argsort(-scores, kind="stable")
    s, pos = scores[order], positive[order]
    fin = np.isfinite(s)
    tp = np.cumsum(pos & fin)
    fp = np.cumsum(~pos & fin)
    last = np.r_[s[1:] != s[:-1], True] & fin  # one point per distinct score
    P, N = max(int(positive.sum()), 1), max(int((~positive).sum()), 1)
    return np.r_[0.0, fp[last] / N], np.r_[0.0, tp[last] / P]


def fig_detector_roc(df: pd.DataFrame):
    """ROC of each detector over the audited models of the ``audit`` bench (a zoo), from its
    ``detector_score`` rows: a backdoored model counts as found only when the detector's class
    is the planted target, so a detector that names the wrong class never reaches TPR 1. One
    panel per dataset."""
    d = normalize(df)
    d = d[(d["metric"] == "detector_score") & d["defense"].astype(str).str.startswith("detector:")]
    _need(d, "audit bench rows with metric detector_score (run `snnsec bench defenses/zoo-nmnist.toml`)")
    d = d.assign(cls=params(d, "class"), planted=params(d, "planted_target"), label=params(d, "detector"))
    datasets = sorted({str(v) for v in d["dataset"]})
    with style.paper_style():
        fig, axes = _grid(len(datasets), width=style.DOUBLE_WIDTH * 0.7, panel_height=style.PANEL_HEIGHT * 1.3)
        for ax, ds in zip(axes, datasets):
            p = d[d["dataset"] == ds]
            for i, (name, g) in enumerate(p.groupby("defense", sort=False)):
                bad = g["planted"].notna() & (g["cls"].astype(float) != g["planted"].astype(float))
                # a backdoor found with the wrong class is a miss at every threshold
                scores = np.where(bad, -np.inf, g["value"].to_numpy(float))
                fpr, tpr = roc_points(scores, g["planted"].notna().to_numpy())
                auc = float(np.trapezoid(np.r_[tpr, tpr[-1]], np.r_[fpr, 1.0]))
                ax.step(fpr, tpr, where="post", color=style.OKABE_ITO[i % len(style.OKABE_ITO)],
                        label=f"{g['label'].iloc[0] or name} (AUC {auc:.3f})")
            ax.plot([0, 1], [0, 1], color="#bbbbbb", linewidth=0.6, linestyle=":")
            models = p.drop_duplicates("run_id")
            n_bd = int(models["planted"].notna().sum())
            ax.set_xlabel(f"false alarm rate ({len(models) - n_bd} clean models)")
            ax.set_ylabel(f"found with the right target ({n_bd} backdoored)")
            ax.set_xlim(-0.02, 1.02)
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{ds}: {models['model'].nunique()} architectures")
            ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small")
    return _finish(fig, d)


def strip_groups(d: pd.DataFrame) -> dict[bool, np.ndarray]:
    """Entropies per group (``False`` clean, ``True`` triggered) as the rows store them."""
    out: dict[bool, list[float]] = {False: [], True: []}
    for r in d.to_dict("records"):
        trig = param(r, "triggered")
        if trig is None:
            continue
        ent = param(r, "entropies")
        vals = [float(v) for v in ent] if isinstance(ent, (list, tuple)) else [float(r["value"])]
        out[bool(trig)].extend(vals)
    return {k: np.asarray(v, dtype=float) for k, v in out.items()}


def fig_strip_entropy(df: pd.DataFrame, bins: int = 20):
    """Histograms of STRIP entropy for clean and triggered inputs (shared bins), one panel
    per model and attack; the dashed line is the detection threshold when the rows hold one.
    Entropies of several runs in one panel are pooled; the title says when they differ in
    settings."""
    d = normalize(df)
    ent = select(d, "strip_entropy")
    ent = where(ent, lambda r: param(r, "triggered") is not None)
    _need(ent, "defense rows with metric strip_entropy and extra.triggered (one per sample, or extra.entropies) (run the STRIP defense)")
    thr_rows = select(d, "strip_threshold")
    cols = ["dataset", "model", "attack"]
    keys = _panel_keys(ent, cols)
    shown = keys[:MAX_PANELS]
    with style.paper_style():
        fig, axes = _grid(len(shown))
        for ax, key in zip(axes, shown):
            p = _subset(ent, cols, key)
            groups = strip_groups(p)
            allv = np.concatenate([groups[False], groups[True]])
            edges = np.histogram_bin_edges(allv, bins=bins)
            for trig, name, c in ((False, "clean", style.CLEAN_COLOR), (True, "triggered", style.TRIGGERED_COLOR)):
                if len(groups[trig]):
                    ax.hist(groups[trig], bins=edges, color=c, alpha=0.6, label=f"{name} (n={len(groups[trig])})")
            t = _subset(thr_rows, cols, key) if not thr_rows.empty else thr_rows
            thr = t["value"].dropna()
            if len(thr) == 0:
                thr = pd.Series([v for v in params(p, "threshold") if v is not None], dtype=float)
            if len(thr):
                ax.axvline(float(thr.iloc[0]), color="black", linestyle="--", linewidth=0.8, label=f"threshold {float(thr.iloc[0]):.3g}")
            ax.set_xlabel("entropy of prediction under superimposition (nats)")
            ax.set_ylabel("inputs (count)")
            ax.set_title(_panel_title(key, cols) + _settings_note(p, "pooled", col="defense_params"))
            ax.legend(loc="best")
        _note_truncated(fig, len(shown), len(keys))
    return _finish(fig, pd.concat([ent, thr_rows]))


def recipe_name(row) -> str:
    """The training recipe of a hardening row (a normalized row: JSON columns parsed)."""
    rec = param(row, "recipe")
    if isinstance(rec, dict):
        rec = rec.get("name")
    if rec:
        return str(rec)
    d = row["defense"]
    return d.split(":", 1)[-1] if d else "standard"


def fig_accuracy_vs_timesteps(df: pd.DataFrame):
    """Test accuracy against the number of time steps used at inference, one line per
    training recipe, one panel per dataset and model."""
    d = normalize(df)
    d = where(d, is_hardening)
    a = select(d, "timestep_accuracy")
    a = a.assign(T_infer=params(a, "T_infer"))
    b = keyed(d, "timestep_accuracy_named", "T_infer", ("",), key_pattern=r"\d+")
    d = pd.concat([a, b])
    d = d[d["T_infer"].notna()]
    _need(d, "hardening rows with metric accuracy_at_t<t> (or accuracy_at_T with extra.T_infer) (run the 'hardening' bench kind)")
    d = d.assign(T_infer=d["T_infer"].astype(float), recipe=[recipe_name(r) for r in d.to_dict("records")])
    cols = ["dataset", "model"]
    keys = _panel_keys(d, cols)
    shown = keys[:MAX_PANELS]
    with style.paper_style():
        fig, axes = _grid(len(shown))
        for ax, key in zip(axes, shown):
            p = _subset(d, cols, key)
            p = series(p, "recipe", (), col="defense_params", max_lines=8)
            for i, ((name, rec), q) in enumerate(p.groupby(["series", "recipe"], sort=True)):
                _errorbar(ax, _stats(q, [], "T_infer"), "T_infer", label=name,
                          color=style.color("recipe", rec), fmt="-" + style.marker(i))
            ts = sorted(p["T_infer"].unique())
            if len(ts) > 1 and ts[0] > 0 and ts[-1] / ts[0] >= 8:
                ax.set_xscale("log", base=2)
            ax.set_xticks(ts, [f"{t:g}" for t in ts])
            ax.minorticks_off()
            ax.set_ylim(-0.03, 1.03)
            ax.set_xlabel("inference time steps t (frames)")
            ax.set_ylabel("test accuracy (fraction)")
            ax.set_title(_panel_title(key, cols))
            _legend(ax, title="recipe", title_fontsize=6.5)
        _note_truncated(fig, len(shown), len(keys))
    return _finish(fig, d)


def fig_firing_rate(df: pd.DataFrame):
    """Mean firing rate per spiking layer for clean and triggered inputs (grouped bars),
    one panel per model and attack. Runs of one attack with different settings (poison rates)
    share the panel: the bars are their mean, the error bars the min-max range, and the title
    says how many settings it averages."""
    d = normalize(df)
    d = keyed(d, "firing_rate", "layer", (":", "/"), key_pattern=r".+")
    d = d.assign(triggered=params(d, "triggered"))
    d = d[d["triggered"].notna()]
    _need(d, "rows with metric firing_rate, extra.layer and extra.triggered (or metric firing_rate:<layer>)")
    idx = params(d, "layer_index")
    d = d.assign(triggered=d["triggered"].astype(bool), layer=d["layer"].astype(str),
                 layer_index=[float(i) if i is not None else np.nan for i in idx])
    cols = ["dataset", "model", "attack"]
    keys = _panel_keys(d, cols)
    shown = keys[:MAX_PANELS]
    with style.paper_style():
        fig, axes = _grid(len(shown))
        for ax, key in zip(axes, shown):
            p = _subset(d, cols, key)
            layers = firing_layer_order(p)
            x = np.arange(len(layers))
            w = 0.38
            for k, (trig, name, c) in enumerate(((False, "clean", style.CLEAN_COLOR), (True, "triggered", style.TRIGGERED_COLOR))):
                q = p[p["triggered"] == trig]
                if q.empty:
                    continue
                g = _stats(q, [], "layer").set_index("layer").reindex(layers)
                has_range = bool((g["count"] > 1).any())
                ax.bar(x + (k - 0.5) * w, g["mean"].to_numpy(float), width=w, color=c, label=name,
                       yerr=_range(g) if has_range else None, error_kw={"elinewidth": 0.7, "capsize": 2})
            ax.set_xticks(x, layers, rotation=30 if len(layers) > 4 else 0, ha="right" if len(layers) > 4 else "center")
            ax.set_xlabel("spiking layer (input to output)")
            ax.set_ylabel("firing rate (spikes / neuron / step)")
            ax.set_title(_panel_title(key, cols) + _settings_note(p, "mean"))
            ax.legend(loc="best")
        _note_truncated(fig, len(shown), len(keys))
    return _finish(fig, d)


def firing_layer_order(p: pd.DataFrame) -> list[str]:
    """Layers in network order: by ``extra.layer_index`` when the rows give it, else by name
    with numbers compared as numbers (``sn2`` before ``sn10``), so row order never matters."""
    import re

    index = {}
    for layer, li in zip(p["layer"], p["layer_index"]):
        if np.isfinite(li):
            index[layer] = min(li, index.get(layer, np.inf))
        else:
            index.setdefault(layer, np.inf)

    def natural(name: str):
        return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t]

    return sorted(index, key=lambda k: (index[k], natural(k)))


# ----------------------------------------------------------------------------- inspection

def _labelled_lines(ax) -> list[tuple[str, object]]:
    from matplotlib.container import ErrorbarContainer

    # errorbar() puts the label on its container, not on the data line it draws.
    out = [(c.get_label(), c.lines[0]) for c in ax.containers if isinstance(c, ErrorbarContainer) and c.lines[0] is not None]
    out += [(ln.get_label(), ln) for ln in ax.get_lines() if not ln.get_label().startswith("_")]
    return out


def _container_label(c) -> str:
    # hist() labels its first patch, bar() the container.
    label = c.get_label()
    if (not label or label.startswith("_")) and c.patches:
        label = c.patches[0].get_label()
    return label or ""


def figure_data(fig) -> list[dict]:
    """What a figure plots, as numbers: per axes its labels, lines (x, y), bar heights and
    images. Used to check that figures show the stored values and redraw identically."""
    from matplotlib.container import BarContainer

    out = []
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            continue
        out.append({
            "title": ax.get_title(),
            "xlabel": ax.get_xlabel(),
            "ylabel": ax.get_ylabel(),
            "lines": [(label, np.asarray(ln.get_xdata(), dtype=float), np.asarray(ln.get_ydata(), dtype=float))
                      for label, ln in _labelled_lines(ax)],
            "bars": [(_container_label(c), np.asarray([b.get_x() + b.get_width() / 2 for b in c.patches], dtype=float),
                      np.asarray([b.get_height() for b in c.patches], dtype=float))
                     for c in ax.containers if isinstance(c, BarContainer)],
            "images": [np.ma.filled(np.ma.asarray(im.get_array(), dtype=float), np.nan) for im in ax.get_images()],
            "texts": [t.get_text() for t in ax.texts],
            "xticklabels": [t.get_text() for t in ax.get_xticklabels()],
            "yticklabels": [t.get_text() for t in ax.get_yticklabels()],
        })
    return out


def fig_leaderboard(df: pd.DataFrame):
    """The leaderboard as a table: per model (and compression) clean accuracy, worst-case robust
    accuracy per eps (marked * when the evaluation failed the integrity checklist), ASR of each
    backdoor with the audit's verdict (+ right, - wrong), energy per sample and whether every
    weight layer sees spikes."""
    from snnsec.report.tables import leaderboard_table

    t = leaderboard_table(df)
    robust = [c for c in t.columns if str(c).startswith("robust_accuracy@")]
    triggers = sorted(c.split(":", 1)[1] for c in t.columns if str(c).startswith("asr:"))
    header = ["model", "CA", *(c.split("@", 1)[1] for c in robust), *(f"ASR {x}" for x in triggers), "energy uJ", "SD"]
    cells = []
    for r in t.sort_values(["dataset", "variant"]).to_dict("records"):
        star = "*" if r["unreliable"] else ""
        line = [str(r["variant"]), f"{r['clean_accuracy']:.3f}", *(f"{r[c]:.3f}{star}" for c in robust)]
        for x in triggers:
            verdict = r.get(f"audit_correct:{x}")
            mark = "" if verdict is None or pd.isna(verdict) else (" +" if verdict >= 1 else " -")
            line.append(f"{r[f'asr:{x}']:.2f}{mark}")
        line += [f"{r.get('energy_pj', float('nan')) / 1e6:.3g}", "yes" if r.get("spike_driven", 0) >= 1 else "no"]
        cells.append(line)
    with style.paper_style():
        fig, axes = style.new_figure(1, 1, width=2 * style.COLUMN_WIDTH, panel_height=0.6 + 0.18 * len(cells))
        ax = axes[0, 0]
        ax.axis("off")
        tab = ax.table(cellText=cells, colLabels=header, loc="center", cellLoc="center")
        tab.auto_set_font_size(False)
        tab.set_fontsize(6)
        ax.set_title("robust accuracy: per-sample worst case (* unreliable); ASR: + audit right, - audit wrong; "
                     "SD: spike-driven", fontsize=6)
    return _finish(fig, normalize(df)[lambda d: d["attack"].astype(str) == "leaderboard"])


def fig_robustness_energy(df: pd.DataFrame):
    """Worst-case robust accuracy against energy per sample (45 nm estimate), one point per model,
    one panel per eps: which backbones buy robustness with energy, and which get it cheaply.
    Blue: every weight layer sees spikes; orange: some are fed non-spike values. Hollow points:
    evaluations that failed the integrity checklist."""
    from snnsec.report.tables import leaderboard_table

    t = leaderboard_table(df)
    robust = [c for c in t.columns if str(c).startswith("robust_accuracy@")]
    if "energy_pj" not in t.columns or not robust:
        raise MissingData("leaderboard rows with energy_pj and robust_accuracy@<eps>")
    with style.paper_style():
        fig, axes = _grid(len(robust))
        for ax, col in zip(axes, robust):
            for r in t.sort_values("variant").to_dict("records"):
                c = style.CLEAN_COLOR if r.get("spike_driven", 0) >= 1 else style.TRIGGERED_COLOR
                ax.scatter([r["energy_pj"] / 1e6], [r[col]], s=18, edgecolors=c,
                           facecolors="none" if r["unreliable"] else c)
                ax.annotate(str(r["variant"]), (r["energy_pj"] / 1e6, r[col]), fontsize=5, xytext=(2, 2),
                            textcoords="offset points")
            _x_scale(ax, t["energy_pj"] / 1e6)
            ax.set_xlabel("energy per sample (uJ, 45 nm)")
            ax.set_ylabel(f"robust accuracy @ {col.split('@', 1)[1]}")
            ax.set_ylim(-0.02, 1.02)
    return _finish(fig, normalize(df)[lambda d: d["attack"].astype(str) == "leaderboard"])
