"""How many threads a command may use, decided once at the entry point.

torch's intra-op pool (and the BLAS/OpenMP pools under numpy and scipy) default to one
thread per core. On a shared machine that is the wrong size: when another process holds a
core, the pool's threads wait on one the OS has descheduled, and the small convolutions of
an SNN at batch 32 spend their time in that wait (measured: the demo's audit took 111 s
instead of 39 s beside one spinning process, 59 s with one thread). So the count comes from
the cores this process may use and how many of them are free right now:

1. ``--threads N`` (every computing command has it), else
2. ``SNNSEC_THREADS``, else
3. ``OMP_NUM_THREADS`` when the user set it (their explicit choice), else
4. the cores in this process's affinity mask (``os.sched_getaffinity``) that are idle over a
   short sample of ``/proc/stat``; a core more than half busy counts as taken. Where that
   cannot be read it is 1: fewer threads cost a little speed, too many cost a stall.

The CLI calls :func:`apply` once; the library never changes thread counts. A sweep's cells run
inside their runner and share its budget; several runners on one machine each measure the
cores the others left free when they start.
"""

from __future__ import annotations

import os
import time

ENV = "SNNSEC_THREADS"
# how long the idle sample of /proc/stat lasts: long enough to see a busy core, short next
# to any command that computes
SAMPLE_SECONDS = 0.15


def allowed_cores() -> list[int]:
    """The CPUs this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def _cpu_times(path: str = "/proc/stat") -> dict[int, tuple[int, int]]:
    """Per CPU: (busy jiffies, total jiffies)."""
    out = {}
    with open(path) as fh:
        for line in fh:
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            name, *fields = line.split()
            v = [int(f) for f in fields]
            idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
            out[int(name[3:])] = (sum(v[:8]) - idle, sum(v[:8]))
    return out


def free_cores(sample: float = SAMPLE_SECONDS, *, path: str = "/proc/stat") -> int | None:
    """How many allowed cores were idle more than half of a ``sample``-second window;
    None where /proc/stat cannot be read."""
    cores = allowed_cores()
    try:
        before = _cpu_times(path)
        time.sleep(sample)
        after = _cpu_times(path)
    except (OSError, ValueError, IndexError):
        return None
    free = 0
    for c in cores:
        if c not in before or c not in after:
            continue
        busy = after[c][0] - before[c][0]
        total = after[c][1] - before[c][1]
        if total > 0 and busy / total <= 0.5:
            free += 1
    return free


def _positive(value: str, source: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"{source}: expected a number of threads >= 1, got {value!r}") from None
    if n < 1:
        raise ValueError(f"{source}: expected a number of threads >= 1, got {n}")
    return n


def choose(requested: int | None = None, *, environ=None, measure=free_cores) -> tuple[int, str]:
    """``(threads, why)`` by the rules in the module doc."""
    env = os.environ if environ is None else environ
    if requested is not None:
        return _positive(str(requested), "--threads"), "--threads"
    if env.get(ENV):
        return _positive(env[ENV], ENV), ENV
    if env.get("OMP_NUM_THREADS"):
        return _positive(env["OMP_NUM_THREADS"], "OMP_NUM_THREADS"), "OMP_NUM_THREADS"
    n_allowed = len(allowed_cores())
    free = measure()
    if free is None:
        return 1, "idle cores unknown"
    return max(1, min(n_allowed, free)), f"{free} of {n_allowed} allowed cores idle"


def apply(threads: int) -> None:
    """Size torch's intra-op pool and the BLAS/OpenMP pools to ``threads``."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(int(threads))
    # one inter-op thread: the harness runs no parallel graph branches
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or work already started in this process
        pass
    threadpool_limits(int(threads))
