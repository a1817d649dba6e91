"""Spec files -> grids of cells -> result rows, resumable.

A spec (TOML) declares one ``kind`` of cell and a grid::

    kind = "backdoor"
    seeds = [0]                 # optional, default [0]
    plugins = ["my.module"]     # optional: modules that register more kinds
    [base]                      # keys shared by every cell
    dataset = "nmnist"
    model = "csnn"
    [[sweep]]                   # each sweep: lists are crossed, scalars fixed
    trigger = ["static", "moving"]
    rate = [0.01, 0.05, 0.1]
    seed = [0, 1, 2]            # optional: this sweep's seeds instead of the spec's

A cell is ``{"kind": ..., **base, **one combination of a sweep, "seed": s}``; its key is
``snnsec.results.config_hash(cell)``. Cells already in the store are skipped, and each
finished cell is appended to the store in its own transaction before the next starts, so a
sweep killed at any point resumes with nothing lost and nothing duplicated.

Kinds are a registry: ``register_kind("backdoor", fn)`` where
``fn(cell: dict, *, progress: bool) -> dict`` returns ``{"metrics": {name: float}, ...}``
and optionally ``attack``, ``attack_params``, ``defense``, ``defense_params``, ``extra``, and
``groups``: a list of further row groups, each ``{"metrics": {...}}`` with any of those optional
keys replacing the cell's own (per-layer firing rates, a gallery clip with its frames in
``extra``, per-group entropies). Every row of a cell shares its run id and config hash, so a
cell is stored, and skipped on resume, as a whole.
The built-in kinds are registered by :mod:`snnsec.runs` (imported on first use); a spec's
``plugins`` modules may register more.
"""

from __future__ import annotations

import importlib
import itertools
import time
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

CellFn = Callable[..., dict]
_KINDS: dict[str, CellFn] = {}
REQUIRED = ("dataset", "model")


def register_kind(name: str, fn: CellFn) -> CellFn:
    """Register the runner of one kind of cell (re-registering a name replaces it)."""
    _KINDS[str(name)] = fn
    return fn


def _builtin() -> None:
    import snnsec.runs  # noqa: F401  (its __init__ registers the built-in kinds)


def kinds() -> list[str]:
    _builtin()
    return sorted(_KINDS)


def get_kind(name: str) -> CellFn:
    _builtin()
    if name not in _KINDS:
        raise ValueError(f"bench: unknown cell kind {name!r}; registered kinds: {sorted(_KINDS)}")
    return _KINDS[name]


@dataclass
class Spec:
    kind: str
    cells: list[dict[str, Any]]
    source: str = "spec"
    name: str = ""
    plugins: list[str] = field(default_factory=list)
    # what one cell needs when it runs as a Ray task (never part of a cell's config)
    resources: dict[str, float] = field(default_factory=lambda: {"num_cpus": 1, "num_gpus": 0})

    def on_device(self, device: str) -> "Spec":
        """This spec with every cell on ``device`` (the CLI's ``--device``); cells that differed only
        in their device become one."""
        cells = {}
        for c in self.cells:
            placed = _placed({**c, "device": device}, self.source)
            cells.setdefault(_canonical(placed), placed)
        return replace(self, cells=list(cells.values()))

    def devices(self) -> set[str]:
        return {c.get("device", "cpu") for c in self.cells}


def _placed(cell: dict[str, Any], source: str) -> dict[str, Any]:
    """A cell with its ``device`` checked and in one form: absent for the CPU (so a grid that
    ran before devices existed keeps its cell hashes), ``cuda`` or ``cuda:N`` otherwise."""
    from snnsec.devices import parse_device

    if "device" not in cell:
        return cell
    try:
        device = parse_device(cell["device"])
    except ValueError as exc:
        raise ValueError(f"{source}: field 'device': {exc}") from None
    rest = {k: v for k, v in cell.items() if k != "device"}
    return rest if device == "cpu" else {**rest, "device": device}


def _as_list(v) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def parse_spec(d: dict[str, Any], *, source: str = "spec") -> Spec:
    """Expand a spec dict (as read from TOML) into its cells, in a stable order."""
    if not isinstance(d.get("kind"), str):
        raise ValueError(f"{source}: field 'kind' must name the cell kind (e.g. kind = \"backdoor\")")
    allowed = {"kind", "name", "seeds", "base", "sweep", "plugins", "description", "resources"}
    extra = sorted(set(d) - allowed)
    if extra:
        raise ValueError(f"{source}: unknown top-level field(s) {extra}; expected some of {sorted(allowed)}")
    base = d.get("base", {})
    if not isinstance(base, dict):
        raise ValueError(f"{source}: [base] must be a table of key = value")
    sweeps = d.get("sweep", [{}])
    if isinstance(sweeps, dict):
        sweeps = [sweeps]
    if not isinstance(sweeps, list) or not all(isinstance(s, dict) for s in sweeps):
        raise ValueError(f"{source}: [[sweep]] must be a list of tables")
    seeds = _as_list(d.get("seeds", [0]))
    if not seeds or not all(isinstance(s, int) for s in seeds):
        raise ValueError(f"{source}: field 'seeds' must be a list of integers, got {d.get('seeds')!r}")
    plugins = _as_list(d.get("plugins", []))
    resources = _resources(d.get("resources", {}), source)
    cells, seen = [], set()
    for i, sweep in enumerate(sweeps):
        # A sweep that lists its own seeds (five clean models beside one backdoor each) uses those.
        keys = [k for k in sweep if k != "seed"]
        sweep_seeds = _as_list(sweep["seed"]) if "seed" in sweep else seeds
        if not sweep_seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in sweep_seeds):
            raise ValueError(f"{source}: sweep {i + 1}: field 'seed' must be an integer or a list of integers, got {sweep['seed']!r}")
        for combo in itertools.product(*[_as_list(sweep[k]) for k in keys]):
            for seed in sweep_seeds:
                cell = _placed({"kind": d["kind"], **base, **dict(zip(keys, combo)), "seed": int(seed)}, source)
                missing = [k for k in REQUIRED if k not in cell]
                if missing:
                    raise ValueError(f"{source}: sweep {i + 1} gives cells without {missing} (put them in [base] or the sweep)")
                key = _canonical(cell)
                if key not in seen:  # overlapping sweeps name a cell once
                    seen.add(key)
                    cells.append(cell)
    return Spec(kind=d["kind"], cells=cells, source=source, name=str(d.get("name", "")), plugins=[str(p) for p in plugins],
                resources=resources)


def _resources(d, source: str) -> dict[str, float]:
    """The ``[resources]`` table: ``num_cpus`` (> 0, default 1) and ``num_gpus`` (>= 0, default 0)
    one cell asks of a Ray cluster; its torch threads are ``max(1, int(num_cpus))``."""
    if not isinstance(d, dict):
        raise ValueError(f"{source}: [resources] must be a table (num_cpus = 1, num_gpus = 0)")
    unknown = sorted(set(d) - {"num_cpus", "num_gpus"})
    if unknown:
        raise ValueError(f"{source}: [resources]: unknown field(s) {unknown}; expected num_cpus, num_gpus")
    out = {"num_cpus": d.get("num_cpus", 1), "num_gpus": d.get("num_gpus", 0)}
    for k, low_open in (("num_cpus", True), ("num_gpus", False)):
        v = out[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (v <= 0 if low_open else v < 0):
            raise ValueError(f"{source}: [resources]: {k} must be a number {'> 0' if low_open else '>= 0'}, got {v!r}")
    return out


def _canonical(cell: dict) -> str:
    import json

    return json.dumps(cell, sort_keys=True, default=str)


def load_spec(path) -> Spec:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"bench spec not found: {path}")
    try:
        d = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    return parse_spec(d, source=str(path))


def cell_hash(cell: dict) -> str:
    from snnsec.results import config_hash

    return config_hash(cell)


@dataclass
class BenchSummary:
    total: int
    skipped: int
    ran: int
    seconds_per_cell: list[float]


# A claim is taken over when its heartbeat is older than this; runners renew it every
# LEASE_SECONDS / 6, so a runner must stall for minutes before its cell is run twice.
LEASE_SECONDS = 180.0


def runner_id() -> str:
    """Who holds a claim: host, process and a random tag (pids repeat across machines)."""
    import os
    import socket
    import uuid

    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def runner_is_gone(owner: str) -> bool:
    """Whether a claim's owner was a process on this machine that no longer exists; owners
    on other machines are judged by their heartbeat alone."""
    import os
    import socket

    parts = owner.split(":")  # host:pid:tag, as runner_id() writes it
    if len(parts) < 3 or ":".join(parts[:-2]) != socket.gethostname():
        return False
    try:
        os.kill(int(parts[-2]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False


class _Heartbeat:
    """Renews the claims of the cells in flight from a background thread while they compute."""

    def __init__(self, store, owner: str, interval: float):
        import threading

        self.store, self.owner, self.interval = store, owner, interval
        self.hashes: set[str] = set()
        self.lost: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def add(self, h: str) -> None:
        with self._lock:
            self.hashes.add(h)

    def discard(self, h: str) -> None:
        with self._lock:
            self.hashes.discard(h)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                held = list(self.hashes)
            for h in held:
                if not self.store.heartbeat(h, self.owner):
                    self.lost.add(h)

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class InProcess:
    """Runs one cell at a time in this process (the default)."""

    capacity = 1

    def __init__(self, fn: CellFn, progress: bool):
        self.fn, self.progress = fn, progress
        self._queued: list[tuple[int, dict]] = []

    def __enter__(self) -> "InProcess":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def submit(self, i: int, cell: dict) -> None:
        self._queued.append((i, cell))

    def finished(self, timeout: float) -> list[tuple[int, dict]]:
        """``(index, output)`` of the cells that finished; raises what a cell raised."""
        i, cell = self._queued.pop(0)
        return [(i, self.fn(dict(cell), progress=self.progress))]


def run_spec(spec: Spec | str | Path, *, store=None, progress: bool = True, dry_run: bool = False,
             log: Callable[[str], None] = print, lease: float = LEASE_SECONDS, workers: int | None = None,
             address: str | None = None, device: str | None = None) -> BenchSummary:
    """Run every cell of ``spec`` not yet in ``store`` (a path; the CLI gives ``--store`` or the default).

    Cells run in this process one after another, or, with ``workers`` (a local Ray cluster of
    that many cells at once) or ``address`` (an existing Ray cluster), as Ray tasks
    (:mod:`snnsec.runs.cluster`); either way only this process writes the store. ``device``
    puts every cell there (default: each cell's ``device`` field, else the CPU).

    Several runners (processes, machines sharing the store's file system) may run one spec
    against one store at the same time: each cell is claimed in the store before it runs, so
    no cell is run by two live runners, and a cell whose runner died (no heartbeat for
    ``lease`` seconds) is taken over. A runner returns when every cell is stored.
    """
    from snnsec import results

    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    # plugins are named by the spec file the user chose to run, like --arch on the command line;
    # nothing read from a checkpoint reaches here
    for module in spec.plugins:
        importlib.import_module(module)
    fn = get_kind(spec.kind)
    if device is not None:
        spec = spec.on_device(device)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"bench: workers must be an integer >= 1, got {workers!r}")
    if store is None:
        raise ValueError("bench: pass store= (the results store a grid resumes from; the CLI's --store)")
    store = results.Store(store).check()
    owner = runner_id()
    n = len(spec.cells)
    labels = {i: " ".join(f"{k}={v}" for k, v in cell.items() if k not in ("kind", "root")) for i, cell in enumerate(spec.cells, 1)}
    pending = {i: (cell, cell_hash(cell)) for i, cell in enumerate(spec.cells, 1)}
    if dry_run:
        skipped = 0
        for i, (cell, h) in pending.items():
            if store.has_config(h):
                skipped += 1
                log(f"[{i}/{n}] done   {h[:10]} {labels[i]}")
                continue
            held = store.holder(h)
            state = f"running ({held[0]}, heartbeat {held[1]:.0f} s ago)" if held else "to do"
            log(f"[{i}/{n}] {state} {h[:10]} {labels[i]}")
        return BenchSummary(total=n, skipped=skipped, ran=0, seconds_per_cell=[])
    if workers is None and address is None:
        from snnsec.devices import check_device

        for d in sorted(spec.devices()):
            check_device(d, source=f"{spec.source}: cells with device")
        executor = InProcess(fn, progress)
    else:
        from snnsec.runs.cluster import RayCells

        executor = RayCells(spec, workers=workers, address=address, log=log)
    from tqdm.auto import tqdm

    skipped = ran = 0
    times: list[float] = []
    waiting_logged: set[int] = set()
    in_flight: dict[int, float] = {}
    with executor, _Heartbeat(store, owner, lease / 6) as beat, \
            tqdm(total=n, desc=spec.name or "cells", unit="cell", disable=not progress, leave=False) as bar:
        say = bar.write if progress else log
        try:
            while pending:
                for i, (cell, h) in list(pending.items()):
                    if i in in_flight:
                        continue
                    if len(in_flight) >= executor.capacity:
                        break
                    if store.has_config(h):
                        skipped += 1
                        del pending[i]
                        bar.update(1)
                        say(f"[{i}/{n}] done   {h[:10]} {labels[i]}")
                        continue
                    if not store.claim(h, owner, lease=lease, dead=runner_is_gone):
                        if i not in waiting_logged and not store.has_config(h):
                            waiting_logged.add(i)
                            held = store.holder(h)
                            say(f"[{i}/{n}] held   {h[:10]} by {held[0] if held else 'another runner'}; later")
                        continue
                    say(f"[{i}/{n}] run    {h[:10]} {labels[i]}")
                    beat.add(h)
                    in_flight[i] = time.perf_counter()
                    executor.submit(i, cell)
                if not in_flight:
                    if pending:
                        # every remaining cell is being run by a live runner: wait for it to finish or die
                        time.sleep(min(5.0, lease / 4))
                    continue
                for i, out in executor.finished(timeout=min(5.0, lease / 12)):
                    cell, h = pending[i]
                    rows = rows_for_cell(cell, out)
                    seconds = time.perf_counter() - in_flight.pop(i)
                    del pending[i]
                    written = store.append(rows, claim=(h, owner))
                    beat.discard(h)
                    times.append(seconds)
                    bar.update(1)
                    if written:
                        ran += 1
                        say(f"[{i}/{n}] stored {h[:10]} in {seconds:.1f} s: "
                            + ", ".join(f"{k}={v:.4g}" for k, v in out["metrics"].items()))
                    else:
                        skipped += 1
                        say(f"[{i}/{n}] dropped {h[:10]}: another runner stored it first"
                            + (" (this runner's claim had lapsed)" if h in beat.lost else ""))
        except BaseException:
            for i in in_flight:
                store.release(pending[i][1], owner)
            raise
    return BenchSummary(total=n, skipped=skipped, ran=ran, seconds_per_cell=times)


_ROW_KEYS = ("attack", "attack_params", "defense", "defense_params", "extra")


def _metrics(d, where: str) -> dict[str, float]:
    if not isinstance(d, dict) or not d:
        raise ValueError(f"{where}: 'metrics' must be a non-empty dict of name -> number, got {d!r}")
    return {k: float(v) for k, v in d.items()}


def rows_for_cell(cell: dict, out: dict) -> list[dict]:
    """The rows of one finished cell: its metrics, then each of its ``groups``."""
    from snnsec import results

    kind = f"bench kind {cell.get('kind')!r}"
    if not isinstance(out, dict) or not isinstance(out.get("metrics"), dict):
        raise ValueError(f"{kind} must return a dict with a 'metrics' dict, got {type(out).__name__}")
    shared = dict(run_id=results.new_run_id(), dataset=str(cell["dataset"]), model=str(cell["model"]), T=cell.get("T"),
                  seed=int(cell["seed"]), config=cell)
    top = {k: out.get(k) for k in _ROW_KEYS}
    rows = results.make_rows(**shared, metrics=_metrics(out["metrics"], kind), **top)
    groups = out.get("groups") or []
    if not isinstance(groups, (list, tuple)):
        raise ValueError(f"{kind}: 'groups' must be a list of row groups, got {type(groups).__name__}")
    for i, g in enumerate(groups):
        where = f"{kind}: groups[{i}]"
        if not isinstance(g, dict):
            raise ValueError(f"{where}: expected a dict with 'metrics', got {type(g).__name__}")
        unknown = sorted(set(g) - {"metrics", *_ROW_KEYS})
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; expected 'metrics' and some of {list(_ROW_KEYS)}")
        rows += results.make_rows(**shared, metrics=_metrics(g.get("metrics"), where), **{**top, **{k: g[k] for k in _ROW_KEYS if k in g}})
    return rows
