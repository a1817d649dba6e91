"""Figures for backdoor experiments (until snnsec.report takes them over): clean vs
triggered frame strips, and ASR against poison rate from result rows."""

from __future__ import annotations

import numpy as np
import torch


def _rgb(frame: torch.Tensor) -> np.ndarray:
    """``[P, H, W]`` -> RGB image: ON events red, OFF events blue, both black."""
    f = frame.detach().cpu().float()
    f = f / max(float(f.max()), 1e-12)
    H, W = f.shape[-2:]
    img = np.ones((H, W, 3), dtype=np.float32)
    on = f[1].numpy() if f.shape[0] > 1 else f[0].numpy()
    off = f[0].numpy() if f.shape[0] > 1 else np.zeros((H, W), np.float32)
    img[..., 0] -= off
    img[..., 1] -= np.maximum(on, off)
    img[..., 2] -= on
    return np.clip(img, 0, 1)


def trigger_strips(clean: torch.Tensor, triggered: dict[str, torch.Tensor], *, max_frames: int = 8, title: str | None = None):
    """One row for the clean sample ``[T, P, H, W]`` and one per trigger, frames along x."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    T = clean.shape[0]
    ts = np.unique(np.linspace(0, T - 1, min(T, max_frames)).round().astype(int))
    rows = [("clean", clean), *triggered.items()]
    fig, axes = plt.subplots(len(rows), len(ts), figsize=(1.3 * len(ts), 1.4 * len(rows)), squeeze=False)
    for r, (name, frames) in enumerate(rows):
        for c, t in enumerate(ts):
            ax = axes[r, c]
            ax.imshow(_rgb(frames[t]), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"t={t}", fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def asr_vs_rate(df, *, triggers=("static", "moving"), title: str | None = None):
    """ASR (mean over seeds, with min-max bars) against poison rate, one line per trigger.

    ``df``: result rows (snnsec.results.load) of backdoor cells; reads the ``rate`` and
    ``trigger`` attack parameters and the ``attack_success_rate`` / ``clean_accuracy`` metrics.
    """
    import json

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    params = df["attack_params"].map(lambda p: p if isinstance(p, dict) else json.loads(p or "{}"))
    d = df.assign(trigger=params.map(lambda p: p.get("trigger")), rate=params.map(lambda p: p.get("rate")))
    clean = d[(d.rate == 0) & (d.metric == "clean_accuracy")]
    d = d[d.rate.astype(float) > 0]  # the x axis is logarithmic; rate 0 is the clean model, drawn as a line
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for i, trig in enumerate(triggers):
        for metric, style in (("attack_success_rate", "-o"), ("clean_accuracy", ":s")):
            sub = d[(d.trigger == trig) & (d.metric == metric)]
            if sub.empty:
                continue
            g = sub.groupby("rate")["value"].agg(["mean", "min", "max"]).sort_index()
            label = f"{trig} {'ASR' if metric == 'attack_success_rate' else 'CA'}"
            ax.errorbar(g.index, g["mean"], yerr=[g["mean"] - g["min"], g["max"] - g["mean"]], fmt=style, capsize=3,
                        color=f"C{i}", label=label)
    if not clean.empty:
        ax.axhline(float(clean["value"].mean()), color="grey", lw=1, ls="--", label="clean model CA")
    ax.set_xscale("log")
    ax.set_xlabel("poison rate")
    ax.set_ylabel("rate on test set")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
