"""Metrics on hand-made cases whose answers are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from snnsec import metrics as M


def test_clean_accuracy_and_logits():
    assert M.clean_accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    assert M.clean_accuracy(logits, [0, 1, 1]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="no samples"):
        M.clean_accuracy([], [])


def test_asr_excludes_target_class_samples():
    labels = [0, 0, 0, 1, 2, 3]
    pred = [0, 0, 0, 0, 2, 0]  # target-class samples "succeed" trivially; 2 of 3 others do
    assert M.attack_success_rate(pred, labels, target=0) == pytest.approx(2 / 3)
    # A model that ignores the trigger has ASR 0, not the class prior (3/6 here).
    assert M.attack_success_rate(labels, labels, target=0) == 0.0
    with pytest.raises(ValueError, match="target class"):
        M.attack_success_rate([0, 0], [0, 0], target=0)


def test_asr_over_all_samples_counts_the_target_class():
    labels = [0, 0, 0, 1, 2, 3]
    pred = [0, 0, 0, 0, 2, 0]
    assert M.attack_success_rate_all(pred, labels, target=0) == pytest.approx(5 / 6)
    # the reference's floor: a model that ignores the trigger still scores the target-class share
    assert M.attack_success_rate_all(labels, labels, target=0) == pytest.approx(3 / 6)


def test_all_to_all_asr_and_per_class():
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    tgt = (y + 1) % 3
    pred = torch.tensor([1, 0, 2, 2, 0, 1])
    assert M.attack_success_rate(pred, y, tgt) == pytest.approx(4 / 6)
    assert M.per_class_asr(pred, y, tgt, 3) == {0: 0.5, 1: 1.0, 2: 0.5}
    assert M.per_class_asr([0, 1], [0, 1], 0, 3) == {1: 0.0}


def test_backdoor_ra_and_worst_case():
    assert M.backdoor_robust_accuracy([0, 1, 0, 3], [0, 1, 2, 3], 0) == pytest.approx(2 / 3)
    assert M.worst_case_accuracy([[1, 1, 0, 1], [1, 0, 1, 1]]) == 0.5
    with pytest.raises(ValueError, match="different numbers"):
        M.worst_case_accuracy([[1, 1], [1]])


def test_der_formula():
    assert M.defense_effectiveness_rating(1.0, 0.0, 0.9, 0.9) == 1.0
    assert M.defense_effectiveness_rating(0.9, 0.9, 0.9, 0.9) == 0.5
    assert M.defense_effectiveness_rating(1.0, 0.2, 0.9, 0.5) == pytest.approx((0.8 - 0.4 + 1) / 2)
    # An ASR that rises or a CA that rises is clipped at zero change.
    assert M.defense_effectiveness_rating(0.5, 0.7, 0.8, 0.9) == 0.5


def test_auroc_and_rates():
    assert M.auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert M.auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert M.auroc([0.1, 0.6, 0.4, 0.9], [0, 0, 1, 1]) == 0.75
    assert M.tpr_fpr([1, 0, 1, 0, 0], [1, 1, 0, 0, 0]) == (0.5, pytest.approx(1 / 3))
    with pytest.raises(ValueError, match="positive and one negative"):
        M.auroc([0.1, 0.2], [1, 1])


def test_perturbation_norms_by_hand():
    x = torch.zeros(2, 3, 2)
    adv = x.clone()
    adv[0, 0, 0] = 0.5
    adv[0, 2, 1] = -0.25
    adv[1, 1, 1] = 3.0
    n = M.perturbation_norms(x, adv)
    assert n["linf"].tolist() == [0.5, 3.0]
    assert n["l2"].tolist() == pytest.approx([np.sqrt(0.25 + 0.0625), 3.0])
    assert n["l0"].tolist() == [2, 1]
    assert M.l0_norm(x, adv, tol=0.3).tolist() == [1, 1]
    with pytest.raises(ValueError, match="shapes differ"):
        M.linf_norm(x, adv[:1])


def test_ssim_identical_and_bounds():
    rng = torch.Generator().manual_seed(0)
    a = torch.rand(3, 2, 34, 34, generator=rng)
    assert M.ssim_images(a, a).shape == (3, 2)
    assert bool(torch.allclose(M.ssim_images(a, a), torch.ones(3, 2, dtype=torch.float64)))
    b = 1 - a
    s = M.ssim_images(a, b)
    assert bool((s < 0.1).all()) and bool((s >= -1).all())


def test_ssim_known_value_constant_images():
    # For constant images mu_x = a, mu_y = b and no variance: SSIM = (2ab + c1) / (a^2 + b^2 + c1).
    a, b = torch.full((16, 16), 0.2), torch.full((16, 16), 0.6)
    c1 = 0.01**2
    assert float(M.ssim_images(a, b)) == pytest.approx((2 * 0.2 * 0.6 + c1) / (0.04 + 0.36 + c1))


def _torchmetrics_ssim():
    """torchmetrics' SSIM, imported without its torchvision extras: the CPU torch here has
    a torchvision that cannot load, and torchmetrics imports it whenever it is installed."""
    import importlib.metadata as md
    import importlib.util
    import sys

    if importlib.util.find_spec("torchmetrics") is None:
        pytest.skip("torchmetrics is not installed (it is in the 'test' extra)")
    imports = pytest.importorskip("lightning_utilities.core.imports")
    real = imports._version

    def without_torchvision(name):
        if name == "torchvision":
            raise md.PackageNotFoundError(name)
        return real(name)

    saved = sys.modules.get("torchvision", "absent")
    imports._version, sys.modules["torchvision"] = without_torchvision, None
    try:
        from torchmetrics.functional.image import structural_similarity_index_measure
    finally:
        imports._version = real
        if saved == "absent":
            del sys.modules["torchvision"]
        else:
            sys.modules["torchvision"] = saved
    return structural_similarity_index_measure


def test_ssim_equals_torchmetrics():
    tm_ssim = _torchmetrics_ssim()
    g = torch.Generator().manual_seed(0)
    frames = (torch.rand(6, 1, 34, 34, generator=g) > 0.8).float()
    corner = frames.clone()
    corner[:, :, :3, :3] = 1.0
    middle = frames.clone()
    middle[:, :, 15:18, 15:18] = 1.0
    noisy = torch.rand(6, 1, 34, 34, generator=g)
    for other in (corner, middle, noisy):
        want = torch.stack([tm_ssim(o[None], f[None], data_range=1.0) for o, f in zip(other, frames)])
        assert torch.allclose(M.ssim_images(frames, other).flatten().float(), want, atol=1e-5)
    # the border counts: a 3x3 square in the corner loses 0.042 of SSIM, 0.43 of what the same
    # square in the middle loses (valid-region SSIM: 0.0026 against 0.195 in the middle, 1/75)
    on_blank = torch.zeros(1, 34, 34)
    c, m = on_blank.clone(), on_blank.clone()
    c[:, :3, :3], m[:, 15:18, 15:18] = 1.0, 1.0
    assert float(1 - M.ssim_images(on_blank, c)) == pytest.approx(0.0418, abs=1e-3)
    assert float(1 - M.ssim_images(on_blank, c)) > 0.4 * float(1 - M.ssim_images(on_blank, m))


def test_ssim_per_frame_and_time_averaged():
    clean = torch.zeros(4, 2, 20, 20)
    poisoned = clean.clone()
    poisoned[1:3, :, :5, :5] = 1.0  # frames 1 and 2 changed
    per = M.ssim_per_frame(clean, poisoned)
    assert per.shape == (4,)
    assert per[0] == 1.0 and per[3] == 1.0 and bool((per[1:3] < 0.9).all())
    assert M.ssim_time_averaged(clean, poisoned) == pytest.approx(float(per.mean()))
    assert M.ssim_accumulated(clean, clean) == pytest.approx(1.0)


def _ev(rows):
    ev = np.zeros(len(rows), dtype=[("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", np.int8)])
    for i, r in enumerate(rows):
        ev[i] = r
    return ev


def test_event_changes_by_hand():
    clean = _ev([(1, 1, 10, 1), (2, 2, 20, 0), (2, 2, 30, 0)])
    poisoned = _ev([(1, 1, 10, 1), (2, 2, 20, 0), (0, 0, 15, 1), (0, 0, 16, 1), (3, 3, 17, 0)])
    d = M.event_changes(clean, poisoned, (4, 4, 2))
    # added: two ON at (0,0) and one OFF at (3,3); removed: the (2,2,t=30) event.
    assert d == {"events_added": 3, "events_removed": 1, "l0": 3, "l1": 4}
