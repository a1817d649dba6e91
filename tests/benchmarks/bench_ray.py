"""Grids of equal cells on Ray workers against the sequential run, on this machine's cores.

Goal (issue 15): ``snnsec bench SPEC --workers 2`` at least 1.7x faster than the sequential
run on 2 cores. Two grids, each run through the CLI into a fresh store, so every timing includes
what a user waits for (the Ray cluster's start included):

- training: 4 equal ``backdoor`` cells on the embedded ndigits data (csnn, T = 8, 2 epochs,
  seeds 0 to 3), large batches that torch's intra-op threads already spread over the cores;
- inspection: 8 equal ``defense`` cells, the data-free membrane-margin test on one cached
  backdoored ndigits model (defense seeds 0 to 7), small batches that threads do not spread well.

Sequential runs twice: with one thread (each Ray task's share) and with the thread budget's own
choice on an idle machine. Needs an otherwise idle machine. Prints wall times and ratios measured
in this invocation. Run with ``make bench`` or ``python tests/benchmarks/bench_ray.py``. No timed
assertions.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# the backdoor both grids train (the inspection grid once, untimed)
BACKDOOR = """
[base]
dataset = "ndigits"
model = "csnn"
T = 8
epochs = 2
trigger = "static"
rate = 0.1
target = 0
"""
SPEC = 'name = "bench-ray"\nkind = "backdoor"\nseeds = [0, 1, 2, 3]\n' + BACKDOOR
INSPECTION = ('name = "bench-ray-inspection"\nkind = "defense"\n' + BACKDOOR
              + 'defense = "margin"\n[[sweep]]\ndefense_params = [{seeds}]\n')


def _timed(args: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "snnsec", "bench", *args, "--no-progress"], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stdout[-1000:] + done.stderr[-2000:])
    return time.perf_counter() - t0


def measure(text: str, workers: int = 2) -> list[tuple[str, float]]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "SNNSEC_THREADS", "MKL_NUM_THREADS")}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        env["SNNSEC_CKPT_CACHE"] = str(Path(tmp) / "checkpoints")
        spec = Path(tmp) / "grid.toml"
        if "defense" in text:  # train the inspected model once, untimed
            spec.write_text(text.format(seeds="{seed = 99}"))
            _timed([str(spec), "--store", str(Path(tmp) / "warm.sqlite")], env)
            text = text.format(seeds=", ".join(f"{{seed = {s}}}" for s in range(8)))
        spec.write_text(text)
        for label, extra in (("sequential, 1 thread", ["--threads", "1"]),
                             ("sequential, thread budget", []),
                             (f"--workers {workers}", ["--workers", str(workers)])):
            store = Path(tmp) / f"{len(rows)}.sqlite"
            rows.append((label, _timed([str(spec), "--store", str(store), *extra], env)))
    return rows


def test_ray_workers_against_sequential():
    for name, text in (("training, 4 cells", SPEC), ("inspection, 8 cells", INSPECTION)):
        rows = measure(text)
        ray = rows[-1][1]
        print(f"\n{name}\n{'run':28s} {'wall':>8s} {'speed-up of --workers':>22s}")
        for label, t in rows:
            print(f"{label:28s} {t:7.1f}s {t / ray:21.2f}x")
    print("goal: --workers 2 at least 1.7x the sequential run")


if __name__ == "__main__":
    test_ray_workers_against_sequential()
