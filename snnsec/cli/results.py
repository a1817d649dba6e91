"""``snnsec results export``: the results store as CSV or Parquet."""

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
                           "Filters keep rows whose column equals the value; repeat a filter to allow several values.")
    e.add_argument("--format", choices=EXPORT_FORMATS, default=None, help="default: from the --out suffix")
    e.add_argument("--out", required=True, type=Path, help="output file (.csv or .parquet)")
    e.add_argument("--store", default=None, help="results store (default: $SNNSEC_STORE or reports/results.sqlite)")
    for col in _FILTERS:
        e.add_argument(f"--{col.replace('_', '-')}", dest=col, action="append", default=None, metavar=col.upper())
    e.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from snnsec.results import export

    filters = {c: getattr(args, c) for c in _FILTERS if getattr(args, c)}
    out = export(args.out, format=args.format, path=args.store, **filters)
    print(f"wrote {out}")
    return 0
