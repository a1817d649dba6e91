"""Synthetic result rows for the report tests, one small set per figure.

The values are made up: the tests only check that each figure shows exactly the stored
values, so the rows need the documented shape, not true numbers.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd

from snnsec import results

VERSIONS = {"python": "3.11.2", "snnsec": "0.1.0", "torch": "2.13.0"}
_ids = itertools.count()


def row(metric: str, value: float, *, dataset="ndigits", model="csnn", T=8, attack=None, attack_params=None,
        defense=None, defense_params=None, seed=0, extra=None, run_id=None, config=None) -> dict:
    """One row as :func:`snnsec.results.make_rows` builds it (JSON columns still dicts)."""
    i = next(_ids)
    config = config if config is not None else {"kind": "synthetic", "seed": seed, "attack": attack, "defense": defense,
                                                "attack_params": attack_params, "defense_params": defense_params}
    (r,) = results.make_rows(run_id=run_id or f"run{i:04d}", dataset=dataset, model=model, T=T, seed=seed,
                             metrics={metric: value}, attack=attack, attack_params=attack_params, defense=defense,
                             defense_params=defense_params, config=config, extra=extra)
    # A fixed clock and versions make two builds of the same rows identical.
    r["time"] = f"2026-11-24T12:{i // 60 % 60:02d}:{i % 60:02d}+00:00"
    r["versions"] = dict(VERSIONS)
    return r


def backdoor_rows() -> list[dict]:
    out = []
    for trig, base in (("static", 0.5), ("moving", 0.3)):
        for rate in (0.01, 0.05, 0.1):
            for seed in (0, 1):
                rid = f"bd-{trig}-{rate}-{seed}"
                ap = {"trigger": trig, "rate": rate, "target": 0, "mode": "all-to-one"}
                asr = min(1.0, base + 4 * rate + 0.01 * seed)
                ca = 0.9 - rate - 0.02 * seed
                out += [row("attack_success_rate", asr, attack=f"backdoor:{trig}", attack_params=ap, seed=seed, run_id=rid),
                        row("clean_accuracy", ca, attack=f"backdoor:{trig}", attack_params=ap, seed=seed, run_id=rid),
                        row("ssim", 0.95, attack=f"backdoor:{trig}", attack_params=ap, seed=seed, run_id=rid)]
    return out


def gallery_rows(T=4, P=2, H=6, W=5) -> list[dict]:
    rng = np.random.default_rng(0)
    clean = (rng.random((T, P, H, W)) < 0.2).astype(float)
    out = []
    for trig in ("static", "moving"):
        pois = clean.copy()
        pois[:, :, :2, :2] = 1.0 if trig == "static" else 0.0
        if trig == "moving":
            for t in range(T):
                pois[t, 1, t % H, 0] = 1.0
        ap = {"trigger": trig, "rate": 0.1, "target": 0}
        rid = f"gal-{trig}"
        out += [row("gallery_clip", T, attack=f"backdoor:{trig}", attack_params=ap, run_id=rid, T=T,
                    extra={"variant": "clean", "sample": 3, "frames": clean.tolist()}),
                row("gallery_clip", T, attack=f"backdoor:{trig}", attack_params=ap, run_id=rid, T=T,
                    extra={"variant": "poisoned", "sample": 3, "frames": pois.tolist()})]
    return out


def adversarial_rows(unreliable_model: str | None = "resnet") -> list[dict]:
    """As snnsec.attacks.adversarial writes them: one run per model, attack "adversarial:<name>",
    the worst case as "adversarial:worst-case", clean accuracy under attack "adversarial"."""
    out = []
    labels = {0.0: "0", 2 / 255: "2/255", 4 / 255: "4/255", 8 / 255: "8/255"}
    for model in ("csnn", "resnet"):
        rid = f"adv-{model}"
        bad = model == unreliable_model
        extra = {"reliable": not bad, "unreliable_reasons": ["loss does not rise with eps"] if bad else [], "n_samples": 100}
        k = 2 if model == "resnet" else 1
        out.append(row("clean_accuracy", 0.9, model=model, attack="adversarial", run_id=rid, extra=extra,
                       attack_params={"eps": list(labels.values()), "attacks": ["fgsm", "pgd"]}))
        out.append(row("reliable", 0.0 if bad else 1.0, model=model, attack="adversarial", run_id=rid, extra=extra,
                       attack_params={"eps": list(labels.values()), "attacks": ["fgsm", "pgd"]}))
        for eps, lab in labels.items():
            for atk, drop in (("fgsm", 10.0), ("pgd", 15.0)):
                out.append(row("robust_accuracy", max(0.0, 0.9 - drop * eps * k), model=model, attack=f"adversarial:{atk}",
                               attack_params={"eps": eps, "eps_label": lab, "steps": 10}, run_id=rid, extra=extra))
            out.append(row("robust_accuracy", max(0.0, 0.9 - 18.0 * eps * k), model=model, attack="adversarial:worst-case",
                           attack_params={"eps": eps, "eps_label": lab, "attacks": ["fgsm", "pgd"]}, run_id=rid, extra=extra))
    return out


def defense_rows() -> list[dict]:
    out = []
    for defense in ("neural_cleanse", "fine_pruning", "strip"):
        for trig in ("static", "moving", "smart"):
            ap = {"trigger": trig, "rate": 0.1, "target": 0}
            for seed in (0, 1):
                rid = f"def-{defense}-{trig}-{seed}"
                out.append(row("attack_success_rate", 0.1 * (len(defense) % 5) + 0.05 * seed + 0.01 * len(trig),
                               attack=f"backdoor:{trig}", attack_params=ap, defense=defense, seed=seed, run_id=rid))
                out.append(row("auroc" if defense == "strip" else "detection_auroc", 0.5 + 0.04 * len(trig) + 0.01 * seed, attack=f"backdoor:{trig}",
                               attack_params=ap, defense=defense, seed=seed, run_id=rid))
    # Neural Cleanse's anomaly index, one style per producer convention.
    ap = {"trigger": "static", "rate": 0.1, "target": 0}
    for k in range(5):
        out.append(row("anomaly_index", [3.1, 0.4, 0.9, 0.2, 1.1][k], attack="backdoor:static", attack_params=ap,
                       defense="neural_cleanse", defense_params={"threshold": 2.0}, run_id="nc-1", extra={"class": k}))
    for k in range(5):
        out.append(row(f"anomaly_index_class_{k}", [0.3, 0.5, 0.6, 0.2, 0.8][k], model="resnet", attack="backdoor:moving",
                       attack_params={**ap, "trigger": "moving"}, defense="neural_cleanse", defense_params={"threshold": 2.0}, run_id="nc-2"))
    rng = np.random.default_rng(1)
    clean = rng.normal(2.0, 0.3, 40)
    trig = rng.normal(0.6, 0.2, 30)
    for i, v in enumerate(clean):
        out.append(row("strip_entropy", v, attack="backdoor:static", attack_params=ap, defense="strip", run_id="strip-1",
                       extra={"sample": i, "triggered": False}))
    for i, v in enumerate(trig):
        out.append(row("strip_entropy", v, attack="backdoor:static", attack_params=ap, defense="strip", run_id="strip-1",
                       extra={"sample": i, "triggered": True}))
    out.append(row("strip_threshold", 1.5, attack="backdoor:static", attack_params=ap, defense="strip", run_id="strip-1"))
    # The compact convention: one row per group holding every entropy.
    out.append(row("strip_entropy", float(np.mean(clean)), model="resnet", attack="backdoor:static", attack_params=ap,
                   defense="strip", run_id="strip-2", extra={"triggered": False, "entropies": clean[:10].tolist()}))
    out.append(row("strip_entropy", float(np.mean(trig)), model="resnet", attack="backdoor:static", attack_params=ap,
                   defense="strip", run_id="strip-2", extra={"triggered": True, "entropies": trig[:10].tolist()}))
    return out


def firing_rows() -> list[dict]:
    out = []
    ap = {"trigger": "static", "rate": 0.1, "target": 0}
    layers = ["conv1", "conv2", "fc1", "fc2"]
    for i, layer in enumerate(layers):
        for trig in (False, True):
            out.append(row("firing_rate", 0.1 + 0.05 * i + (0.08 if trig else 0), attack="backdoor:static", attack_params=ap,
                           run_id="fr-1", extra={"layer": layer, "layer_index": i, "triggered": trig}))
    for i, layer in enumerate(["sn1", "sn2"]):
        for trig in (False, True):
            out.append(row(f"firing_rate:{layer}", 0.2 + 0.1 * i + (0.1 if trig else 0), model="resnet",
                           attack="backdoor:moving", attack_params={**ap, "trigger": "moving"}, run_id="fr-2",
                           extra={"triggered": trig}))
    return out


def hardening_rows() -> list[dict]:
    """Both producer conventions: ``accuracy_at_t<t>`` metrics and ``accuracy_at_T`` + extra.T_infer."""
    out = []
    for recipe, drop in (("ce", 0.08), ("tcl", 0.03), ("stcl", 0.02)):
        for t_inf in (1, 2, 4, 8):
            for seed in (0, 1):
                acc = 0.9 - drop * (8 - t_inf) - 0.01 * seed
                if recipe == "stcl":
                    out.append(row("accuracy_at_T", acc, defense=f"hardening:{recipe}", defense_params={"recipe": recipe},
                                   seed=seed, run_id=f"hard-{recipe}-{seed}", extra={"T_infer": t_inf}))
                else:
                    out.append(row(f"accuracy_at_t{t_inf}", acc, defense=f"hardening:{recipe}",
                                   defense_params={"recipe": {"name": recipe, "alpha": 0.5}}, seed=seed,
                                   run_id=f"hard-{recipe}-{seed}"))
        out.append(row("clean_accuracy", 0.9 - 0.01, defense=f"hardening:{recipe}", defense_params={"recipe": recipe},
                       run_id=f"hard-{recipe}-0"))
    return out


def audit_zoo_rows() -> list[dict]:
    """``audit`` bench cells of two architectures: two clean models and two backdoors each, with the
    ``detector_score`` rows the detector ROC is drawn from (one detector names a wrong class once)."""
    out = []
    for model in ("csnn", "resnet"):
        for i, planted in enumerate((None, None, 1, 3)):
            rid = f"zoo-{model}-{i}"
            for name, score in (("raw_margin", 0.5 + 2 * (planted is not None) + 0.1 * i),
                                ("nc", 1.0 + 1.5 * (planted is not None))):
                cls = 0 if planted is None else (planted if (name, i) != ("nc", 3) else 4)
                out.append(row("detector_score", score, dataset="nmnist-resplit", model=model, run_id=rid, seed=i,
                               defense=f"detector:{name}", extra={"class": cls, "planted_target": planted,
                                                                   "detector": name}))
    return out


def leaderboard_rows() -> list[dict]:
    """``leaderboard`` bench cells of two variants over two seeds; the binary one's second seed
    failed its integrity checklist."""
    out = []
    for variant, energy, base in (("csnn", 1.1e6, 0.95), ("csnn+binary", 0.9e6, 0.9)):
        for seed in (0, 1):
            rid = f"lb-{variant}-{seed}"
            metrics = {"clean_accuracy": base - 0.01 * seed, "robust_accuracy@4/255": base - 0.2,
                       "robust_accuracy@16/255": base - 0.5, "reliable": float(not (variant == "csnn+binary" and seed)),
                       "asr:static": 0.99, "audit_correct:static": 1.0, "energy_pj": energy + 1e4 * seed,
                       "sops": energy / 0.9, "spike_driven": 1.0, "attack_forwards_per_sample": 1000.0}
            for m, v in metrics.items():
                out.append(row(m, v, dataset="nmnist-resplit", model="csnn", attack="leaderboard", seed=seed, run_id=rid,
                               attack_params={"attacks": "pgd,apgd", "eps": ["4/255", "16/255"]},
                               extra={"variant": variant, "neuron": "LIFNode"}))
    return out


def all_rows() -> list[dict]:
    return (backdoor_rows() + gallery_rows() + adversarial_rows() + defense_rows() + firing_rows() + hardening_rows()
            + audit_zoo_rows() + leaderboard_rows())


def frame(rows: list[dict]) -> pd.DataFrame:
    """Rows as :func:`snnsec.results.load` returns them: JSON columns as text."""
    df = pd.DataFrame(rows, columns=list(results.COLUMNS))
    for c in results.JSON_COLUMNS:
        df[c] = [json.dumps(v, sort_keys=True) for v in df[c]]
    return df


def stored(rows: list[dict], path) -> pd.DataFrame:
    """Write rows through the results store and read them back."""
    results.Store(path).append(rows)
    return results.load(path)
