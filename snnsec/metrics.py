"""Pure metric functions: no model, no I/O, inputs are tensors or arrays.

Conventions: predictions are class indices (or logits ``[N, K]``, reduced by argmax);
rates are floats in [0, 1]; a metric over an empty set raises ValueError rather than
returning a number that means nothing.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F


def _labels(x) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.dim() == 2:
        t = t.argmax(dim=1)
    if t.dim() != 1:
        raise ValueError(f"expected class indices [N] or logits [N, K], got shape {tuple(t.shape)}")
    return t.long().cpu()


# --------------------------------------------------------------------------- accuracy / ASR


def clean_accuracy(pred, labels) -> float:
    """CA: fraction of clean samples classified as their true label."""
    p, y = _labels(pred), _labels(labels)
    if p.shape != y.shape:
        raise ValueError(f"clean_accuracy: {p.numel()} predictions for {y.numel()} labels")
    if y.numel() == 0:
        raise ValueError("clean_accuracy: no samples")
    return float((p == y).float().mean())


def attack_success_rate(pred_poisoned, labels, target) -> float:
    """ASR: among triggered samples whose TRUE label is not the target, the fraction predicted
    as the target. Target-class samples are excluded: counting them (as the reference does)
    puts a floor of the class prior under every ASR.

    ``target`` is an int (all-to-one) or a per-sample tensor of target labels (all-to-all,
    e.g. ``(y + 1) % K``); samples whose target equals their true label are excluded.
    """
    p, y = _labels(pred_poisoned), _labels(labels)
    tgt = torch.as_tensor(target).long().cpu()
    if tgt.dim() == 0:
        tgt = tgt.expand_as(y)
    if not (p.shape == y.shape == tgt.shape):
        raise ValueError(f"attack_success_rate: shapes differ: pred {tuple(p.shape)}, labels {tuple(y.shape)}, target {tuple(tgt.shape)}")
    keep = y != tgt
    if not bool(keep.any()):
        raise ValueError("attack_success_rate: every sample already belongs to the target class; ASR is undefined")
    return float((p[keep] == tgt[keep]).float().mean())


def attack_success_rate_all(pred_poisoned, labels, target) -> float:
    """ASR as Sneaky Spikes and Flashy Backdoor count it: over **every** triggered sample,
    target class included, the fraction predicted as its poison label. Reported beside
    :func:`attack_success_rate` to compare with the papers; it is at least the share of
    target-class samples the model gets right."""
    p, y = _labels(pred_poisoned), _labels(labels)
    tgt = torch.as_tensor(target).long().cpu()
    if tgt.dim() == 0:
        tgt = tgt.expand_as(y)
    if not (p.shape == y.shape == tgt.shape) or len(y) == 0:
        raise ValueError(f"attack_success_rate_all: shapes differ or empty: pred {tuple(p.shape)}, labels {tuple(y.shape)}")
    return float((p == tgt).float().mean())


def per_class_asr(pred_poisoned, labels, target, num_classes: int) -> dict[int, float]:
    """ASR per true class (for all-to-all); classes with no eligible sample are left out."""
    p, y = _labels(pred_poisoned), _labels(labels)
    tgt = torch.as_tensor(target).long().cpu()
    if tgt.dim() == 0:
        tgt = tgt.expand_as(y)
    out = {}
    for c in range(int(num_classes)):
        keep = (y == c) & (tgt != y)
        if keep.any():
            out[c] = float((p[keep] == tgt[keep]).float().mean())
    return out


def backdoor_robust_accuracy(pred_poisoned, labels, target) -> float:
    """RA: among triggered non-target samples, the fraction still classified as their true
    label (what a defense should restore)."""
    p, y = _labels(pred_poisoned), _labels(labels)
    tgt = torch.as_tensor(target).long().cpu()
    if tgt.dim() == 0:
        tgt = tgt.expand_as(y)
    keep = y != tgt
    if not bool(keep.any()):
        raise ValueError("backdoor_robust_accuracy: no non-target samples")
    return float((p[keep] == y[keep]).float().mean())


def worst_case_accuracy(correct_per_attack) -> float:
    """Robust accuracy as the per-sample worst case: a sample counts only if it is correct
    under EVERY attack run. ``correct_per_attack``: iterable of bool [N] masks (or [A, N])."""
    masks = [torch.as_tensor(np.asarray(m) if not isinstance(m, torch.Tensor) else m).bool().cpu() for m in correct_per_attack]
    if not masks:
        raise ValueError("worst_case_accuracy: no attacks given")
    n = masks[0].numel()
    if any(m.numel() != n for m in masks):
        raise ValueError("worst_case_accuracy: attacks were run on different numbers of samples")
    if n == 0:
        raise ValueError("worst_case_accuracy: no samples")
    return float(torch.stack(masks).all(dim=0).float().mean())


def defense_effectiveness_rating(asr_before: float, asr_after: float, ca_before: float, ca_after: float) -> float:
    """DER = [max(0, dASR) - max(0, dCA) + 1] / 2 with dX = before - after (Zhu et al.):
    1 is a perfect defense, 0.5 changes nothing, below 0.5 it costs more accuracy than ASR."""
    d_asr = float(asr_before) - float(asr_after)
    d_ca = float(ca_before) - float(ca_after)
    return (max(0.0, d_asr) - max(0.0, d_ca) + 1.0) / 2.0


# --------------------------------------------------------------------------- detection


def auroc(scores, is_positive) -> float:
    """Area under the ROC curve of ``scores`` (higher = more suspicious) for binary truth."""
    from sklearn.metrics import roc_auc_score

    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(is_positive).astype(bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"auroc: {s.size} scores for {y.size} labels")
    if y.all() or not y.any():
        raise ValueError("auroc: needs at least one positive and one negative sample")
    return float(roc_auc_score(y, s))


def tpr_fpr(flagged, is_positive) -> tuple[float, float]:
    """(true positive rate, false positive rate) of binary decisions ``flagged``."""
    f = np.asarray(flagged).astype(bool).ravel()
    y = np.asarray(is_positive).astype(bool).ravel()
    if f.shape != y.shape:
        raise ValueError(f"tpr_fpr: {f.size} decisions for {y.size} labels")
    if y.all() or not y.any():
        raise ValueError("tpr_fpr: needs at least one positive and one negative sample")
    return float((f & y).sum() / y.sum()), float((f & ~y).sum() / (~y).sum())


# --------------------------------------------------------------------------- perturbation norms


def _flat_delta(x, x_adv) -> torch.Tensor:
    a, b = torch.as_tensor(x), torch.as_tensor(x_adv)
    if a.shape != b.shape:
        raise ValueError(f"perturbation: shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.dim() == 0:
        raise ValueError("perturbation: expected a batch [N, ...]")
    return (b.double() - a.double()).reshape(a.shape[0], -1)


def linf_norm(x, x_adv) -> torch.Tensor:
    """Per-sample max |x_adv - x| over all but the first (batch) dimension."""
    d = _flat_delta(x, x_adv)
    return d.abs().amax(dim=1) if d.shape[1] else torch.zeros(d.shape[0], dtype=torch.float64)


def l2_norm(x, x_adv) -> torch.Tensor:
    """Per-sample Euclidean norm of the perturbation."""
    return _flat_delta(x, x_adv).norm(p=2, dim=1)


def l0_norm(x, x_adv, tol: float = 0.0) -> torch.Tensor:
    """Per-sample number of elements changed by more than ``tol``."""
    return (_flat_delta(x, x_adv).abs() > tol).sum(dim=1)


def perturbation_norms(x, x_adv) -> dict[str, torch.Tensor]:
    return {"linf": linf_norm(x, x_adv), "l2": l2_norm(x, x_adv), "l0": l0_norm(x, x_adv)}


# --------------------------------------------------------------------------- SSIM


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 1-D Gaussian ``[size]``; Wang et al. (2004) filter with the 11 x 11 window (sigma
    1.5) that is its outer product with itself."""
    g = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(g**2) / (2 * sigma**2))
    return g / g.sum()


def _gaussian_band(n: int, g: torch.Tensor) -> torch.Tensor:
    """``[n, n + len(g) - 1]``: row i holds ``g`` from column i, so that ``band @ v`` filters a
    padded vector ``v`` with ``g`` at every one of its ``n`` valid positions."""
    m = torch.zeros(n, n + g.numel() - 1, dtype=g.dtype)
    for k in range(g.numel()):
        m.diagonal(k).fill_(g[k])
    return m


def ssim_images(a, b, *, data_range: float = 1.0, window: int = 11, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Mean SSIM of image pairs ``[..., H, W]`` -> ``[...]``: Wang et al. (2004) with an
    11 x 11 Gaussian window (sigma 1.5), the map computed at **every** pixel of the image
    with reflect padding and averaged. This is torchmetrics'
    ``structural_similarity_index_measure`` (the SSIM BackdoorBench reports), which the
    tests check value for value.

    Why not the valid region only (scikit-image's and MATLAB's ``ssim`` crop the border):
    it weighs a corner pixel about 1e-6 of the mean, so a trigger in the corner, the
    paper's default position, would look 20 times less visible than the same trigger in
    the middle. Images smaller than the window use the largest odd window that fits
    (sigma scaled by the same factor), so tiny sensors still get a defined score.
    """
    x = torch.as_tensor(a).double()
    y = torch.as_tensor(b).double()
    if x.shape != y.shape:
        raise ValueError(f"ssim: shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    if x.dim() < 2:
        raise ValueError(f"ssim: expected images [..., H, W], got shape {tuple(x.shape)}")
    lead, (H, W) = x.shape[:-2], x.shape[-2:]
    # reflect padding needs the pad to be smaller than the image
    size = min(window, 2 * min(H, W) - 1)
    if size % 2 == 0:
        size -= 1
    g = gaussian_window(size, sigma * size / window)
    pad = (size - 1) // 2
    x = F.pad(x.reshape(-1, 1, H, W), (pad, pad, pad, pad), mode="reflect")[:, 0]
    y = F.pad(y.reshape(-1, 1, H, W), (pad, pad, pad, pad), mode="reflect")[:, 0]
    # the window is separable, so filtering an image is band_H @ image @ band_W^T: batched matrix
    # products run in double precision about 20x faster than conv2d's float64 path (the same values
    # to 1e-15; the demo's poisoning stats spent most of their time here)
    moments = _gaussian_band(H, g) @ torch.cat([x, y, x * x, y * y, x * y]) @ _gaussian_band(W, g).T
    mu_x, mu_y, exx, eyy, exy = moments.chunk(5)
    sxx = (exx - mu_x**2).clamp(min=0)
    syy = (eyy - mu_y**2).clamp(min=0)
    sxy = exy - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.mean(dim=(1, 2)).reshape(lead)


def ssim_per_frame(clean, poisoned, *, data_range: float = 1.0) -> torch.Tensor:
    """SSIM of each frame of ``[..., T, P, H, W]`` (mean over polarity channels) -> ``[..., T]``."""
    s = ssim_images(clean, poisoned, data_range=data_range)
    return s.mean(dim=-1)


def ssim_time_averaged(clean, poisoned, *, data_range: float = 1.0) -> float:
    """Per-frame SSIM averaged over frames and samples: the headline stealth score."""
    return float(ssim_per_frame(clean, poisoned, data_range=data_range).mean())


def ssim_accumulated(clean, poisoned) -> float:
    """SSIM of the frames averaged over time (the picture a viewer of the whole clip sees),
    averaged over channels and samples. Time-averaged binary frames stay in [0, 1]."""
    a = torch.as_tensor(clean).double().mean(dim=-4)
    b = torch.as_tensor(poisoned).double().mean(dim=-4)
    rng = float(max(a.max(), b.max(), 1e-12))
    return float(ssim_images(a, b, data_range=rng).mean())


# --------------------------------------------------------------------------- event-level stealth


def _event_keys(events) -> list[tuple]:
    return list(zip(events["x"].tolist(), events["y"].tolist(), events["t"].tolist(), events["p"].tolist()))


def event_changes(clean_events, poisoned_events, sensor_size) -> dict[str, int]:
    """How much an event-level trigger changed a recording.

    ``events_added`` / ``events_removed``: multiset difference of (x, y, t, p) events.
    ``l0`` / ``l1``: over the per-pixel, per-polarity event-count image ``[P, H, W]``, the
    number of cells whose count changed and the sum of absolute count changes.
    """
    a, b = Counter(_event_keys(clean_events)), Counter(_event_keys(poisoned_events))
    added = sum((b - a).values())
    removed = sum((a - b).values())
    W, H, P = (int(v) for v in sensor_size)

    def counts(ev):
        img = np.zeros((P, H, W), dtype=np.int64)
        np.add.at(img, (np.asarray(ev["p"], dtype=np.int64) if P > 1 else 0, np.asarray(ev["y"], dtype=np.int64), np.asarray(ev["x"], dtype=np.int64)), 1)
        return img

    diff = counts(poisoned_events) - counts(clean_events)
    return {"events_added": int(added), "events_removed": int(removed), "l0": int((diff != 0).sum()), "l1": int(np.abs(diff).sum())}

