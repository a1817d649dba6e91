"""``snnsec report``: redraw every figure and table from the results store."""

from __future__ import annotations

import argparse

from snnsec.cli import add_output_checks


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="draw figures, summary tables and a self-contained report.html from the results store",
        description="Read the results store and write DIR/results.csv, DIR/summary.md, DIR/summary.html, "
        "DIR/figures/*.png and *.pdf, and DIR/report.html (one file, images embedded, readable offline). "
        "Figures whose rows are not in the store are listed as missing, with the command that makes them.",
    )
    p.add_argument("--store", default=None, help="results store (default: $SNNSEC_STORE or reports/results.sqlite)")
    p.add_argument("--filter", dest="filters", action="append", default=[], metavar="KEY=VALUE",
                   help="keep rows where KEY equals VALUE; KEY is a column (dataset, model, T, attack, defense, seed, "
                   "metric, run_id) or column.key inside a JSON column (attack_params.trigger=static). Repeat the "
                   "option: different keys must all match, the same key given twice matches either value")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the report into")
    add_output_checks(p, "report", rows=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from snnsec.report import build_report

    rep = build_report(args.out, store=args.store, filters=args.filters)
    print(f"{rep.n_rows} rows; {len(rep.drawn)} of {len(rep.figures)} figures drawn")
    for f in rep.missing:
        print(f"  missing: {f.title}: {f.missing}")
    if rep.unreliable:
        print(f"  {len(rep.unreliable)} run(s) flagged unreliable: " + ", ".join(sorted(rep.unreliable)))
    print(f"wrote {rep.html}")
    return 0
