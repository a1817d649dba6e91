"""``snnsec attack adversarial CKPT --data ... --attacks ... --eps ... --out DIR``: robustness evaluation."""

from __future__ import annotations

import argparse
from pathlib import Path

from snnsec.cli import CLIError, add_checkpoint_input, add_device_option, add_output_checks, positive_int
from snnsec.cli.attack import attack_subparsers


def register(sub) -> None:
    from snnsec.attacks.catalog import ALIASES, attack_names, gradient_names

    p = attack_subparsers(sub).add_parser(
        "adversarial",
        help="measure adversarial robustness (robust accuracy vs eps, with an integrity checklist)",
        description="Attack a checkpoint on a test subset and report clean accuracy, robust accuracy per attack and "
        "the per-sample worst case at each eps, attack success on initially correct samples, perturbation norms, "
        "time and forward/backward counts. An automatic checklist (eps=0, monotonicity, PGD<=FGSM, large eps, "
        "Square vs white-box, constraints, non-zero gradients, repeatable forwards) marks the run unreliable if "
        "any check fails. Writes OUT/metrics.json and OUT/robustness.png and appends rows to the store.",
    )
    add_checkpoint_input(p)
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--attacks", default="pgd,apgd,square",
                   help=f"comma-separated attacks ({', '.join(attack_names())}, spikeflip) or an alias "
                   f"({', '.join(sorted(ALIASES))}, autoattack); default pgd,apgd,square")
    p.add_argument("--eps", default="1/255,2/255,4/255,8/255", help="comma-separated L-inf radii, e.g. 1/255,8/255")
    p.add_argument("--surrogates", default=None,
                   help="comma-separated attack-time gradient estimators for white-box attacks, per-sample worst case "
                   f"({', '.join(gradient_names())}; surrogates take ':alpha', triangle/rect ':width'), or 'sweep' "
                   "for the default sweep; default: the model's own")
    p.add_argument("--order", default="attack", choices=["attack", "estimator"],
                   help="cascade order of white-box attacks: each attack through every estimator first (default), "
                   "or every attack through one estimator first (metrics.json's robust_accuracy_cumulative then "
                   "gives each estimator's gain over those before it)")
    p.add_argument("--n-samples", type=int, default=200, help="random test subset size (default 200; seeded)")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fast", action="store_true", help="reduced steps/queries (smoke tests only, not for reporting)")
    p.add_argument("--queries", type=int, default=None,
                   help="Square queries (also inside AutoAttack); default 5,000 as the original")
    p.add_argument("--eot", type=int, default=1, help="draws per forward for stochastic encoders (default 1)")
    p.add_argument("--flip-budget", type=int, default=2000, help="spikeflip: max events flipped per sample")
    p.add_argument("--flip-step", type=int, default=20, help="spikeflip: events flipped per iteration")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--store", default=None, help="results store (default: $SNNSEC_STORE or reports/results.sqlite)")
    p.add_argument("--no-progress", action="store_true")
    add_output_checks(p, "adversarial")
    add_device_option(p)
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    from snnsec.attacks.adversarial.evaluate import EvalConfig
    from snnsec.attacks.adversarial.gradients import DEFAULT_SWEEP

    grads = args.surrogates or None
    if grads and grads.strip() == "sweep":
        grads = DEFAULT_SWEEP
    try:
        return EvalConfig(attacks=args.attacks, eps=args.eps,
                          gradients=grads, fast=args.fast, seed=args.seed, eot=args.eot, batch_size=args.batch_size,
                          flip_budget=args.flip_budget, flip_step=args.flip_step, queries=args.queries,
                          order=args.order)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from snnsec.attacks.adversarial.evaluate import format_eps
    from snnsec.runs.adversarial import run_checkpoint

    config = config_from_args(args)
    ev, _ = run_checkpoint(args.checkpoint, data=args.data, root=args.root, split=args.split, n_samples=args.n_samples,
                           config=config, out=args.out, store=args.store, progress=not args.no_progress,
                           arch=args.arch, device=args.device)
    curve = ", ".join(f"{format_eps(e)}: {a:.3f}" for e, a in ev.robust_accuracy.items())
    print(f"n={ev.n} clean_accuracy={ev.clean_accuracy:.4f} "
          + (f"robust_accuracy (worst case) {curve}" if curve else "no eps-bounded attack run"))
    if ev.flips is not None:
        f = ev.flips
        print(f"spike flips: median {f['median_flips']:g} flipped events per sample (median events per sample "
              f"{f['median_events']:g}); {f['flips_for_5pct']} flips bring robust accuracy to 5%")
    print("reliable" if ev.reliable else "UNRELIABLE: " + "; ".join(ev.unreliable_reasons()))
    print(f"-> {args.out}")
    return 0
