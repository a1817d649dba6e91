"""Cells of a bench spec as Ray tasks (``snnsec bench SPEC --workers N`` or ``--address ADDR``).

The driver (:func:`snnsec.bench.run_spec`) claims each cell in the store, submits it here, and
stores the rows when the task returns: only the driver writes the store, and a cell is a plain
function from its config to rows, so a task needs nothing but the installed snnsec (and the
spec's ``plugins``) on the node that runs it.

- ``--workers N``: a local Ray cluster is started for this run with room for N cells at once
  (``N x num_cpus`` CPUs) and stopped at the end.
- ``--address ADDR``: join a running cluster (``ray start --head`` on one machine, ``ray start
  --address HEAD:6379`` on the others); as many cells run at once as its CPUs (or GPUs, when
  cells ask for them) hold.

Each task sizes torch's thread pool to its share (``max(1, int(num_cpus))`` from the spec's
``[resources]``), so N cells on N cores never oversubscribe them. A worker process that dies
mid-cell (killed, out of memory) is retried by Ray (``MAX_RETRIES``); its rows arrive once, and
the store's claim keeps a second copy out even if two attempts both finish. A cell that raises
is not retried: the run stops with its error, as it does in-process.

Relative paths in a spec (``root``, ``$SNNSEC_CKPT_CACHE``) are resolved in the driver's working
directory, which each task enters when it exists on that node; on a multi-node cluster give the
nodes the same paths (a shared file system) or absolute ones.
"""

from __future__ import annotations

import importlib
import math
import os
import time
from typing import Callable
from unittest import mock

# Ray's default for tasks; a worker killed this many times in a row fails the run.
MAX_RETRIES = 3
# Enough for the rows of a cell (the object store holds only task results here); Ray's
# default (30 % of memory) would claim gigabytes of /dev/shm on a laptop.
OBJECT_STORE_BYTES = 200 * 1024 * 1024
# SJ_: spikingjelly's neuron backend (--backend), read when a worker imports it
_FORWARDED_ENV = ("SNNSEC_", "SJ_", "PYTHONPATH")


def run_cell(kind: str, cell: dict, plugins: list[str], threads: int, cwd: str) -> dict:
    """One cell, in a Ray worker: its output dict (:func:`snnsec.bench.rows_for_cell` makes rows of it)."""
    from snnsec import allocator, bench
    from snnsec import threads as thread_budget

    allocator.keep_freed_memory()
    thread_budget.apply(threads)
    if "device" in cell:  # a worker without the GPU the cell asks for says so before any work
        from snnsec.devices import check_device

        check_device(cell["device"], source=f"the Ray worker on {os.uname().nodename}: cell device")
    if os.path.isdir(cwd):
        os.chdir(cwd)
    for module in plugins:  # named by the spec file the user ran, as in the driver
        importlib.import_module(module)
    return bench.get_kind(kind)(dict(cell), progress=False)


class RayCells:
    """The executor :func:`snnsec.bench.run_spec` uses for Ray: ``submit`` and ``finished``."""

    def __init__(self, spec, *, workers: int | None, address: str | None, log: Callable[[str], None] = print):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ValueError("bench --workers/--address: Ray is not installed; pip install 'snnsec[ray]' "
                             "(or run without --workers)") from None
        self.spec, self.workers, self.address, self.log = spec, workers, address, log
        self.cpus = float(spec.resources["num_cpus"])
        self.gpus = float(spec.resources["num_gpus"])
        self.threads = max(1, int(self.cpus))
        on_cuda = sorted(d for d in spec.devices() if d != "cpu")
        if on_cuda and self.gpus == 0:
            raise ValueError(f"{spec.source}: cells run on {on_cuda[0]} but [resources] num_gpus = 0: Ray would give "
                             "their tasks no GPU; set num_gpus (1, or a fraction to share one GPU between cells)")
        if any(d != "cuda" for d in on_cuda):
            raise ValueError(f"{spec.source}: cells on {on_cuda}: as Ray tasks, say device = \"cuda\": Ray gives each "
                             "task its GPU and makes it the task's cuda:0")
        self._refs: dict = {}
        self._started = False
        self.capacity = 1

    def __enter__(self) -> "RayCells":
        import ray

        common = dict(log_to_driver=False, include_dashboard=False, configure_logging=False)
        if self.address is None:
            # Ray starts workers at niceness 15 so its own daemons stay responsive; beside other
            # jobs at 0 such a worker starved (importing torch took 56 s instead of 2.5 s with two
            # busy processes on 2 cores). The cells are the work the user asked for: nice 0. The
            # cluster reads it when it starts, so the driver's environment is left as it was after.
            # The local cluster's workers inherit this process's environment.
            with mock.patch.dict(os.environ, {"RAY_worker_niceness": os.environ.get("RAY_worker_niceness", "0")}):
                ray.init(address="local", num_cpus=math.ceil(self.workers * self.cpus),
                         num_gpus=None if self.gpus == 0 else max(1, round(self.workers * self.gpus)),
                         object_store_memory=OBJECT_STORE_BYTES, **common)
            self._started = True
            self.capacity = self.workers
        else:
            env = {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED_ENV)}
            try:
                ray.init(address=self.address, runtime_env={"env_vars": env}, **common)
            except ConnectionError as exc:
                raise ValueError(f"bench --address {self.address}: no Ray cluster answers there ({exc}); start one "
                                 "with `ray start --head` on that machine, or pass 'auto' for the cluster this "
                                 "machine belongs to") from None
            total = ray.cluster_resources()
            fits = [total.get("CPU", 0) / self.cpus] + ([total.get("GPU", 0) / self.gpus] if self.gpus else [])
            self.capacity = max(1, int(min(fits)))
            if self.workers is not None:
                self.capacity = min(self.capacity, self.workers)
            if int(min(fits)) < 1:
                ray.shutdown()
                raise ValueError(f"bench --address {self.address}: the cluster has {total.get('CPU', 0):g} CPUs and "
                                 f"{total.get('GPU', 0):g} GPUs; a cell asks for {self.cpus:g} and {self.gpus:g} "
                                 "([resources] of the spec)")
        self._task = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=MAX_RETRIES,
                                retry_exceptions=False)(run_cell)
        self.log(f"ray: {self.capacity} cell(s) at once, {self.cpus:g} CPU and {self.threads} thread(s) each"
                 + (f", {self.gpus:g} GPU" if self.gpus else "")
                 + (" on a local cluster" if self._started else f" on the cluster at {self.address}"))
        return self

    def __exit__(self, *exc) -> None:
        import ray

        for ref in self._refs:
            ray.cancel(ref, force=True)
        ray.shutdown()

    def submit(self, i: int, cell: dict) -> None:
        ref = self._task.remote(self.spec.kind, cell, list(self.spec.plugins), self.threads, os.getcwd())
        self._refs[ref] = i

    def finished(self, timeout: float) -> list[tuple[int, dict]]:
        """``(index, output)`` of the cells done within ``timeout`` seconds; a cell's error is raised
        as the cell raised it."""
        import ray

        if not self._refs:
            time.sleep(timeout)
            return []
        done, rest = ray.wait(list(self._refs), num_returns=1, timeout=timeout)
        if done and rest:
            done += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        out = []
        for ref in done:
            i = self._refs.pop(ref)
            try:
                out.append((i, ray.get(ref)))
            except ray.exceptions.RayTaskError as exc:
                raise exc.as_instanceof_cause() from None
        return out
