"""Neural Cleanse: the cost schedule against a transcription of the original's bookkeeping, and
the batched run against the per-class loop when labels stop early."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from defense_helpers import synthetic, train_tiny
from snnsec.defenses.neural_cleanse import NeuralCleanse, _Schedule


def _original(accs, regs, *, init_cost, patience, mult, thr, es_thr, es_patience, reset_to_zero):
    """bolunwang/backdoor ``Visualizer.visualize``'s per-epoch bookkeeping, line by line, for one
    label: the cost used in each epoch, which epochs saved a new best mask, epochs run."""
    cost = 0.0 if reset_to_zero else init_cost
    reg_best = math.inf
    set_n = up_n = down_n = 0
    up_flag = down_flag = False
    es_n, es_best = 0, math.inf
    costs, saved = [], []
    for step, (acc, reg) in enumerate(zip(accs, regs)):
        costs.append(cost)
        saved.append(acc >= thr and reg < reg_best)
        if saved[-1]:
            reg_best = reg
        if reg_best < math.inf:
            es_n = es_n + 1 if reg_best >= es_thr * es_best else 0
        es_best = min(reg_best, es_best)
        if down_flag and up_flag and es_n >= es_patience:
            return costs, saved, step + 1
        if cost == 0 and acc >= thr:
            set_n += 1
            if set_n >= patience:
                cost = init_cost
                up_n = down_n = 0
                up_flag = down_flag = False
        else:
            set_n = 0
        if acc >= thr:
            up_n, down_n = up_n + 1, 0
        else:
            up_n, down_n = 0, down_n + 1
        if up_n >= patience:
            up_n = 0
            cost *= mult
            up_flag = True
        elif down_n >= patience:
            down_n = 0
            cost /= mult ** 1.5
            down_flag = True
    return costs, saved, len(accs)


@pytest.mark.parametrize("reset_to_zero", [True, False])
def test_schedule_follows_the_original_label_by_label(reset_to_zero):
    nc = NeuralCleanse(patience=2, early_stop_patience=3, reset_cost_to_zero=reset_to_zero)
    rng = np.random.default_rng(0)
    G, E = 6, 60
    # success runs long enough to move the cost both ways; norms drifting down, then flat
    accs = np.repeat(rng.random((G, E // 3)) < 0.6, 3, axis=1).astype(float) * 0.02 + 0.98
    regs = np.maximum(100 * np.exp(-np.arange(E) / 10) + rng.normal(0, 2, (G, E)), 5.0)
    s = _Schedule(G, nc)
    costs, saved, ran = [[] for _ in range(G)], [[] for _ in range(G)], [0] * G
    for e in range(E):
        live = (~s.done).numpy()
        before = s.cost.clone()
        save = s.update(torch.tensor(accs[:, e]), torch.tensor(regs[:, e]))
        for i in np.flatnonzero(live):
            costs[i].append(float(before[i]))
            saved[i].append(bool(save[i]))
            ran[i] += 1
        assert not bool(save[~torch.from_numpy(live)].any())
    stopped = 0
    for i in range(G):
        want = _original(accs[i], regs[i], init_cost=nc.init_cost, patience=2, mult=2.0, thr=0.99, es_thr=1.0,
                         es_patience=3, reset_to_zero=reset_to_zero)
        assert costs[i] == pytest.approx(want[0]) and saved[i] == want[1] and ran[i] == want[2]
        stopped += ran[i] < E
    assert stopped >= 1 and len(set(map(tuple, costs))) > 1  # the case is not trivial


@pytest.fixture(scope="module")
def planted():
    x, y = synthetic(n_per_class=24, seed=0)
    return train_tiny(x, y, seed=0, poison_target=2)[0], synthetic(n_per_class=8, seed=5)[0]


def test_batched_equals_loop_when_labels_stop_at_different_epochs(planted):
    model, x = planted
    kw = dict(epochs=14, batches_per_epoch=2, batch_size=12, patience=1, early_stop_patience=2)
    a = NeuralCleanse(batched=True, **kw)(model, x, classes=[0, 2, 5])
    b = NeuralCleanse(batched=False, **kw)(model, x, classes=[0, 2, 5])
    assert a.evidence["epochs_run"] == b.evidence["epochs_run"]
    assert min(a.evidence["epochs_run"]) < 14  # some label stopped early and left the batch
    assert np.allclose(a.evidence["l1_norms"], b.evidence["l1_norms"], rtol=1e-3)
    assert torch.allclose(a.artifacts["masks"], b.artifacts["masks"], atol=1e-3)
    for ha, hb in zip(a.evidence["history"], b.evidence["history"]):
        assert ha["cost"] == pytest.approx(hb["cost"]) and len(ha["l1"]) == len(hb["l1"])


def test_norm_is_the_smallest_mask_that_reached_the_threshold(planted):
    model, x = planted
    d = NeuralCleanse(epochs=8, batches_per_epoch=2, batch_size=12)(model, x, classes=[2, 3])
    for k, h in enumerate(d.evidence["history"]):
        ok = [l1 for l1, acc in zip(h["l1"], h["acc"]) if acc >= 0.99]
        assert d.evidence["reached"][k] == bool(ok)
        if ok:
            assert d.evidence["l1_norms"][k] == pytest.approx(min(ok))
    # the static mask is counted over H x W once: at most 12 x 12
    assert max(d.evidence["l1_norms"]) <= 144
    assert d.artifacts["masks"].shape == (2, 1, 12, 12)
