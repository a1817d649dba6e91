"""snnsec's C kernels (``lean_lif.c``): built once per machine with the system's C compiler into
the cache folder, loaded with ctypes.

The LIF's tensor operations each stream the whole membrane through memory; the C loop does a
step in one pass, with the same single-precision operations in the same order, so results are
bitwise equal (``tests/test_lean_kernels.py``). Where no compiler works, :func:`lif_library`
returns None (with one warning) and :mod:`snnsec.lean_kernels` keeps its tensor operations;
``SNNSEC_NATIVE=0`` asks for that too.

The library is built from the source shipped in this package only, never from anything a
checkpoint or a spec names. The cache file's name carries a hash of the source, the flags, the
compiler and the machine, so a change of any of them builds anew; it is written to a temporary
file and renamed (two processes building at once each get a whole file).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from snnsec._io import atomic_write_with, cache_dir

__all__ = ["lif_library", "run_split"]

_SOURCE = Path(__file__).with_name("lean_lif.c")
# no -march=native: a cache folder shared by machines must not hold code another CPU can't run;
# -ffp-contract=off: a fused multiply-add would round once where torch rounds twice
_FLAGS = ["-O3", "-fPIC", "-shared", "-fno-fast-math", "-ffp-contract=off"]
_UNSET = object()
_library: object = _UNSET
_pool: ThreadPoolExecutor | None = None
_pool_size = 0

_P, _F, _I, _L = ctypes.c_void_p, ctypes.c_float, ctypes.c_int, ctypes.c_int64
_SIGNATURES = {
    "snnsec_lif_forward": [_P, _P, _P, _P, _P, _L, _L, _L, _L, _F, _I, _F, _I, _F],
    "snnsec_lif_backward": [_P, _P, _P, _P, _P, _P, _P, _L, _L, _L, _L, _F, _I, _I, _F, _I, _F, _F],
}


def lif_library() -> ctypes.CDLL | None:
    """The compiled LIF kernels, built on first use; None where they can't be (or ``SNNSEC_NATIVE=0``)."""
    global _library
    if os.environ.get("SNNSEC_NATIVE", "1") == "0":
        return None
    if _library is _UNSET:
        try:
            _library = _load(_build())
        except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
            warnings.warn(f"snnsec: the C kernels could not be built ({exc}); the LIF runs as tensor operations "
                          "instead (same results, slower). Install a C compiler (cc) to build them.", stacklevel=2)
            _library = None
    return _library  # type: ignore[return-value]


def _build() -> Path:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler found (cc, gcc, or $CC)")
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    source = _SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, " ".join(_FLAGS).encode(), version.encode(),
                                     platform.machine().encode()])).hexdigest()[:16]
    target = cache_dir() / "native" / f"lean_lif-{key}.so"
    if target.is_file():
        return target

    def compile_to(tmp: str) -> None:
        done = subprocess.run([compiler, *_FLAGS, str(_SOURCE), "-o", tmp], capture_output=True, text=True,
                              timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {done.stderr.strip()[:500]}")

    return atomic_write_with(target, compile_to)


def _load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    for name, argtypes in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, None
    return lib


def run_split(call, n: int, threads: int) -> None:
    """``call(lo, hi)`` over ``[0, n)`` split in ``threads`` ranges run side by side (ctypes releases
    the GIL during a foreign call; elements are independent, so the split changes no value)."""
    global _pool, _pool_size
    # below this, handing a range to another thread costs more than the half it saves
    if threads <= 1 or n < 65_536:
        call(0, n)
        return
    if _pool is None or _pool_size < threads - 1:
        _pool, _pool_size = ThreadPoolExecutor(max_workers=threads - 1, thread_name_prefix="snnsec-native"), threads - 1
    bounds = [n * k // threads for k in range(threads + 1)]
    others = [_pool.submit(call, lo, hi) for lo, hi in zip(bounds[1:-1], bounds[2:])]
    call(bounds[0], bounds[1])  # the calling thread takes the first range itself
    for done in others:
        done.result()
