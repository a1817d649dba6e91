"""``snnsec demo``: train (or reuse) a clean and a backdoored model on ndigits, audit both,
evaluate adversarial robustness, and write a report folder."""

from __future__ import annotations

from snnsec.cli import add_device_option, add_output_checks, positive_int


def register(sub) -> None:
    p = sub.add_parser("demo", help="end-to-end demo on ndigits: train, audit for backdoors, attack; writes a report",
                       description="Train (or reuse cached) clean and backdoored csnn models on the embedded ndigits "
                       "data, audit both for backdoors, run a small adversarial evaluation, and write a report folder.")
    p.add_argument("--out", default="reports/demo", metavar="DIR", help="report folder (default reports/demo)")
    p.add_argument("--epochs", type=positive_int, default=None, help="training epochs per model (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    add_output_checks(p, "demo", rows=False)
    add_device_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from snnsec.demo import DemoConfig, run_demo

    cfg = DemoConfig(seed=args.seed) if args.epochs is None else DemoConfig(seed=args.seed, epochs=args.epochs)
    out = run_demo(args.out, cfg, progress=not args.no_progress, device=args.device)
    print(f"report folder: {out.resolve()}")
    return 0
