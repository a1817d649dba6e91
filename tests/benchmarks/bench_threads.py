"""The thread budget under load: the demo's audit of its backdoored model, idle and beside
other work, with the thread count snnsec chooses against torch's default (one per core).

Goal (issue 18): beside one process spinning on a core, at most 1.2x the idle time; the same
with a second snnsec job running; the idle time no worse than torch's default. Needs an
otherwise idle machine (the conditions are made here); trains the demo's models into the
user cache first if they are not there. Prints the wall time of each condition and its ratio
to the idle run measured in the same invocation. Run with ``make bench`` or
``python tests/benchmarks/bench_threads.py``. No timed assertions.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPIN = "while True: pass"


def _audit_cmd(ckpt: Path, out: Path, threads: int | None) -> list[str]:
    from snnsec.demo import DemoConfig

    cfg = DemoConfig()
    cmd = [sys.executable, "-m", "snnsec", "audit", str(ckpt), "--out", str(out), "--clean-samples", str(cfg.clean_samples),
           "--param", f"nc.epochs={cfg.nc_epochs}", "--param", f"margin.steps={cfg.margin_steps}", "--no-progress",
           "--overwrite"]
    return cmd + (["--threads", str(threads)] if threads else [])


def _timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise RuntimeError(done.stderr[-2000:])
    return time.perf_counter() - t0


def measure() -> list[tuple[str, float]]:
    from snnsec.demo import DemoConfig, ensure_models

    ckpt = ensure_models(DemoConfig(), progress=False, log=lambda m: None)["backdoored"]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "SNNSEC_THREADS", "MKL_NUM_THREADS")}
    cores = len(os.sched_getaffinity(0))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        env["SNNSEC_STORE"] = str(out / "r.sqlite")
        for label, threads in (("idle, snnsec's choice", None), (f"idle, torch's default ({cores})", cores)):
            rows.append((label, _timed(_audit_cmd(ckpt, out / "a", threads), env)))
        spinner = subprocess.Popen([sys.executable, "-c", SPIN])
        try:
            time.sleep(1.0)  # let the spinner show up in /proc/stat
            for label, threads in (("one core spinning, snnsec's choice", None),
                                   (f"one core spinning, torch's default ({cores})", cores)):
                rows.append((label, _timed(_audit_cmd(ckpt, out / "a", threads), env)))
        finally:
            spinner.kill()
            spinner.wait()
        # a second snnsec job: the same audit started first, measured job started a second later
        other = subprocess.Popen(_audit_cmd(ckpt, out / "b", None), env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        try:
            time.sleep(1.0)
            rows.append(("second snnsec audit running, snnsec's choice", _timed(_audit_cmd(ckpt, out / "a", None), env)))
        finally:
            other.wait()
    return rows


def report() -> None:
    rows = measure()
    idle = rows[0][1]
    print("\nthe demo's audit of its backdoored csnn (50 clean samples, NC 6 epochs, margin 150 steps):")
    for label, seconds in rows:
        print(f"  {label:48s} {seconds:6.1f} s  {seconds / idle:4.2f}x idle")
    print("  goal: <= 1.2x idle beside a spinning core and beside a second job")


def test_bench_threads():
    report()


if __name__ == "__main__":
    report()
