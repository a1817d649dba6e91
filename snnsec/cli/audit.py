"""``snnsec audit CKPT --out DIR``: is this checkpoint backdoored, and toward which class?

Exit status: 0 no backdoor found, 1 backdoor found, 2 error (scripts can branch on it).
"""

from __future__ import annotations

from snnsec.cli import add_device_option, add_output_checks


def register(sub) -> None:
    p = sub.add_parser(
        "audit",
        help="audit a checkpoint for backdoors (exit 0 clean, 1 backdoor, 2 error)",
        description="Load a checkpoint safely, run model-inspection backdoor detectors on a small clean "
        "set (Neural Cleanse and the data-free membrane-margin test by default) and write "
        "DIR/verdict.json, DIR/report.md and a self-contained DIR/report.html, and append result rows to the store. "
        "Exit status: 0 no backdoor found, 1 backdoor found, 2 error.",
    )
    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint folder, .safetensors, .json, or weights-only .pt with its .json")
    p.add_argument("--data", metavar="NAME", help="dataset for the clean samples (default: the checkpoint's)")
    p.add_argument("--root", metavar="DIR", help="dataset root folder (for datasets that are not embedded)")
    p.add_argument("--clean-samples", type=int, default=100, metavar="N",
                   help="clean test samples to use, balanced over classes (default 100; data-free methods need none)")
    p.add_argument("--methods", default="nc,margin",
                   help="comma-separated model inspections (default nc,margin; also nc-temporal)")
    p.add_argument("--param", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="override a method parameter, e.g. nc.epochs=20 or margin.steps=500 (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arch", metavar="MODULE:FUNCTION", default=None,
                   help="allow the checkpoint's own factory: snnsec never imports code a checkpoint names, so a "
                   "model.json whose arch is MODULE:FUNCTION loads only when you name the same factory here")
    p.add_argument("--out", required=True, metavar="DIR", help="report folder")
    p.add_argument("--store", default=None, help="results store (default: $SNNSEC_STORE or reports/results.sqlite)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_output_checks(p, "audit")
    add_device_option(p)
    p.set_defaults(func=run)


def parse_params(items: list[str]) -> dict[str, dict]:
    import json

    out: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, name = key.partition(".")
        if not (sep and dot and method and name):
            raise ValueError(f"--param: expected METHOD.KEY=VALUE (e.g. nc.epochs=20), got {item!r}")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(method, {})[name] = parsed
    return out


def run(args) -> int:
    from snnsec.audit import audit

    from snnsec.cli import CLIError

    try:
        r = audit(args.checkpoint, out=args.out, data=args.data, root=args.root, n_clean=args.clean_samples,
                  methods=args.methods, method_params=parse_params(args.param), seed=args.seed, progress=not args.no_progress,
                  store=args.store, arch=args.arch, device=args.device)
    except (CLIError, ValueError, FileNotFoundError, KeyError):
        raise
    except Exception as exc:
        # Any failure must exit 2: Python's own status for an uncaught exception is 1, which
        # scripts would read as "backdoor found".
        raise CLIError(f"audit failed: {type(exc).__name__}: {exc}") from exc
    for n, d in r.detections.items():
        print(f"{n:12s} {'BACKDOOR' if d.backdoored else 'clean':8s} target={d.target} statistic={d.statistic:.4g} ({r.seconds[n]:.1f} s)")
    print(f"verdict: {'BACKDOOR, target ' + str(r.target) if r.backdoored else 'no backdoor found'}; report: {r.files['report_html']}")
    print(f"why: {r.reason()}")
    return 1 if r.backdoored else 0
