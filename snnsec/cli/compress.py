"""``snnsec compress CKPT``: binary, low-bit or pruned copies of a trained checkpoint."""

from __future__ import annotations

from pathlib import Path

from snnsec.cli import add_checkpoint_input, add_device_option, add_output_checks, positive_int


def register(sub) -> None:
    from snnsec.train_settings import COMPRESS_METHODS as METHODS

    p = sub.add_parser(
        "compress", help="a binary-weight, low-bit or pruned copy of a trained checkpoint, fine-tuned",
        description="Compress every convolution and linear layer of a checkpoint (binary: per-channel alpha*sign(w); "
        "quantize: BITS-bit weights; prune: magnitude pruning to SPARSITY; soft-prune: a learnable soft threshold "
        "started at SPARSITY), optionally store every neuron's membrane on MEMBRANE_BITS bits, fine-tune it compressed on the checkpoint's training split, and save the baked "
        "weights as a checkpoint of the same backbone.")
    add_checkpoint_input(p)
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--bits", type=int, default=None, help="quantize: weight bits (default 4)")
    p.add_argument("--membrane-bits", type=int, default=None,
                   help="any method: also store every neuron's membrane on this many bits (Q-SNN; default: full precision)")
    p.add_argument("--sparsity", type=float, default=None, help="prune, soft-prune: fraction of zero weights (default 0.9)")
    p.add_argument("--compress-ends", action="store_true",
                   help="binary, quantize: also compress the first and last weight layers (kept full precision by default)")
    p.add_argument("--finetune-epochs", type=int, default=3, help="compressed fine-tuning epochs (0: the bare transform)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, type=Path, help="output folder (a checkpoint)")
    p.add_argument("--store", default=None, help="results store (default: $SNNSEC_STORE or reports/results.sqlite)")
    p.add_argument("--no-progress", action="store_true")
    add_output_checks(p, "checkpoint")
    add_device_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from snnsec.cli import CLIError
    from snnsec.runs.compress import run_compress, save_compressed

    params = {k: getattr(args, k) for k in ("bits", "sparsity", "membrane_bits") if getattr(args, k) is not None}
    if args.method in ("binary", "quantize"):
        params["keep_ends"] = not args.compress_ends
    elif args.compress_ends:
        raise CLIError(f"--compress-ends: only for binary and quantize (pruning covers every layer), not {args.method}")
    if args.finetune_epochs < 0:
        raise CLIError(f"--finetune-epochs: expected an integer >= 0, got {args.finetune_epochs}")
    result = run_compress(args.checkpoint, args.method, params=params, finetune_epochs=args.finetune_epochs, lr=args.lr,
                          batch_size=args.batch_size, seed=args.seed, data=args.data, root=args.root, arch=args.arch,
                          device=args.device, progress=not args.no_progress)
    out = save_compressed(result, args.out, store=args.store)
    m = result.metrics
    print(f"{args.method}: clean_accuracy {m['clean_accuracy_uncompressed']:.4f} uncompressed, "
          f"{m['clean_accuracy_before_finetune']:.4f} compressed, {m['clean_accuracy']:.4f} after "
          f"{args.finetune_epochs} fine-tuning epoch(s)")
    for r in result.layers:
        print(f"  {r['layer']:40s} sparsity {r['sparsity']:.3f}  values per channel {r['distinct_per_channel']}")
    print(f"-> {out}")
    return 0
