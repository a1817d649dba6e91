"""The ``snnsec`` command line.

The CLI only parses arguments and calls the library. Each subcommand family lives in its
own module in this package and exposes ``register(subparsers)``; modules are discovered
here, so a new command is one new file.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys

EXIT_OK = 0
EXIT_FOUND = 1
EXIT_ERROR = 2


class CLIError(Exception):
    """A user-facing error: printed as one clear message, exit code 2."""


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse names the option and exits 2 otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def fraction(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1], got {value}")
    return value


# Every output folder a command writes gets this marker, naming what it holds, so a later
# run can tell its own folder (reused freely) from a user's (refused unless --overwrite).
OUT_MARKER = ".snnsec-out.json"


def add_thread_option(p: argparse.ArgumentParser) -> None:
    """Declare that command ``p`` computes: :func:`main` sizes torch's thread pools for it
    (see :mod:`snnsec.threads`) before it starts."""
    p.add_argument("--threads", type=positive_int, default=None,
                   help="threads for torch and BLAS (default: $SNNSEC_THREADS, $OMP_NUM_THREADS, else the idle cores "
                        "this process may use, measured at start)")
    p.set_defaults(computes=True)


def add_checkpoint_input(p: argparse.ArgumentParser) -> None:
    """The positional checkpoint and the options that say how to read it and its data."""
    from pathlib import Path

    p.add_argument("checkpoint", type=Path, help="checkpoint folder, .safetensors or .json")
    p.add_argument("--data", default=None, help="dataset name (default: the checkpoint's)")
    p.add_argument("--root", default=None, help="dataset folder (not needed for ndigits)")
    p.add_argument("--arch", metavar="MODULE:FUNCTION", default=None,
                   help="allow the checkpoint's own factory: snnsec never imports code a checkpoint names, so a "
                   "model.json whose arch is MODULE:FUNCTION loads only when you name the same factory here")


def add_device_option(p: argparse.ArgumentParser, *, per_cell: bool = False) -> None:
    """Declare that command ``p`` runs a model: ``--device`` (checked by :func:`main` before the
    command starts) and ``--backend`` (set before spikingjelly is imported); :mod:`snnsec.devices`.
    ``per_cell``: the device overrides each bench cell's, and is checked where the cells run
    (a Ray cluster's GPUs are not the driver's)."""
    from snnsec.devices import BACKENDS, parse_device

    def device(text: str) -> str:
        try:
            return parse_device(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    p.add_argument("--device", type=device, default=None if per_cell else "cpu",
                   help=("every cell's device, over the spec's 'device' fields (default: theirs, else cpu)"
                         if per_cell else "where the model computes: cpu (default), cuda or cuda:N; the data stay "
                         "on the CPU"))
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="on CUDA, spikingjelly's neuron kernels: its CUDA extension, triton, plain torch, or auto "
                        "(default: auto, the fastest that loads; or the SJ_*_CUDA_IMPLEMENTATION variables)")
    p.set_defaults(runs_model=True, device_per_cell=per_cell)


def add_output_checks(p: argparse.ArgumentParser, writes: str, *, rows: bool = True) -> None:
    """Declare that command ``p`` writes ``writes`` into ``--out`` (and rows into ``--store``
    when ``rows``): both are checked by :func:`main` before the command starts."""
    p.add_argument("--overwrite", action="store_true",
                   help="write into an --out folder that holds other files (never over a checkpoint's own files)")
    p.set_defaults(writes=writes, writes_rows=rows)
    add_thread_option(p)


def check_out(out, writes: str, overwrite: bool) -> None:
    """Refuse an ``--out`` folder the command must not write into, before any work:
    a file; a checkpoint folder, unless this command writes checkpoints and ``overwrite``
    (an attack's metrics.json must never replace the checkpoint's own); a folder with files
    snnsec did not write there (or wrote for another command), unless ``overwrite``."""
    from pathlib import Path

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out}: is a file; expected a folder (it is created if missing)")
    if not out.is_dir() or not any(out.iterdir()):
        return
    marker = out / OUT_MARKER
    try:
        held = json.loads(marker.read_text()).get("writes") if marker.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        held = None
    if (out / "model.json").is_file():
        if writes != "checkpoint":
            raise CLIError(f"--out {out}: is a checkpoint folder; this command's {writes} output (its metrics.json) "
                           "would replace the checkpoint's own files; choose another --out folder")
        if not overwrite:
            raise CLIError(f"--out {out}: holds a checkpoint already; add --overwrite to replace it, or choose "
                           "another --out folder")
        return
    if held == writes or overwrite:
        return
    what = f"the output of another command ({held})" if held else "files snnsec did not write"
    raise CLIError(f"--out {out}: holds {what}; add --overwrite to write there anyway, or choose an empty or "
                   "new folder")


def mark_out(out, writes: str, command: str) -> None:
    from pathlib import Path

    from snnsec._io import atomic_write_json

    if Path(out).is_dir():
        atomic_write_json(Path(out) / OUT_MARKER, {"writes": writes, "command": command})


def key_values(items: list[str], flag: str) -> dict:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (values parsed as JSON when they are JSON)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise CLIError(f"{flag}: expected KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="snnsec",
        description="Robustness and security evaluation for spiking neural networks.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "writes_rows", False):
            from snnsec.results import Store

            # the store is decided here, once; the library writes rows only where it is told to
            args.store = str(Store(getattr(args, "store", None)).check().path)
        if getattr(args, "writes", None):
            check_out(args.out, args.writes, args.overwrite)
        if getattr(args, "runs_model", False):
            import logging

            from snnsec import devices

            # spikingjelly registers its neuron operators for Triton on first use and torch warns,
            # twice per command, wherever Triton is not installed (every CPU machine): noise, not news
            logging.getLogger("torch._library.triton").setLevel(logging.ERROR)

            if not args.device_per_cell:
                args.device = devices.check_device(args.device)
            if args.backend is not None:
                devices.apply_backend(args.backend)
        if getattr(args, "computes", False):
            from snnsec import allocator, threads

            allocator.keep_freed_memory()
            n, why = threads.choose(args.threads)
            threads.apply(n)
            allowed = len(threads.allowed_cores())
            if n < allowed and why.endswith("idle"):
                print(f"snnsec: computing on {n} of {allowed} cores ({why}); --threads overrides", file=sys.stderr)
        code = args.func(args)
        if getattr(args, "writes", None):
            mark_out(args.out, args.writes, " ".join(sys.argv[1:3]) if argv is None else " ".join(argv[:2]))
    except (CLIError, ValueError, FileNotFoundError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"snnsec {args.command}: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK if code is None else int(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
