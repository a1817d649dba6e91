"""The ``defense`` and ``audit`` bench kinds.

``defense``: one defense against one backdoored model.

A cell is a backdoor cell (``dataset``, ``root``, ``model``, ``T``, ``trigger``, ``target``,
``rate``, ``epochs``, ``seed``, see :class:`snnsec.attacks.backdoor.run.BackdoorConfig`) plus
``defense`` (a name from :func:`snnsec.defenses.names`) and optional ``defense_params``
(a table). The backdoored model is trained once per backdoor config and cached on disk
(``$SNNSEC_CKPT_CACHE``, default ``reports/checkpoints``), so every defense of a spec
inspects the same model.

Metrics by defense kind:
- model inspection: ``flagged``, ``target_correct``, ``statistic``, ``seconds``; Neural
  Cleanse adds ``anomaly_index_class_<k>`` rows (:meth:`snnsec.defenses.base.Detection.row_groups`);
- input inspection (STRIP): ``tpr``, ``fpr``, ``auroc`` on the clean test split plus its
  triggered non-target samples (threshold from a held-out clean half), and the entropies of
  both groups as ``strip_entropy`` rows (:meth:`snnsec.defenses.strip.Strip.row_groups`);
- dataset inspection (AC, SS): ``tpr``, ``fpr``, ``auroc`` against the poisoned indices;
- repair: ``ca_before``, ``asr_before``, ``ca``, ``asr``, ``ra``, ``der``.

``audit``: one model, clean or backdoored, trained once and audited.

A cell is a backdoor cell (``dataset``, ``root``, ``model``, ``T``, ``trigger``, ``target``,
``rate``, ``epochs``, ``seed`` and trigger parameters, see
:class:`snnsec.attacks.backdoor.run.BackdoorConfig`) plus the audit's own keys: ``case`` (a
label for tables), ``clean_samples`` (default 100), ``methods`` and ``method_params``. A clean
model is a cell with ``rate = 0``: the same training with no sample changed. The model is cached
with the defense bench's models (:func:`cached_backdoor_checkpoint`)
and audited by :func:`snnsec.audit.audit` itself, so a zoo measures exactly what users run.

Metrics: ``backdoored``, ``correct`` (clean verdict on a clean model; backdoor verdict with the
planted target on a backdoored one), the model's ``clean_accuracy`` and ``attack_success_rate``,
and ``seconds`` (the audit alone); each method adds its rows (:func:`snnsec.audit.method_groups`),
with the per-class scores :mod:`snnsec.audit.decision` re-decides from, and each detector statistic
its ``detector_score`` row (:func:`snnsec.audit.decision.score_groups`), which the report's ROC reads.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

# Keys of a defense cell that are not part of the backdoor experiment (the rest all are,
# trigger parameters included, as in a ``backdoor`` cell).
_DEFENSE_KEYS = ("kind", "defense", "defense_params", "clean_samples")


def cached_backdoor_checkpoint(cell: dict, *, progress: bool = True, device: str = "cpu") -> Path:
    """The checkpoint folder of the cell's backdoor config (keys outside it ignored), trained
    once (on ``device``) and cached under ``$SNNSEC_CKPT_CACHE`` (default ``reports/checkpoints``)."""
    from snnsec.attacks.backdoor.run import BackdoorConfig, run_backdoor
    from snnsec.results import config_hash
    from snnsec.runs.backdoor import save_backdoor_checkpoint

    bcell = _backdoor_keys(cell)
    key = config_hash({"kind": "backdoor-model", **bcell})[:16]
    cache = Path(os.environ.get("SNNSEC_CKPT_CACHE", "reports/checkpoints")) / f"backdoor-{key}"
    if not (cache / "model.json").is_file():
        save_backdoor_checkpoint(run_backdoor(BackdoorConfig.from_cell(bcell), progress=progress, device=device), cache,
                                 recipe={"backdoor": bcell})
    return cache


def _backdoor_keys(cell: dict) -> dict:
    return {k: v for k, v in cell.items() if k not in _DEFENSE_KEYS}


def backdoored_model(cell: dict, *, progress: bool = True, device: str = "cpu"):
    """``(model, trigger, meta)`` for the cell's backdoor config, trained once and cached; the model on ``device``."""
    from snnsec import checkpoint
    from snnsec.attacks.backdoor.triggers import trigger_from_spec

    cache = cached_backdoor_checkpoint(cell, progress=progress, device=device)
    model, meta = checkpoint.load(cache, device=device)
    return model, trigger_from_spec(meta["attack"]["trigger"], base_dir=cache), meta


def defense_cell(cell: dict, *, progress: bool = True) -> dict:
    import numpy as np
    import torch

    from snnsec import checkpoint, defenses, metrics
    from snnsec.attacks.backdoor.run import BackdoorConfig
    from snnsec.data import frames_and_labels
    from snnsec.devices import split_cell
    from snnsec.harness import predict

    cell, device = split_cell(cell)
    name = cell.get("defense")
    if not name:
        raise ValueError(f"defense cell: missing field 'defense' (one of {defenses.names()})")
    params = dict(cell.get("defense_params") or {})
    from dataclasses import fields

    if "seed" in {f.name for f in fields(defenses.get(name))}:
        params.setdefault("seed", int(cell.get("seed", 0)))
    det = defenses.make(name, **params)
    model, trigger, meta = backdoored_model(cell, progress=progress, device=device)
    attack = meta["attack"]
    target = int(attack["target"])
    # the data framed as the model was trained (slicing, binarisation, T), whatever the cell's preset
    test_ds, spec = checkpoint.matching_dataset(meta, data=cell["dataset"], root=cell.get("root"), source="the cached backdoor checkpoint")
    x_test, y_test = frames_and_labels(test_ds)
    nontarget = y_test != target
    x_trig = trigger(x_test)
    t0 = time.perf_counter()
    if det.kind == "model":
        n = cell.get("clean_samples", 100)
        if not isinstance(n, int) or isinstance(n, bool) or n < model.num_classes:
            raise ValueError(f"defense cell: 'clean_samples' must be an integer >= the number of classes "
                             f"({model.num_classes}), got {n!r}")
        # a data-free method is measured data-free, as it would be run without data
        result = det(model, x_test[:n] if det.needs_clean_data else None)
        m, truth = result.metrics(target), None
    elif det.kind == "input":
        half = torch.arange(len(x_test)) % 2 == 0
        det.fit(model, x_test[half], x_test[~half])
        test = ~half & nontarget
        result = det(torch.cat([x_test[~half], x_trig[test]]))
        truth = np.r_[np.zeros(int((~half).sum())), np.ones(int(test.sum()))]
        m = result.metrics(truth)
    else:
        train_ds, _ = checkpoint.matching_dataset(meta, data=cell["dataset"], root=cell.get("root"), split="train",
                                                  source="the cached backdoor checkpoint")
        x_train, y_train = frames_and_labels(train_ds)
        # The poisoned training set as the attack made it (rate, target, mode, labels, injection);
        # the dynamic attack poisons on the fly, so its dataset view uses the same rate and seed.
        pds = BackdoorConfig.from_cell(_backdoor_keys(cell)).poison(train_ds, trigger, spec.num_classes)
        xp, yp = pds.batch_transform(x_train, y_train, torch.arange(len(x_train)))
        if det.kind == "dataset":
            truth = pds.is_poisoned.numpy()
            result = det(model, xp, yp)
            m = result.metrics(truth)
        else:
            ca0 = metrics.clean_accuracy(predict(model, x_test, batch_size=64), y_test)
            asr0 = metrics.attack_success_rate(predict(model, x_trig, batch_size=64), y_test, target)
            # the same trusted path as loading: the cached metadata's arch imports nothing
            given = checkpoint.build_model(meta).to(device) if det.needs_fresh_model else model
            if det.needs_training_set:
                x_def, y_def = xp, yp
            else:
                # The defender's clean data: 5% of the training set that was not poisoned (BackdoorBench's ratio).
                clean = torch.nonzero(~pds.is_poisoned).flatten()
                g = torch.Generator().manual_seed(int(cell.get("seed", 0)))
                sub = clean[torch.randperm(len(clean), generator=g)[: max(10, len(x_train) // 20)]]
                x_def, y_def = x_train[sub], y_train[sub]
            result = det(given, x_def, y_def)
            truth = None
            pred_c, pred_t = predict(result.model, x_test, batch_size=64), predict(result.model, x_trig, batch_size=64)
            ca, asr = metrics.clean_accuracy(pred_c, y_test), metrics.attack_success_rate(pred_t, y_test, target)
            m = {"ca_before": ca0, "asr_before": asr0, "ca": ca, "asr": asr,
                 "ra": metrics.backdoor_robust_accuracy(pred_t, y_test, target),
                 "der": metrics.defense_effectiveness_rating(asr0, asr, ca0, ca)}
    groups = det.row_groups(result, truth)
    m["seconds"] = time.perf_counter() - t0
    return {"metrics": m, "attack": f"backdoor:{cell.get('trigger', 'static')}",
            "attack_params": {k: cell[k] for k in ("trigger", "target", "rate") if k in cell},
            "defense": name, "defense_params": det.params(), "groups": groups}


_AUDIT_KEYS = ("kind", "case", "clean_samples", "methods", "method_params")


def planted_target(cell: dict) -> int | None:
    """The class a cell's model is backdoored toward, or None for a clean (rate 0) model."""
    from snnsec.attacks.backdoor.triggers import trigger_class

    # a learned trigger (dynamic) poisons every batch, so its rate does not say whether one was planted
    if not trigger_class(cell.get("trigger", "static")).learned and float(cell.get("rate", 0.1)) == 0.0:
        return None
    return int(cell.get("target", 0))


def audit_cell(cell: dict, *, progress: bool = True) -> dict:
    from snnsec.audit import DEFAULT_METHODS, audit, method_groups
    from snnsec.audit.decision import record_scores, score_groups
    from snnsec.devices import split_cell

    cell, device = split_cell(cell)
    bcell = {k: v for k, v in cell.items() if k not in _AUDIT_KEYS}
    ckpt = cached_backdoor_checkpoint(bcell, progress=progress, device=device)
    result = audit(ckpt, data=cell["dataset"], root=cell.get("root"), n_clean=int(cell.get("clean_samples", 100)),
                   methods=cell.get("methods", DEFAULT_METHODS), method_params=cell.get("method_params"),
                   seed=int(cell.get("seed", 0)), progress=progress, device=device)
    truth = planted_target(cell)
    groups = method_groups(result)
    correct = (not result.backdoored) if truth is None else (result.backdoored and result.target == truth)
    model_metrics = {k: float(v) for k, v in (result.meta.get("metrics") or {}).items()
                     if k in ("clean_accuracy", "attack_success_rate")}
    if truth is None:
        model_metrics.pop("attack_success_rate", None)  # no trigger was planted: there is no ASR to report
    trigger = {k: v for k, v in bcell.items() if k not in ("dataset", "root", "model", "T", "epochs", "batch_size", "lr",
                                                           "seed")}
    return {"metrics": {"backdoored": float(result.backdoored), "correct": float(correct),
                        "seconds": float(result.info["seconds"]), **model_metrics},
            "attack": None if truth is None else f"backdoor:{cell.get('trigger')}",
            "attack_params": None if truth is None else trigger,
            "defense": "audit", "defense_params": {"methods": list(result.info["methods"])},
            "extra": {"case": cell.get("case"), "planted_target": truth, "target": result.target,
                      "checkpoint": str(ckpt)},
            "groups": groups + score_groups(record_scores(groups), truth)}

