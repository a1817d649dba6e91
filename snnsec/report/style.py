"""One look for every snnsec figure: sizes, fonts, and a fixed colour per trigger, attack,
defense and training recipe, so "static" or "pgd" is the same colour in every figure.

Colours come from the Okabe-Ito palette (safe for the common colour-vision deficiencies);
names not listed below get a colour from a hash of their name, so an unknown trigger is
still the same colour in every figure and every run.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager

import numpy as np

# A single column of a two-column paper (IEEE, ACM, NeurIPS) is about 3.3-3.5 in wide.
COLUMN_WIDTH = 3.5
DOUBLE_WIDTH = 7.16
PANEL_HEIGHT = 2.4
DPI = 200

RC = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 6.5,
    "legend.frameon": False,
    "lines.linewidth": 1.3,
    "lines.markersize": 4,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.02,
    # Type 42 keeps text as text in the PDF, which paper submission systems ask for.
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
}

OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")
_EXTRA = ("#882255", "#44AA99", "#999933", "#AA4499", "#661100", "#6699CC", "#888888", "#117733")
_HASHED = OKABE_ITO[:7] + _EXTRA

TRIGGER_COLORS = {
    "static": "#E69F00",
    "moving": "#56B4E9",
    "smart": "#009E73",
    "dynamic": "#CC79A7",
    "flash": "#D55E00",
    "flashy": "#D55E00",
    "framed": "#0072B2",
    "strobe": "#882255",
}
ATTACK_COLORS = {
    "fgsm": "#56B4E9",
    "pgd": "#0072B2",
    "bim": "#009E73",
    "apgd": "#CC79A7",
    "apgd-ce": "#CC79A7",
    "apgd-dlr": "#882255",
    "cw": "#E69F00",
    "rga": "#D55E00",
    "bptr": "#44AA99",
    "sparse": "#999933",
    "binary": "#AA4499",
    "worst_case": "#000000",
}
DEFENSE_COLORS = {
    "none": "#888888",
    "nc": "#0072B2",
    "neural_cleanse": "#0072B2",
    "nc_temporal": "#6699CC",
    "nc_unlearning": "#44AA99",
    "strip": "#E69F00",
    "ac": "#009E73",
    "activation_clustering": "#009E73",
    "ss": "#56B4E9",
    "spectral_signatures": "#56B4E9",
    "fine_pruning": "#D55E00",
    "abl": "#CC79A7",
    "margin": "#882255",
    "tmpbd": "#882255",
}
RECIPE_COLORS = {
    "ce": "#000000",
    "standard": "#000000",
    "mse-rate": "#56B4E9",
    "tcl": "#009E73",
    "stcl": "#D55E00",
    "adversarial": "#CC79A7",
    "at": "#CC79A7",
    "pgd": "#CC79A7",
    "ce+pgd": "#CC79A7",
    "tcl+pgd": "#882255",
    "stcl+pgd": "#E69F00",
}
_TABLES = {"trigger": TRIGGER_COLORS, "attack": ATTACK_COLORS, "defense": DEFENSE_COLORS, "recipe": RECIPE_COLORS}

CLEAN_COLOR = "#0072B2"
TRIGGERED_COLOR = "#D55E00"
UNRELIABLE_COLOR = "#D00000"
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", ":", "-.")


def _key(name: str) -> str:
    # "fine-pruning", "Fine pruning" and "fine_pruning" are one defense.
    return str(name).strip().lower().replace(" ", "_").replace("-", "_")


def color(kind: str, name) -> str:
    """The colour of ``name`` (a trigger, attack, defense or recipe) in every figure."""
    if kind not in _TABLES:
        raise ValueError(f"color: kind must be one of {sorted(_TABLES)}, got {kind!r}")
    key = _key(name)
    table = {_key(k): v for k, v in _TABLES[kind].items()}
    if key in table:
        return table[key]
    # Trigger families written as "backdoor:static" or attacks as "pgd_l2" keep their base colour.
    for sep in (":", "_"):
        for part in (key.rsplit(sep, 1)[-1], key.split(sep, 1)[0]):
            if part in table:
                return table[part]
    digest = hashlib.sha256(f"{kind}:{key}".encode()).digest()
    return _HASHED[digest[0] % len(_HASHED)]


def marker(i: int) -> str:
    return MARKERS[i % len(MARKERS)]


@contextmanager
def paper_style():
    """rcParams for figures made inside the block; the caller's settings come back after."""
    import matplotlib

    with matplotlib.rc_context(RC):
        yield


def new_figure(nrows: int = 1, ncols: int = 1, *, width: float = COLUMN_WIDTH, panel_height: float = PANEL_HEIGHT,
               sharex=False, sharey=False, squeeze=False, **kw):
    """A figure detached from pyplot (no global state, nothing to close), Agg-rendered on save."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, panel_height * nrows), dpi=100, layout="constrained")
    axes = fig.subplots(nrows, ncols, sharex=sharex, sharey=sharey, squeeze=squeeze, **kw)
    return fig, axes


def polarity_rgb(frame) -> np.ndarray:
    """One frame ``[P, H, W]`` (or ``[H, W]``) -> RGB image on white.

    ON events red, OFF events blue, both black; intensities are scaled by the frame's
    maximum so count frames and binary frames read the same way.
    """
    f = np.asarray(frame, dtype=np.float64)
    if f.ndim == 2:
        f = f[None]
    if f.ndim != 3:
        raise ValueError(f"polarity_rgb: expected a frame [P, H, W] or [H, W], got shape {f.shape}")
    peak = float(np.abs(f).max())
    f = f / peak if peak > 0 else f
    on = f[1] if f.shape[0] > 1 else f[0]
    off = f[0] if f.shape[0] > 1 else np.zeros_like(f[0])
    img = np.ones(f.shape[1:] + (3,))
    img[..., 0] -= off
    img[..., 1] -= np.maximum(on, off)
    img[..., 2] -= on
    return np.clip(img, 0.0, 1.0)
