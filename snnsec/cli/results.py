"""``snnsec results export``: the results store as CSV or Parquet, or the leaderboard as
RobustBench-style JSON files."""

from __future__ import annotations

import argparse
from pathlib import Path

_FILTERS = ("run_id", "dataset", "model", "attack", "defense", "metric")


def register(sub) -> None:
    from snnsec.results import EXPORT_FORMATS

    p = sub.add_parser("results", help="export the results store",
                       description="Work with the results store (SQLite; default $SNNSEC_STORE or reports/results.sqlite).")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    e = actions.add_parser("export", help="write the rows (optionally filtered) to a CSV or Parquet file",
                           description="Write the store's rows to a file. Parquet needs pyarrow (pip install pyarrow). "
                           "Filters keep rows whose column equals the value; repeat a filter to allow several values. "
                           "--format robustbench writes the leaderboard rows as one RobustBench-style JSON per model "
                           "under OUT/<dataset>/Linf-<eps>/<model>.json.")
    e.add_argument("--format", choices=(*EXPORT_FORMATS, "robustbench"), default=None,
                   help="default: from the --out suffix")
    e.add_argument("--out", required=True, type=Path, help="output file (.csv or .parquet), or folder (robustbench)")
    e.add_argument("--store", default=None, help="results store (default: $SNNSEC_STORE or reports/results.sqlite)")
    for col in _FILTERS:
        e.add_argument(f"--{col.replace('_', '-')}", dest=col, action="append", default=None, metavar=col.upper())
    e.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from snnsec.results import export

    filters = {c: getattr(args, c) for c in _FILTERS if getattr(args, c)}
    if args.format == "robustbench":
        written = export_robustbench(args.out, path=args.store, **filters)
        print(f"wrote {len(written)} file(s) under {args.out}")
        return 0
    out = export(args.out, format=args.format, path=args.store, **filters)
    print(f"wrote {out}")
    return 0


def export_robustbench(out: Path, *, path=None, **filters) -> list[Path]:
    import re

    from snnsec._io import atomic_write_json
    from snnsec.report.tables import robustbench_entries
    from snnsec.results import load

    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: is a file; --format robustbench writes a folder of JSON files")
    safe = lambda s: re.sub(r"[^A-Za-z0-9._+=()-]+", "_", str(s))  # noqa: E731
    written = []
    for entry in robustbench_entries(load(path, parse_json=True, **filters)):
        target = out / safe(entry["dataset"]) / f"Linf-{safe(entry['eps']).replace('/', '_')}" / f"{safe(entry['name'])}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        written.append(atomic_write_json(target, entry))
    return written
