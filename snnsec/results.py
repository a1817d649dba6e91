"""The results store: tidy rows (one metric per row) in SQLite, read back as pandas.

Every command appends its numbers here; reports and figures read only these rows. A row::

    run_id, time, dataset, model, T, attack, attack_params, defense, defense_params,
    seed, metric, value, config, config_hash, versions, extra

``attack_params``, ``defense_params``, ``config``, ``versions`` and ``extra`` are JSON text.
``config_hash`` is :func:`config_hash` of ``config``, which is how the bench runner tells
that a cell is already done (:meth:`Store.has_config`).

Several processes may append at once (parallel bench runs): the database runs in WAL mode,
each :meth:`Store.append` is one ``BEGIN IMMEDIATE`` transaction, and a writer waits for the
lock (up to ``timeout`` seconds) rather than failing.

    from snnsec import results
    store = results.Store(results.default_store_path())
    store.append(results.make_rows(run_id=results.new_run_id(), dataset="ndigits", model="csnn",
                                   T=16, seed=0, metrics={"clean_accuracy": 0.97}, config=cfg))
    df = results.load(dataset="ndigits", metric="clean_accuracy")
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
import os
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

from snnsec._io import _json_default, atomic_write_with

COLUMNS = ("run_id", "time", "dataset", "model", "T", "attack", "attack_params", "defense", "defense_params",
           "seed", "metric", "value", "config", "config_hash", "versions", "extra")
JSON_COLUMNS = ("attack_params", "defense_params", "config", "versions", "extra")
REQUIRED = ("run_id", "dataset", "model", "metric", "value")
EXPORT_FORMATS = ("csv", "parquet")

_SQL_TYPES = {"T": "INTEGER", "seed": "INTEGER", "value": "REAL"}
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS results (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    + ", ".join(f"{c} {_SQL_TYPES.get(c, 'TEXT')}" for c in COLUMNS)
    + ")",
    "CREATE INDEX IF NOT EXISTS results_config_hash ON results (config_hash)",
    "CREATE INDEX IF NOT EXISTS results_run_id ON results (run_id)",
    # A runner's claim on a cell it is computing: other runners skip the cell while the
    # claim's heartbeat is fresh and take it over when it is not (the runner died).
    "CREATE TABLE IF NOT EXISTS claims (config_hash TEXT PRIMARY KEY, owner TEXT NOT NULL, "
    "claimed REAL NOT NULL, heartbeat REAL NOT NULL)",
)
_TABLE_COLUMNS = {"results": ("id", *COLUMNS), "claims": ("config_hash", "owner", "claimed", "heartbeat")}
_SQLITE_MAGIC = b"SQLite format 3\x00"


def default_store_path() -> Path:
    """``$SNNSEC_STORE`` if set, else ``reports/results.sqlite`` under the current directory."""
    env = os.environ.get("SNNSEC_STORE")
    return Path(env) if env else Path("reports") / "results.sqlite"


def new_run_id() -> str:
    """A unique id that sorts by creation time: ``20261124T131500Z-1a2b3c4d``."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def _canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def config_hash(config: Any) -> str:
    """SHA-256 of the canonical JSON of ``config`` (key order does not matter)."""
    return hashlib.sha256(_canonical_json(config).encode("utf-8")).hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def make_rows(*, run_id: str, dataset: str, model: str, T: int | None, seed: int | None, metrics: dict[str, float],
              attack: str | None = None, attack_params: dict | None = None, defense: str | None = None,
              defense_params: dict | None = None, config: dict, extra: dict | None = None) -> list[dict]:
    """One tidy row per entry of ``metrics``, all sharing the run's description.

    Values must be numbers (bools become 0/1); NaN is kept (stored as NULL, read back as NaN).
    The library versions are recorded from :func:`snnsec.provenance.versions`.
    """
    from snnsec.provenance import versions

    if not isinstance(metrics, dict) or not metrics:
        raise ValueError(f"make_rows: metrics must be a non-empty dict of name -> number, got {metrics!r}")
    if not isinstance(config, dict):
        raise ValueError(f"make_rows: config must be a dict, got {type(config).__name__}")
    stamp = _now()
    shared = {
        "run_id": str(run_id), "time": stamp, "dataset": str(dataset), "model": str(model),
        "T": None if T is None else int(T), "attack": attack, "attack_params": attack_params or {},
        "defense": defense, "defense_params": defense_params or {}, "seed": None if seed is None else int(seed),
        "config": config, "config_hash": config_hash(config), "versions": versions(), "extra": extra or {},
    }
    rows = []
    for name, value in metrics.items():
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"make_rows: metric {name!r} must be a number, got {value!r}") from None
        rows.append({**shared, "metric": str(name), "value": v})
    return rows


def _db_row(row: dict, i: int) -> tuple:
    if not isinstance(row, dict):
        raise ValueError(f"result row {i}: expected a dict, got {type(row).__name__}")
    unknown = sorted(set(row) - set(COLUMNS))
    if unknown:
        raise ValueError(f"result row {i}: unknown column(s) {unknown}; expected some of {list(COLUMNS)}")
    missing = [c for c in REQUIRED if row.get(c) is None]
    if missing:
        raise ValueError(f"result row {i}: missing {missing} (required: {list(REQUIRED)})")
    out = []
    for c in COLUMNS:
        v = row.get(c)
        if c == "time" and v is None:
            v = _now()
        elif c in JSON_COLUMNS:
            v = _canonical_json(v if v is not None else {})
        elif c == "config_hash" and v is None:
            v = config_hash(row.get("config") or {})
        elif c == "value":
            v = float(v)
            v = None if math.isnan(v) else v
        out.append(v)
    return tuple(out)


class Store:
    """An SQLite results file. Cheap to create; every call opens and closes its own connection,
    so a ``Store`` can be passed to other processes."""

    def __init__(self, path: str | os.PathLike | None = None, *, timeout: float = 60.0):
        self.path = Path(path) if path is not None else default_store_path()
        self.timeout = float(timeout)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE below), so a write
        # takes the lock up front instead of upgrading a read lock, which can deadlock.
        return sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)

    def _init(self, con: sqlite3.Connection) -> None:
        # Switching to WAL needs a moment of exclusive access; another process creating the
        # same store at the same time makes it report "locked", so retry until the deadline.
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                con.execute("PRAGMA journal_mode=WAL")
                con.execute("BEGIN IMMEDIATE")
                for stmt in _SCHEMA:
                    con.execute(stmt)
                con.execute("COMMIT")
                return
            except sqlite3.OperationalError as exc:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def check(self) -> "Store":
        """Refuse, before any work, a store that rows could not be written to: a folder, a
        file that is not an SQLite database, a corrupt database, one whose tables are not
        snnsec's, or a place that cannot be written. A path that does not exist yet is fine
        when its folder can be made. Returns the store."""
        where = f"results store {self.path}"
        fix = "point --store (or SNNSEC_STORE) at an snnsec results file, or at a new file name"
        if self.path.is_dir():
            raise ValueError(f"{where}: is a folder; expected an SQLite file such as {self.path / 'results.sqlite'}")
        if self.path.exists():
            if not self.path.is_file():
                raise ValueError(f"{where}: is not a regular file; {fix}")
            with open(self.path, "rb") as fh:
                head = fh.read(len(_SQLITE_MAGIC))
            if head and head != _SQLITE_MAGIC:
                raise ValueError(f"{where}: is not an SQLite database; {fix}")
            if not os.access(self.path, os.W_OK):
                raise ValueError(f"{where}: is not writable; {fix}")
            con = self._connect()
            try:
                bad = con.execute("PRAGMA quick_check").fetchall()
                if bad != [("ok",)]:
                    raise ValueError(f"{where}: the database is corrupt ({bad[0][0]}); restore it from a copy or {fix}")
                for table, want in _TABLE_COLUMNS.items():
                    have = [r[1] for r in con.execute(f"PRAGMA table_info({table})")]
                    missing = [c for c in want if c not in have]
                    if have and missing:
                        raise ValueError(f"{where}: table '{table}' lacks column(s) {missing}; it was not written by "
                                         f"this version of snnsec; {fix}")
            except sqlite3.DatabaseError as exc:
                raise ValueError(f"{where}: cannot be read as a database ({exc}); {fix}") from None
            finally:
                con.close()
        else:
            parent = next((p for p in [self.path.parent, *self.path.parent.parents] if p.exists()), None)
            if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK):
                raise ValueError(f"{where}: cannot be created ({parent} is not a writable folder); {fix}")
        return self

    def append(self, rows: Iterable[dict], *, claim: tuple[str, str] | None = None) -> int:
        """Write ``rows`` in one transaction (all or nothing); returns how many were written.

        With ``claim=(config_hash, owner)`` the rows are a claimed cell's: the claim is
        released in the same transaction, and nothing is written when another runner stored
        the cell first (its claim was taken over), so a cell is never stored twice.
        """
        values = [_db_row(r, i) for i, r in enumerate(rows)]
        if not values:
            return 0
        with self._writing() as con:
            if claim is not None:
                con.execute("DELETE FROM claims WHERE config_hash = ? AND owner = ?", claim)
                if con.execute("SELECT 1 FROM results WHERE config_hash = ? LIMIT 1", (claim[0],)).fetchone():
                    return 0
            con.executemany(f"INSERT INTO results ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})", values)
        return len(values)

    @contextlib.contextmanager
    def _writing(self):
        """One write transaction, taken up front; committed when the block ends (also by
        return), rolled back when it raises."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._connect()
        try:
            self._init(con)
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()

    # -- claims: several runners splitting one grid -------------------------------------
    def claim(self, hash: str, owner: str, *, lease: float, dead: Callable[[str], bool] | None = None) -> bool:
        """Claim cell ``hash`` for ``owner``, atomically. False when the cell is stored, or
        claimed by another owner whose heartbeat is younger than ``lease`` seconds. An older
        claim belongs to a runner that died or stalled and is taken over, as is one whose
        owner ``dead(owner)`` says is gone."""
        with self._writing() as con:
            if con.execute("SELECT 1 FROM results WHERE config_hash = ? LIMIT 1", (hash,)).fetchone():
                return False
            now = time.time()
            held = con.execute("SELECT owner, heartbeat FROM claims WHERE config_hash = ?", (hash,)).fetchone()
            if held is not None and held[0] != owner and now - held[1] < lease and not (dead and dead(held[0])):
                return False
            con.execute("INSERT OR REPLACE INTO claims (config_hash, owner, claimed, heartbeat) VALUES (?, ?, ?, ?)",
                        (hash, owner, now, now))
            return True

    def heartbeat(self, hash: str, owner: str) -> bool:
        """Renew ``owner``'s claim on ``hash``; False when the claim was taken over."""
        con = self._connect()
        try:
            cur = con.execute("UPDATE claims SET heartbeat = ? WHERE config_hash = ? AND owner = ?", (time.time(), hash, owner))
            return cur.rowcount == 1
        finally:
            con.close()

    def release(self, hash: str, owner: str) -> None:
        """Give up ``owner``'s claim on ``hash`` (the cell failed; another runner may try it)."""
        con = self._connect()
        try:
            if _has_table(con, "claims"):
                con.execute("DELETE FROM claims WHERE config_hash = ? AND owner = ?", (hash, owner))
        finally:
            con.close()

    def holder(self, hash: str) -> tuple[str, float] | None:
        """``(owner, seconds since its heartbeat)`` of the claim on ``hash``, or None."""
        if not self.path.is_file():
            return None
        con = self._connect()
        try:
            if not _has_table(con, "claims"):
                return None
            row = con.execute("SELECT owner, heartbeat FROM claims WHERE config_hash = ?", (hash,)).fetchone()
            return None if row is None else (row[0], time.time() - row[1])
        finally:
            con.close()

    def has_config(self, hash: str) -> bool:
        """Whether any row was stored with this ``config_hash``."""
        if not self.path.is_file():
            return False
        con = self._connect()
        try:
            if not _has_table(con):
                return False
            return con.execute("SELECT 1 FROM results WHERE config_hash = ? LIMIT 1", (str(hash),)).fetchone() is not None
        finally:
            con.close()

    def load(self, *, parse_json: bool = False, **filters: Any):
        """Rows as a pandas DataFrame (columns :data:`COLUMNS`, in insertion order).

        ``filters``: column=value keeps rows equal to value; column=[v1, v2] keeps any of them;
        column=None keeps rows where the column is empty. ``parse_json=True`` turns the JSON
        columns into dicts (the default keeps them as text, which exports cleanly).
        """
        import pandas as pd

        if not self.path.is_file():
            raise FileNotFoundError(f"no results store at {self.path} (run a command first, or point "
                                    f"--store / SNNSEC_STORE at an existing one)")
        where, params = _where(filters)
        con = self._connect()
        try:
            if not _has_table(con):
                raise ValueError(f"{self.path}: not an snnsec results store (no 'results' table)")
            df = pd.read_sql_query(f"SELECT {', '.join(COLUMNS)} FROM results{where} ORDER BY id", con, params=params)
        finally:
            con.close()
        df["T"] = df["T"].astype("Int64")
        df["seed"] = df["seed"].astype("Int64")
        df["value"] = df["value"].astype(float)
        if parse_json:
            for c in JSON_COLUMNS:
                df[c] = [json.loads(v) if isinstance(v, str) and v else {} for v in df[c]]
        return df


def _has_table(con: sqlite3.Connection, name: str = "results") -> bool:
    return con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


def _where(filters: dict[str, Any]) -> tuple[str, list]:
    unknown = sorted(set(filters) - set(COLUMNS))
    if unknown:
        raise ValueError(f"results filter(s) {unknown} are not columns; expected some of {list(COLUMNS)}")
    clauses, params = [], []
    for col, val in filters.items():
        if val is None:
            clauses.append(f"{col} IS NULL")
        elif isinstance(val, (list, tuple, set, frozenset)):
            vals = list(val)
            if not vals:
                clauses.append("0")
                continue
            clauses.append(f"{col} IN ({', '.join('?' * len(vals))})")
            params.extend(vals)
        else:
            clauses.append(f"{col} = ?")
            params.append(val)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def load(path: str | os.PathLike | None = None, *, parse_json: bool = False, **filters: Any):
    """The rows of the store at ``path`` (default :func:`default_store_path`) as a DataFrame.

    See :meth:`Store.load` for ``filters`` and ``parse_json``.
    """
    return Store(path).load(parse_json=parse_json, **filters)


def export(out: str | os.PathLike, *, format: str | None = None, path: str | os.PathLike | None = None,
           **filters: Any) -> Path:
    """Write the (filtered) rows of the store to ``out`` as CSV or Parquet.

    ``format`` defaults to the suffix of ``out`` (``.csv`` or ``.parquet``). Parquet needs
    pyarrow, which is optional: ``pip install pyarrow``.
    """
    out = Path(out)
    fmt = (format or out.suffix.lstrip(".")).lower()
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"export format: expected one of {list(EXPORT_FORMATS)} (or an --out ending in "
                         f".csv/.parquet), got {fmt or out.name!r}")
    if fmt == "parquet":
        _require_pyarrow()
    df = load(path, **filters)
    if fmt == "csv":
        return atomic_write_with(out, lambda tmp: df.to_csv(tmp, index=False))
    return atomic_write_with(out, lambda tmp: df.to_parquet(tmp, index=False, engine="pyarrow"))


def _require_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ValueError("Parquet export needs the pyarrow package, which is not installed: "
                         "pip install pyarrow (or export with --format csv)") from None
