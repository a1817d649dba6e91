"""``snnsec bench SPEC``: run the cells of a spec file that are not yet in the store."""

from __future__ import annotations

import argparse
import sys

from snnsec.cli import add_device_option, add_thread_option, positive_int


def register(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="run a grid of experiments from a spec file (TOML), resuming where it stopped",
        description="Run every cell of a spec file (see attacks/README.md) that the results store "
        "does not already hold; cells are keyed by a hash of their config, so an interrupted "
        "sweep resumes without repeating or duplicating cells.",
    )
    p.add_argument("spec", help="spec file (TOML)")
    p.add_argument("--store", default=None, help="results store (default: $SNNSEC_STORE or reports/results.sqlite)")
    p.add_argument("--dry-run", action="store_true", help="list the cells and whether each is done; run nothing")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help="run N cells at once as Ray tasks on a local Ray cluster started for this run (each cell "
                   "gets the spec's [resources], default 1 CPU = 1 thread); default: one cell at a time in this process")
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="run the cells as Ray tasks on the Ray cluster at ADDR (e.g. HEAD:6379 after `ray start "
                   "--head` there; 'auto' for the one this machine belongs to)")
    add_thread_option(p)
    add_device_option(p, per_cell=True)
    p.set_defaults(func=run, writes_rows=True)


def run(args: argparse.Namespace) -> int:
    from snnsec.bench import run_spec

    progress = not args.no_progress and sys.stderr.isatty()
    s = run_spec(args.spec, store=args.store, progress=progress, dry_run=args.dry_run, log=lambda m: print(m, flush=True),
                 workers=args.workers, address=args.address, device=args.device)
    todo = s.total - s.skipped - s.ran
    print(f"{s.total} cells: {s.skipped} already done, {s.ran} run now" + (f", {todo} to do" if todo else ""))
    if s.seconds_per_cell:
        print(f"mean {sum(s.seconds_per_cell) / len(s.seconds_per_cell):.1f} s per cell")
    return 0
