"""Outputs of a robustness evaluation: metrics.json, the robust-accuracy-vs-eps figure, result rows.

Every output carries ``reliable``: the figure's title says UNRELIABLE and lists the failed
checks, metrics.json has ``reliable: false`` and ``unreliable_reasons``, and every row's
``extra`` holds ``reliable`` (plus one ``check:NAME`` row per check and a ``reliable`` row).
"""

from __future__ import annotations

from pathlib import Path

from snnsec._io import atomic_write_json, atomic_write_with
from snnsec.attacks.adversarial.evaluate import AdversarialEvaluation, format_eps

__all__ = ["evaluation_rows", "plot_robustness", "save_evaluation"]


def plot_robustness(ev: AdversarialEvaluation, path: str | Path, title: str = "") -> Path:
    """Robust accuracy vs eps (x in units of 1/255): one curve per attack, the worst case in black."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    eps = [0.0] + [e for e in ev.config.eps if e > 0]
    xs = [e * 255 for e in eps]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for a in ev.attacks():
        ys = [ev.clean_accuracy] + [float(ev.robust_mask(e, a).float().mean()) for e in eps[1:]]
        ax.plot(xs, ys, marker="o", lw=1.2, ms=3, label=a)
    ys = [ev.clean_accuracy] + [ev.robust_accuracy[e] for e in eps[1:]]
    ax.plot(xs, ys, color="black", lw=2.4, marker="s", ms=4, label="worst case")
    if len(xs) > 2 and min(x for x in xs if x > 0) > 0:
        ax.set_xscale("symlog", linthresh=min(x for x in xs if x > 0))
    ax.set_xlabel("eps (L-inf, x/255)")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    failed = [r["check"] for r in ev.check_rows if r["passed"] is False]
    passed = sum(r["passed"] is True for r in ev.check_rows)
    head = f"{title}  n={ev.n}" if title else f"n={ev.n}"
    verdict = ("UNRELIABLE: failed " + ", ".join(sorted(set(failed)))) if failed else f"checklist passed ({passed} checks)"
    ax.set_title(f"{head}\n{verdict}", fontsize=9, color="red" if failed else "black")
    fig.tight_layout()
    out = atomic_write_with(path, lambda tmp: fig.savefig(tmp, dpi=120))
    plt.close(fig)
    return out


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
    for e in ev.config.eps:
        key = format_eps(e)
        rows += results.make_rows(**common, metrics={"robust_accuracy": ev.robust_accuracy[e],
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


def save_evaluation(ev: AdversarialEvaluation, out: str | Path, *, dataset: str, model: str, T: int | None,
                    seed: int | None, config: dict, store=None, append_rows: bool = True, title: str = "",
                    extra: dict | None = None) -> dict:
    """Write ``out/metrics.json`` and ``out/robustness.png`` and append rows to ``store``. Returns the metrics."""
    from snnsec import results

    out = Path(out)
    metrics = {**ev.to_dict(), "dataset": dataset, "model": model, "T": T, "seed": seed, "run_config": config,
               **(extra or {})}
    atomic_write_json(out / "metrics.json", metrics)
    plot_robustness(ev, out / "robustness.png", title=title or f"{model} on {dataset}")
    if not append_rows:
        return metrics
    rows = evaluation_rows(ev, dataset=dataset, model=model, T=T, seed=seed, config=config, extra=extra)
    results.Store(store if store is not None else results.default_store_path()).append(rows)
    return metrics
