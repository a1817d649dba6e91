"""``snnsec data``: inspect event datasets (``info``) and draw their frames (``show``)."""

from __future__ import annotations

import argparse

from snnsec.cli import positive_int
from snnsec.data.spec import SLICINGS


def register(sub) -> None:
    p = sub.add_parser("data", help="inspect event datasets: sizes, class counts, event statistics, frame strips",
                       description="Inspect the event datasets snnsec reads (ndigits is embedded; the others need "
                       "--root pointing at a local folder, nothing is downloaded).")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True

    info = dsub.add_parser("info", help="samples per split and per class, and event statistics")
    info.add_argument("name", help="dataset: ndigits, nmnist, nmnist-resplit, dvsgesture, cifar10dvs, ncaltech101, shd")
    info.add_argument("--root", default=None, help="dataset folder (ndigits: cache folder)")
    info.add_argument("--no-stats", dest="stats", action="store_false", help="skip the event statistics")
    info.set_defaults(func=run_info)

    show = dsub.add_parser("show", help="write a strip of one sample's frames, ON red and OFF blue")
    show.add_argument("name")
    show.add_argument("index", type=int, help="sample index within the split")
    show.add_argument("--root", default=None, help="dataset folder (ndigits: cache folder)")
    show.add_argument("--split", default="test", choices=("train", "test"))
    show.add_argument("--T", type=positive_int, default=16, help="number of frames (default 16)")
    show.add_argument("--slicing", default="events", choices=SLICINGS)
    show.add_argument("--counts", action="store_true", help="draw event counts instead of binary frames")
    show.add_argument("--out", required=True, help="image file to write (.png, .pdf, ...)")
    show.set_defaults(func=run_show)


def run_info(args: argparse.Namespace) -> int:
    from snnsec.data import info

    d = info(args.name, root=args.root, stats=args.stats)
    W, H, P = d["sensor_size"]
    print(f"{d['name']}: sensor {W} x {H} x {P} (W x H x P), {len(d['classes'])} classes")
    if d.get("note"):
        print(f"note: {d['note']}")
    width = max(5, *(len(c) for c in d["classes"]))
    print(f"{'class':<{width}}  {'train':>6}  {'test':>6}")
    tr, te = d["splits"]["train"]["per_class"], d["splits"]["test"]["per_class"]
    for c, a, b in zip(d["classes"], tr, te):
        print(f"{c:<{width}}  {a:>6}  {b:>6}")
    print(f"{'total':<{width}}  {d['splits']['train']['samples']:>6}  {d['splits']['test']['samples']:>6}")
    if args.stats:
        print("\nevent statistics       train        test")
        rows = [("events/sample mean", "events_mean", "{:.0f}"), ("events/sample median", "events_median", "{:.0f}"),
                ("events/sample min", "events_min", "{:.0f}"), ("events/sample max", "events_max", "{:.0f}"),
                ("ON fraction", "on_fraction", "{:.3f}"), ("duration ms mean", "duration_ms_mean", "{:.1f}"),
                ("duration ms median", "duration_ms_median", "{:.1f}"), ("samples counted", "samples", "{:d}")]
        for label, key, fmt in rows:
            vals = [fmt.format(d["splits"][s]["stats"][key]) for s in ("train", "test")]
            print(f"{label:<20} {vals[0]:>7} {vals[1]:>11}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from snnsec.data import load
    from snnsec.data.show import save_frame_strip

    ds, spec = load(args.name, split=args.split, root=args.root, T=args.T, slicing=args.slicing, binary=not args.counts)
    if not 0 <= args.index < len(ds):
        raise ValueError(f"index {args.index} out of range: {args.name} {args.split} has {len(ds)} samples")
    label = int(ds.targets[args.index])
    frames = ds.frames(args.index)
    n_events = len(ds.events(args.index))
    title = (f"{spec.name} {args.split}[{args.index}]: class {spec.classes[label]}, {n_events} events, "
             f"T={spec.T} ({spec.slicing} slicing, {'binary' if spec.binary else 'counts'})")
    path = save_frame_strip(frames, args.out, title=title)
    print(f"wrote {path}")
    return 0
