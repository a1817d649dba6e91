"""A robustness evaluation as result rows (:mod:`snnsec.runs.adversarial` writes them with
metrics.json and the robust-accuracy-vs-eps figure, which ``snnsec report`` redraws from them).

Every output carries ``reliable``: the figure's title says UNRELIABLE and rings the points of
the run, metrics.json has ``reliable: false`` and ``unreliable_reasons``, and every row's
``extra`` holds ``reliable`` and ``unreliable_reasons`` (plus one ``check:NAME`` row per check
and a ``reliable`` row).
"""

from __future__ import annotations

from snnsec.attacks.adversarial.evaluate import AdversarialEvaluation, format_eps

__all__ = ["evaluation_rows"]


def evaluation_rows(ev: AdversarialEvaluation, *, dataset: str, model: str, T: int | None, seed: int | None,
                    config: dict, extra: dict | None = None) -> list[dict]:
    """Tidy result rows: clean accuracy, worst case and per-attack metrics per eps, checks, flips."""
    from snnsec import results

    run_id = results.new_run_id()
    base_extra = {"reliable": ev.reliable, "unreliable_reasons": ev.unreliable_reasons(), "n_samples": ev.n,
                  **(extra or {})}
    common = dict(run_id=run_id, dataset=dataset, model=model, T=T, seed=seed, config=config)
    rows = results.make_rows(**common, metrics={"clean_accuracy": ev.clean_accuracy, "reliable": float(ev.reliable),
                                                "seconds": ev.seconds},
                             attack="adversarial", attack_params=ev.config.to_dict(), extra=base_extra)
    costs = ev.costs()
    norms = ev.norms()
    for e, worst in ev.robust_accuracy.items():
        key = format_eps(e)
        rows += results.make_rows(**common, metrics={"robust_accuracy": worst,
                                                     "attack_success_rate": ev.success_rate(e)},
                                  attack="adversarial:worst-case", attack_params={"eps": e, "eps_label": key,
                                                                                  "attacks": ev.attacks()},
                                  extra=base_extra)
        for a in ev.attacks():
            params = next(r.params for r in ev.runs if r.attack == a)
            m = {"robust_accuracy": float(ev.robust_mask(e, a).float().mean()), "attack_success_rate": ev.success_rate(e, a),
                 **{f"mean_{k}": v for k, v in norms[a][key].items()}}
            if e == ev.config.eps[-1]:  # costs once per attack, on its last eps row
                m.update({k: float(v) for k, v in costs[a].items()})
            p = {k: v for k, v in params.items() if k != "gradient"}
            p.update({"eps": e, "eps_label": key, "gradients": sorted({r.gradient for r in ev.runs if r.attack == a})})
            rows += results.make_rows(**common, metrics=m, attack=f"adversarial:{a}", attack_params=p, extra=base_extra)
    if ev.check_rows:
        for i, r in enumerate(ev.check_rows):
            if r["passed"] is None:
                continue
            rows += results.make_rows(**common, metrics={f"check:{r['check']}": float(r["passed"]),
                                                         f"check:{r['check']}:value": r["value"]},
                                      attack="adversarial:check", attack_params={"index": i, **{k: v for k, v in r.items()
                                                                                              if k not in ("passed", "value")}},
                                      extra=base_extra)
    if ev.flips is not None:
        f = ev.flips
        rows += results.make_rows(**common, metrics={k: float("nan") if f[k] is None else f[k] for k in ("success_rate", "robust_accuracy_at_budget",
                                                                        "median_flips", "mean_flips", "flips_for_5pct",
                                                                        "median_events", "mean_events")},
                                  attack="adversarial:spikeflip", attack_params={"budget": f["budget"], "per_step": f["per_step"],
                                                                                 "gradients": f["gradients"]},
                                  extra=base_extra)
    return rows
