"""``snnsec demo``: the product in one command, on the embedded ``ndigits`` data.

Trains a clean and a backdoored csnn (or reuses the ones cached in the user cache folder),
audits both, runs a small adversarial evaluation when :mod:`snnsec.attacks.adversarial` is
installed, and writes a report folder (default ``reports/demo``) with every figure.
"""

from __future__ import annotations

import html
import importlib.util
import json
import time
from dataclasses import dataclass
from pathlib import Path

from snnsec._io import atomic_write_text, cache_dir


@dataclass
class DemoConfig:
    # T=8 and 3 epochs instead of the training defaults (T=16, 10 epochs): the demo must
    # finish within 5 minutes on 2 cores including both trainings; ndigits is easy enough that
    # the models still reach high accuracy and the backdoor near-full ASR.
    T: int = 8
    epochs: int = 3
    trigger: str = "static"
    target: int = 3
    rate: float = 0.1
    seed: int = 0
    clean_samples: int = 50
    # Audit budget scaled to the demo's time budget (see snnsec.defenses.neural_cleanse).
    nc_epochs: int = 6
    margin_steps: int = 150
    adversarial_samples: int = 64
    adversarial_attacks: tuple[str, ...] = ("fgsm", "pgd")
    adversarial_eps: tuple[float, ...] = (0.05, 0.1, 0.2)

    def key(self) -> str:
        return f"demo-ndigits-T{self.T}-e{self.epochs}-{self.trigger}-t{self.target}-r{self.rate}-s{self.seed}"


def _cached(path: Path) -> bool:
    return (path / "model.json").is_file() and (path / "model.safetensors").is_file()


def ensure_models(cfg: DemoConfig, *, progress: bool = True, log=print, device: str = "cpu") -> dict[str, Path]:
    from snnsec import checkpoint
    from snnsec.attacks.backdoor.run import BackdoorConfig, run_backdoor
    from snnsec.train import TrainConfig, run_training

    root = cache_dir() / cfg.key()
    paths = {"clean": root / "clean", "backdoored": root / "backdoored"}
    if _cached(paths["clean"]):
        log(f"reusing the clean model cached in {paths['clean']}")
    else:
        log("training the clean csnn on ndigits ...")
        run_training(data="ndigits", model="csnn", config=TrainConfig(epochs=cfg.epochs, seed=cfg.seed), out=paths["clean"],
                     T=cfg.T, progress=progress, device=device)
    if _cached(paths["backdoored"]):
        log(f"reusing the backdoored model cached in {paths['backdoored']}")
    else:
        log(f"training the backdoored csnn ({cfg.trigger} trigger -> class {cfg.target}, {cfg.rate:.0%} poisoned) ...")
        bcfg = BackdoorConfig(dataset="ndigits", T=cfg.T, model="csnn", trigger=cfg.trigger, rate=cfg.rate, target=cfg.target,
                              epochs=cfg.epochs, seed=cfg.seed)
        res = run_backdoor(bcfg, progress=progress, device=device)
        checkpoint.save(paths["backdoored"], res.model, arch="csnn", arch_kwargs={}, spec=res.spec,
                        recipe={"train": {"epochs": cfg.epochs, "seed": cfg.seed}}, attack=res.attack_spec(),
                        metrics=res.metrics, seed=cfg.seed)
    return paths


def adversarial(model_path: Path, out: Path, cfg: DemoConfig, *, progress: bool, log=print,
                device: str = "cpu") -> dict | None:
    if importlib.util.find_spec("snnsec.attacks.adversarial") is None:
        log("snnsec.attacks.adversarial is not installed: skipping the adversarial evaluation")
        return None
    from snnsec import checkpoint
    from snnsec.attacks.adversarial import EvalConfig, evaluate
    from snnsec.runs.adversarial import save_evaluation
    from snnsec.audit import clean_samples

    model, meta = checkpoint.load(model_path, device=device)
    x, y, _ = clean_samples(meta, cfg.adversarial_samples, seed=cfg.seed)
    ecfg = EvalConfig(attacks=cfg.adversarial_attacks, eps=cfg.adversarial_eps, seed=cfg.seed, steps_check=False)
    ev = evaluate(model, x, y, ecfg, progress=progress)
    return save_evaluation(ev, out, dataset="ndigits", model="csnn", T=cfg.T, seed=cfg.seed, config=ecfg.to_dict(),
                           title="clean csnn on ndigits: accuracy under attack")


def run_demo(out="reports/demo", cfg: DemoConfig | None = None, *, progress: bool = True, log=print,
             device: str = "cpu") -> Path:
    from snnsec.audit import audit

    cfg = cfg or DemoConfig()
    out = Path(out)
    t0 = time.perf_counter()
    paths = ensure_models(cfg, progress=progress, log=log, device=device)
    t_models = time.perf_counter() - t0
    params = {"nc": {"epochs": cfg.nc_epochs}, "margin": {"steps": cfg.margin_steps}}
    audits = {}
    for name, path in paths.items():
        log(f"auditing the {name} model ...")
        audits[name] = audit(path, out=out / f"audit-{name}", n_clean=cfg.clean_samples, method_params=params,
                             seed=cfg.seed, progress=progress, device=device)
        r = audits[name]
        log(f"  {name}: {'BACKDOOR, target ' + str(r.target) if r.backdoored else 'no backdoor found'} "
            f"({r.info['seconds']:.0f} s)")
    adv = None
    try:
        log(f"adversarial evaluation of the clean model ({', '.join(cfg.adversarial_attacks)}) ...")
        adv = adversarial(paths["clean"], out / "adversarial", cfg, progress=progress, log=log, device=device)
    except ImportError as exc:
        log(f"skipping the adversarial evaluation: {exc}")
    seconds = time.perf_counter() - t0
    _index(out, cfg, paths, audits, adv, seconds, t_models)
    log(f"demo finished in {seconds:.0f} s; report: {out / 'index.html'}")
    return out


def _index(out: Path, cfg: DemoConfig, paths, audits, adv, seconds: float, t_models: float) -> None:
    truth = {"clean": (False, None), "backdoored": (True, cfg.target)}
    rows = []
    for name, r in audits.items():
        ok = (r.backdoored, r.target) == truth[name]
        rows.append((name, "BACKDOOR" if r.backdoored else "clean", "-" if r.target is None else str(r.target),
                     "yes" if ok else "NO", f"{r.info['seconds']:.0f} s", f"audit-{name}/report.html"))
    summary = {"config": cfg.__dict__, "models": {k: str(v) for k, v in paths.items()}, "seconds": seconds,
               "seconds_models": t_models,
               "audits": {n: {"backdoored": r.backdoored, "target": r.target, "seconds": r.info["seconds"]} for n, r in audits.items()},
               "adversarial": None if adv is None else {"clean_accuracy": adv.get("clean_accuracy"),
                                                        "robust_accuracy": adv.get("robust_accuracy")}}
    (out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    esc = html.escape
    body = ["<h1>snnsec demo</h1>",
            f"<p>csnn on ndigits (T={cfg.T}, {cfg.epochs} epochs); backdoor: {esc(cfg.trigger)} trigger, target class "
            f"{cfg.target}, {cfg.rate:.0%} poisoned. Total {seconds:.0f} s.</p>",
            "<table><tr><th>model</th><th>verdict</th><th>target</th><th>correct</th><th>time</th><th>report</th></tr>"]
    body += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r[:5]) + f"<td><a href='{esc(r[5])}'>{esc(r[5])}</a></td></tr>"
             for r in rows]
    body.append("</table>")
    if adv is not None:
        ra = adv.get("robust_accuracy", {})
        body.append(f"<h2>Adversarial robustness (clean model)</h2><p>clean accuracy {adv.get('clean_accuracy', float('nan')):.3f}; "
                    "robust accuracy " + ", ".join(f"eps {esc(str(e))}: {a:.3f}" for e, a in ra.items()) +
                    "</p><img src='adversarial/robustness.png' style='max-width:100%'>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>snnsec demo</title><style>body{font-family:sans-serif;"
            "max-width:60em;margin:2em auto}td,th{border:1px solid #ccc;padding:.3em .6em}table{border-collapse:collapse}"
            "</style></head><body>" + "\n".join(body) + "</body></html>\n")
    atomic_write_text(out / "index.html", page)
    md = ["# snnsec demo", "", f"Total {seconds:.0f} s.", "", "| model | verdict | target | correct | time | report |",
          "|---|---|---|---|---|---|"] + [f"| {' | '.join(r)} |" for r in rows]
    atomic_write_text(out / "index.md", "\n".join(md) + "\n")
