"""Keep freed memory in the process for reuse, decided once at the entry point.

glibc's malloc serves every block above its mmap threshold (128 KiB at start, raised on the fly
to at most 32 MiB) with a fresh ``mmap`` and hands it back to the kernel on ``free``, and trims
the top of its heap once 128 KiB lie free there. An SNN's forward and backward allocate and free
the same activation-sized blocks (batch x T x channels x H x W floats, megabytes) at every
step, so every step faults those pages in afresh and has the kernel zero them. Measured on
``snnsec demo`` from an empty cache on the 2-core machine beside one single-threaded attack job
(one thread; two runs each, alternated): 5.4 to 6.9 million minor page faults, 14 to 23 s of
system time and 150 / 152 s with glibc's defaults; 0.44 to 0.54 million, 4 to 5 s and 129 / 130 s
with freed blocks kept (the settings below), same verdicts and numbers, peak memory 10 % higher.
On the idle machine (two threads) the one pair measured (with a 1 GiB threshold) took 93 s and
92 s. PyTorch's CPU performance guide gets the same by preloading jemalloc or tcmalloc; this
needs no other library.

Like the thread budget, this is a process-wide policy: the CLI, the Ray cell runner and the
test session apply it; the library never does. A user who tunes malloc themselves
(``MALLOC_*`` variables, ``GLIBC_TUNABLES``, or another allocator preloaded) is left alone,
and on a C library without glibc's ``mallopt`` nothing changes.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks up to 256 MiB come from the heap and stay there once freed: above the largest
# activation of the registered models at the batch sizes the commands use (a Spikformer's
# [T * B, 64, 34, 34] at batch 32 is 75 MB), so that a one-off larger array (a whole dataset
# decoded at once) still goes straight back to the kernel.
MMAP_THRESHOLD = 256 << 20
# never trim: the next step needs the same memory again
TRIM_THRESHOLD = 2**31 - 1

_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_",
                  "GLIBC_TUNABLES", "LD_PRELOAD")


def is_glibc() -> bool:
    """Whether this process runs on glibc (the only C library whose malloc this tunes)."""
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def keep_freed_memory(environ=None) -> str:
    """Apply the policy where it applies; returns why it was or was not applied."""
    env = os.environ if environ is None else environ
    user = [k for k in _USER_SETTINGS if env.get(k)]
    if user:
        return f"left to {user[0]}"
    if not is_glibc():
        return "not glibc"
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return "no mallopt"
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return "applied" if ok else "refused by mallopt"
