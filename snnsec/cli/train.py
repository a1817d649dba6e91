"""``snnsec train`` (train a model, write a checkpoint) and ``snnsec eval`` (recompute its accuracy)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from snnsec.cli import add_device_option, add_output_checks, add_thread_option, key_values, positive_int
from snnsec.data.spec import SLICINGS

STORE_HELP = "results store (default: $SNNSEC_STORE or reports/results.sqlite)"


def register(sub) -> None:
    from snnsec.hardening.recipe import add_arguments
    from snnsec.train_settings import LOSSES, recommended

    p = sub.add_parser(
        "train",
        help="train a spiking classifier and write a checkpoint",
        description="Train with Adam and a cosine schedule, evaluate on the test split every epoch, and write "
        "OUT/model.safetensors, OUT/model.json and OUT/metrics.json (clean_accuracy on the test split). "
        "Options left out take per-dataset defaults: " + "; ".join(
            f"{name}: " + ", ".join(f"{k}={v}" for k, v in d.items()) for name, d in recommended().items()) + ".",
    )
    p.add_argument("--data", required=True, help="dataset name (ndigits, nmnist, dvsgesture, ...)")
    p.add_argument("--root", default=None, help="dataset folder (not needed for ndigits)")
    p.add_argument("--model", default="csnn", help="model registry name or package.module:function (default csnn)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE", help="model keyword argument (repeatable)")
    p.add_argument("--data-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="extra option for snnsec.data.load (repeatable)")
    p.add_argument("--T", type=positive_int, default=None, help="time steps")
    p.add_argument("--slicing", choices=SLICINGS, default=None, help="framing (default: the dataset's)")
    p.add_argument("--epochs", type=positive_int, default=None)
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (cosine-annealed to 0)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--augment", action="store_true", help="spatial jitter, event drop and time jitter on frames")
    p.add_argument("--compress", default=None, metavar="METHOD[:KEY=VALUE,...]",
                   help="train compressed from the start: binary, quantize:bits=4, prune:sparsity=0.9, "
                        "soft-prune:sparsity=0.9; membrane_bits=B with any of them stores the membranes on B bits "
                        "(Q-SNN: quantize:bits=4,membrane_bits=4); see `snnsec compress` for a trained checkpoint")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--store", default=None, help=STORE_HELP)
    p.add_argument("--no-progress", action="store_true")
    # --loss (ce, mse-rate: MSE of the output rate vs one-hot as in Sneaky Spikes; tcl, stcl) and
    # adversarial training flags: hardened recipes are trained by the same loop
    add_arguments(p, builtin_losses=LOSSES)
    add_output_checks(p, "checkpoint")
    add_device_option(p)
    p.set_defaults(func=run_train)

    e = sub.add_parser("eval", help="recompute a checkpoint's accuracy",
                       description="Load a checkpoint (folder, .safetensors or weights-only .pt with its .json) and "
                       "measure its accuracy. Dataset, T and framing default to the checkpoint's DataSpec.")
    e.add_argument("checkpoint", type=Path)
    e.add_argument("--data", default=None, help="dataset name (default: the checkpoint's)")
    e.add_argument("--arch", metavar="MODULE:FUNCTION", default=None,
                   help="allow the checkpoint's own factory: snnsec never imports code a checkpoint names, so a "
                   "model.json whose arch is MODULE:FUNCTION loads only when you name the same factory here")
    e.add_argument("--root", default=None, help="dataset folder")
    e.add_argument("--T", type=positive_int, default=None, help="time steps (default: the checkpoint's)")
    e.add_argument("--split", default="test", choices=["train", "test"])
    e.add_argument("--data-opt", action="append", default=[], metavar="KEY=VALUE")
    e.add_argument("--batch-size", type=positive_int, default=256)
    e.add_argument("--store", default=None, help=STORE_HELP)
    e.add_argument("--no-progress", action="store_true")
    add_thread_option(e)
    add_device_option(e)
    e.set_defaults(func=run_eval, writes_rows=True)


def run_train(args: argparse.Namespace) -> int:
    from snnsec.hardening.recipe import recipe_from_args
    from snnsec.train import LossRecipe, TrainConfig, run_training
    from snnsec.train_settings import recommended

    recipe = recipe_from_args(args) or LossRecipe(args.loss)
    rec = recommended(args.data)
    pick = lambda name: getattr(args, name) if getattr(args, name) is not None else rec[name]  # noqa: E731
    config = TrainConfig(epochs=pick("epochs"), batch_size=pick("batch_size"), lr=pick("lr"),
                         weight_decay=args.weight_decay, seed=args.seed,
                         loss=args.loss if isinstance(recipe, LossRecipe) else "ce", augment=args.augment)
    res = run_training(data=args.data, model=args.model, config=config, out=args.out, root=args.root, T=pick("T"),
                       slicing=args.slicing, model_kwargs=key_values(args.model_arg, "--model-arg"),
                       data_opts=key_values(args.data_opt, "--data-opt"), recipe=recipe, store=args.store,
                       progress=not args.no_progress, device=args.device, compression=args.compress)
    m = res.metrics
    print(f"clean_accuracy={m['clean_accuracy']:.4f} (test split, {res.spec.name}, T={res.spec.T}, recipe {recipe.name}) "
          f"in {m['train_seconds']:.1f} s -> {args.out}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from snnsec.train import evaluate_checkpoint

    if not args.checkpoint.exists():
        raise FileNotFoundError(f"checkpoint not found: {args.checkpoint}")
    r = evaluate_checkpoint(args.checkpoint, data=args.data, root=args.root, T=args.T, split=args.split,
                            data_opts=key_values(args.data_opt, "--data-opt"), batch_size=args.batch_size,
                            store=args.store, progress=not args.no_progress and sys.stderr.isatty(), arch=args.arch,
                            device=args.device)
    recorded = "" if r["recorded"] is None else f" (checkpoint records {r['recorded']:.4f})"
    print(f"clean_accuracy={r['clean_accuracy']:.4f} on {r['data']} {r['split']} split, {r['n']} samples, "
          f"T={r['T']}{recorded}")
    return 0
