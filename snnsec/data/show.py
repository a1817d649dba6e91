"""Frame strips: one panel per time step, ON events red and OFF events blue on white.

The layout follows the sample figures of the Sneaky Spikes paper (Abad et al. 2023): a
row of frames in time order, both polarities in one panel. Pixels where both polarities
fired in the same bin show purple.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from snnsec._io import atomic_write_with


def frames_to_rgb(frames: np.ndarray) -> np.ndarray:
    """``[T, P, H, W]`` (counts or 0/1) -> ``[T, H, W, 3]`` floats in [0, 1], white background.

    Counts are scaled by their 99th percentile so a few hot pixels do not wash out the rest.
    """
    f = np.asarray(frames, dtype=np.float64)
    if f.ndim != 4:
        raise ValueError(f"frames: expected [T, P, H, W], got shape {f.shape}")
    nz = f[f > 0]
    scale = max(float(np.percentile(nz, 99)), 1.0) if nz.size else 1.0
    f = np.clip(f / scale, 0.0, 1.0)
    on = f[:, 1] if f.shape[1] > 1 else f[:, 0]
    off = f[:, 0] if f.shape[1] > 1 else np.zeros_like(on)
    both = 0.6 * on * off  # both polarities in one bin: purple, not black, so dense clips stay readable
    return np.stack([1.0 - off + both, 1.0 - np.maximum(on, off), 1.0 - on + both], axis=-1)


def save_frame_strip(frames, out: str | os.PathLike, *, title: str = "", max_cols: int = 16) -> Path:
    """Draw ``frames [T, P, H, W]`` as a strip (wrapping after ``max_cols``) to ``out`` (PNG, PDF...)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rgb = frames_to_rgb(np.asarray(frames))
    T, H, W, _ = rgb.shape
    cols = min(T, max_cols)
    rows = -(-T // cols)
    aspect = H / W
    panel = 1.3 if W >= H else 1.3 / aspect
    fig, axes = plt.subplots(rows, cols, figsize=(cols * panel, rows * panel * aspect + 0.8), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if k < T:
            ax.imshow(rgb[k], interpolation="nearest", aspect="auto")
            ax.set_title(f"t={k}", fontsize=8)
        else:
            ax.axis("off")
    fig.legend(handles=[Patch(color="red", label="ON"), Patch(color="blue", label="OFF"),
                        Patch(color=(0.6, 0.0, 0.6), label="both")], loc="lower right", ncol=3, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    try:
        return atomic_write_with(out, lambda tmp: fig.savefig(tmp, dpi=120))
    finally:
        plt.close(fig)
