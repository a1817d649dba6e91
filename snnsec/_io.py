"""Atomic file writes: nothing is ever written half.

Every file snnsec produces goes through here: the bytes land in a temporary file in the
target folder, are flushed to disk, and only then renamed over the destination, so a
crash leaves either the old file or the new one, never a truncated mix.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def cache_dir() -> Path:
    """Where snnsec keeps what it can rebuild (ndigits, the demo's models, compiled kernels):
    ``$SNNSEC_CACHE``, else ``$XDG_CACHE_HOME/snnsec``, else ``~/.cache/snnsec``."""
    if os.environ.get("SNNSEC_CACHE"):
        return Path(os.environ["SNNSEC_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "snnsec"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write_with(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def atomic_write_with(path: str | os.PathLike, writer: Callable[[str], Any]) -> Path:
    """Call ``writer(tmp_path)`` to fill a temporary file, then rename it to ``path``.

    Use this for libraries that insist on writing to a path themselves (safetensors,
    matplotlib's savefig): the suffix of ``path`` is kept on the temporary name so that
    format detection by extension still works.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp creates 0600 files; give outputs the mode an ordinary open() would have
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays, paths and tuples-as-dataclass fields reach json.dumps from
    # metrics and configs; turn them into plain JSON rather than failing a whole run.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise TypeError(f"cannot write {type(obj).__name__} as JSON: {obj!r}")
