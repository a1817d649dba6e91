"""``snnsec attack backdoor ...``: train a poisoned model and measure the backdoor.

Other attack families add themselves under ``snnsec attack`` from their own module::

    from snnsec.cli.attack import attack_subparsers

    def register(sub):
        p = attack_subparsers(sub).add_parser("adversarial", help=...)
        ...
        p.set_defaults(func=run)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from snnsec.attacks.catalog import TRIGGER_NAMES
from snnsec.cli import add_device_option, add_output_checks, fraction, key_values, positive_int
from snnsec.data.spec import SLICINGS

_ATTACK_SUBPARSERS = "_snnsec_attack_subparsers"


def attack_subparsers(sub):
    """The ``snnsec attack`` sub-subparsers, created on first call and shared after that."""
    existing = getattr(sub, _ATTACK_SUBPARSERS, None)
    if existing is not None:
        return existing
    p = sub.add_parser("attack", help="run an attack on a spiking classifier", description="Run an attack on a spiking classifier.")
    attack_sub = p.add_subparsers(dest="attack", metavar="ATTACK")
    attack_sub.required = True
    setattr(sub, _ATTACK_SUBPARSERS, attack_sub)
    return attack_sub


# CLI option -> trigger parameter; only options the user gives are passed, so the trigger
# rejects one that does not apply to it (e.g. --position for flash) with a clear error.
_TRIGGER_OPTS = ("size", "polarity", "position", "direction", "steps", "grid", "region_choice", "polarity_choice",
                 "step", "counting", "start", "length", "on", "gap")


def register(sub) -> None:
    p = attack_subparsers(sub).add_parser(
        "backdoor",
        help="train a backdoored (poisoned) model and measure CA, ASR and stealth",
        description="Poison the training set with a trigger, train, and measure clean accuracy, "
        "attack success rate (on non-target test samples) and SSIM. Writes model.safetensors, "
        "model.json (with the attack spec), metrics.json and trigger.png to --out.",
    )
    d = p.add_argument_group("data and model")
    d.add_argument("--data", required=True, help="dataset name (ndigits, nmnist, dvsgesture, ...)")
    d.add_argument("--root", default=None, help="dataset folder (not needed for ndigits)")
    d.add_argument("--T", type=positive_int, default=None, help="time steps (default 16, as Sneaky Spikes)")
    d.add_argument("--slicing", default=None, choices=SLICINGS, help="how events become frames (default events; "
                   "the reference preset: number)")
    d.add_argument("--counts", action="store_true", help="feed per-pixel event counts instead of binary frames "
                   "(the reference preset does)")
    d.add_argument("--model", default="csnn", help="architecture name (see `snnsec models`)")
    d.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE", help="architecture keyword (JSON value), repeatable")
    t = p.add_argument_group("trigger")
    t.add_argument("--trigger", required=True, choices=TRIGGER_NAMES)
    t.add_argument("--size", type=float, help="square side as a fraction of sensor width (default 0.1)")
    t.add_argument("--polarity", choices=["on", "off", "both", "erase", "auto"], help="default: on (flash: both, smart: auto = measured)")
    t.add_argument("--position", choices=["top-left", "top-right", "bottom-left", "bottom-right", "middle", "random"])
    t.add_argument("--direction", choices=["horizontal", "vertical", "diagonal"], help="moving: path direction")
    t.add_argument("--steps", type=int, help="moving: positions along the path (default 3)")
    t.add_argument("--grid", type=int, help="smart: regions per side (default 3)")
    t.add_argument("--region-choice", dest="region_choice", choices=["most", "least"], help="smart: most or least active region")
    t.add_argument("--polarity-choice", dest="polarity_choice", choices=["most", "least"], help="smart: most or least frequent polarity pattern")
    t.add_argument("--step", type=int, help="smart: random-walk step in px (default 2)")
    t.add_argument("--start", type=int, help="flash/framed/strobe: first frame")
    t.add_argument("--length", type=int, help="flash/framed: number of frames (default 3); strobe: frames in which bursts start (default: all)")
    t.add_argument("--counting", choices=["reference", "pixels"], help="smart: how polarity patterns are counted (default reference)")
    t.add_argument("--on", type=int, help="strobe: frames per burst (default 1)")
    t.add_argument("--gap", type=int, help="strobe: frames off between bursts (default 1)")
    t.add_argument("--gamma", type=float, default=0.01, help="dynamic: L-inf bound of the perturbation (default 0.01)")
    t.add_argument("--alpha", type=float, default=0.5, help="dynamic: clean vs backdoor loss weight (default 0.5)")
    t.add_argument("--inject", choices=["frames", "events"], default="frames", help="apply the trigger to frames or insert it as events")
    a = p.add_argument_group("poisoning and training")
    a.add_argument("--rate", type=fraction, default=0.1, help="fraction of training samples poisoned (default 0.1)")
    a.add_argument("--target", type=int, default=0, help="target label (default 0)")
    a.add_argument("--mode", choices=["all-to-one", "all-to-all"], default="all-to-one")
    a.add_argument("--label-mode", dest="label_mode", choices=["dirty", "clean"], default="dirty")
    a.add_argument("--exclude-target", dest="exclude_target", action="store_true",
                   help="dirty-label: poison only samples of other classes (Flashy Backdoor's choice)")
    a.add_argument("--epochs", type=positive_int, default=None, help="default 10")
    a.add_argument("--batch-size", type=positive_int, default=None, help="default 32 (the reference preset: 16)")
    a.add_argument("--lr", type=float, default=None, help="default 1e-3")
    a.add_argument("--loss", choices=["ce", "mse-rate"], default=None,
                   help="default ce (the reference preset: mse-rate, MSE between firing rate and one-hot label)")
    a.add_argument("--preset", choices=["snnsec", "reference"], default="snnsec",
                   help="recipe to start from: snnsec (binary event-count frames, cross-entropy, batch 32, cosine per "
                   "step) or reference (the Sneaky Spikes code: count frames split by event number, MSE on firing "
                   "rate, batch 16, cosine per epoch); options given explicitly win")
    a.add_argument("--seed", type=int, default=0)
    o = p.add_argument_group("output")
    o.add_argument("--out", required=True, type=Path, help="output folder")
    o.add_argument("--store", default=None, help="results store (default: $SNNSEC_STORE or reports/results.sqlite)")
    o.add_argument("--no-progress", action="store_true")
    add_output_checks(o, "checkpoint")
    add_device_option(o)
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    from snnsec.attacks.backdoor.run import BackdoorConfig

    params = {k: getattr(args, k) for k in _TRIGGER_OPTS if getattr(args, k, None) is not None}
    # options left unset take the preset's value, then the config's default
    given = {k: getattr(args, k) for k in ("T", "slicing", "epochs", "batch_size", "lr", "loss") if getattr(args, k) is not None}
    if args.counts:
        given["binary"] = False
    return BackdoorConfig.make(args.preset, dataset=args.data, root=args.root, model=args.model,
                               model_kwargs=key_values(args.model_arg, "--model-arg"), trigger=args.trigger,
                               trigger_params=params, rate=args.rate, target=args.target, mode=args.mode,
                               label_mode=args.label_mode, exclude_target=args.exclude_target, inject=args.inject,
                               seed=args.seed, alpha=args.alpha, gamma=args.gamma, **given)


def run(args: argparse.Namespace) -> int:
    from snnsec.runs.backdoor import save_backdoor_run
    from snnsec.attacks.backdoor.run import run_backdoor

    config = config_from_args(args)
    result = run_backdoor(config, progress=not args.no_progress, device=args.device)
    save_backdoor_run(result, args.out, store=args.store)
    m = result.metrics
    print(f"clean_accuracy={m['clean_accuracy']:.4f} attack_success_rate={m['attack_success_rate']:.4f} ssim={m['ssim']:.4f} -> {args.out}")
    return 0
