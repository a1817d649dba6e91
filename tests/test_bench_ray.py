"""Cells as Ray tasks on a real local Ray cluster (no mock): the same rows as the sequential run,
a killed worker retried with every cell stored once, a cell's error raised as it was."""

from __future__ import annotations

import os
import signal
import textwrap
import threading
import time

import pytest

from snnsec import bench, results

pytest.importorskip("ray", reason="Ray is not installed (pip install 'snnsec[ray]')")

PLUGIN = '''
import os, time
from pathlib import Path
from snnsec.bench import register_kind

def ray_toy(cell, *, progress=True):
    import torch
    marks = Path(os.environ["RAY_TOY_DIR"])
    if cell["a"] == cell.get("slow_cell"):
        first = not (marks / "attempted").exists()
        (marks / "attempted").touch()
        if first:  # the first attempt waits to be killed; the retry finishes
            (marks / f"pid-{os.getpid()}").touch()
            time.sleep(120)
    if cell["a"] == cell.get("failing_cell"):
        raise ValueError("ray_toy: cell a=3 is broken on purpose")
    return {"metrics": {"value": cell["a"] * 10 + cell["seed"], "threads": float(torch.get_num_threads())},
            "groups": [{"metrics": {"half": cell["a"] / 2}, "extra": {"part": 1}}]}

register_kind("ray_toy", ray_toy)
'''


@pytest.fixture()
def toy(tmp_path, monkeypatch):
    (tmp_path / "raytoycells.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    # the local cluster's workers inherit the driver's environment, so they import the plugin too
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("RAY_TOY_DIR", str(tmp_path))

    def spec(**base):
        path = tmp_path / "toy.toml"
        extra = "".join(f"{k} = {v}\n" for k, v in base.items())
        path.write_text(textwrap.dedent('''
            kind = "ray_toy"
            plugins = ["raytoycells"]
            [base]
            dataset = "none"
            model = "none"
            ''') + extra + "[[sweep]]\na = [1, 2, 3, 4]\n")
        return path

    return spec


def _cells(path) -> list[tuple]:
    df = results.load(path)
    return sorted((r.config_hash, r.metric, r.value) for r in df.itertuples())


def test_two_workers_give_the_sequential_rows(toy, tmp_path):
    spec = toy()
    bench.run_spec(spec, store=tmp_path / "seq.sqlite", progress=False, log=lambda m: None)
    s = bench.run_spec(spec, store=tmp_path / "ray.sqlite", progress=False, log=lambda m: None, workers=2)
    assert (s.total, s.ran, s.skipped) == (4, 4, 0)
    assert _cells(tmp_path / "ray.sqlite") == _cells(tmp_path / "seq.sqlite")
    df = results.load(tmp_path / "ray.sqlite")
    # every task sized torch to its share of the cores: one CPU, one thread
    assert set(df[df.metric == "threads"].value) == {1.0}
    # a second run finds every cell stored and runs none
    again = bench.run_spec(spec, store=tmp_path / "ray.sqlite", progress=False, log=lambda m: None, workers=2)
    assert (again.ran, again.skipped) == (0, 4)


def test_a_worker_killed_mid_cell_is_retried_and_every_cell_is_stored_once(toy, tmp_path):
    spec = toy(slow_cell=2)

    def kill_the_slow_worker():
        deadline = time.time() + 120
        while time.time() < deadline:
            pids = list(tmp_path.glob("pid-*"))
            if pids:
                os.kill(int(pids[0].name.split("-")[1]), signal.SIGKILL)
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_the_slow_worker, daemon=True)
    killer.start()
    s = bench.run_spec(spec, store=tmp_path / "s.sqlite", progress=False, log=lambda m: None, workers=2)
    killer.join(timeout=1)
    assert list(tmp_path.glob("pid-*")), "the slow cell never started"
    assert (s.ran, s.skipped) == (4, 0)
    df = results.load(tmp_path / "s.sqlite")
    per_cell = df.groupby("config_hash").metric.count()
    assert len(per_cell) == 4 and set(per_cell) == {3}  # value, threads, half: once each


def test_a_failing_cell_stops_the_run_with_its_error_and_releases_its_claim(toy, tmp_path):
    spec = toy(failing_cell=3)
    store = tmp_path / "s.sqlite"
    with pytest.raises(ValueError, match="cell a=3 is broken on purpose"):
        bench.run_spec(spec, store=store, progress=False, log=lambda m: None, workers=2)
    st = results.Store(store)
    for cell in bench.load_spec(spec).cells:
        h = bench.cell_hash(cell)
        assert st.holder(h) is None or st.has_config(h)


def test_resources_are_checked_and_not_part_of_a_cell(tmp_path):
    base = 'kind = "x"\n[base]\ndataset = "d"\nmodel = "m"\n'
    s = bench.parse_spec({"kind": "x", "base": {"dataset": "d", "model": "m"}, "resources": {"num_cpus": 2}})
    assert s.resources == {"num_cpus": 2, "num_gpus": 0} and "num_cpus" not in s.cells[0]
    for bad, msg in (({"num_cpus": 0}, "num_cpus must be a number > 0"), ({"gpus": 1}, "unknown field"),
                     ({"num_gpus": -1}, "num_gpus must be a number >= 0")):
        p = tmp_path / "bad.toml"
        p.write_text(base + "[resources]\n" + "".join(f"{k} = {v}\n" for k, v in bad.items()))
        with pytest.raises(ValueError, match=msg):
            bench.load_spec(p)


def test_address_joins_a_running_cluster(toy, tmp_path, monkeypatch):
    import subprocess
    import sys

    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    monkeypatch.setenv("RAY_worker_niceness", "0")
    started = subprocess.run([ray_cli, "start", "--head", "--port", "6389", "--num-cpus", "2", "--include-dashboard",
                              "false", "--disable-usage-stats"], capture_output=True, text=True)
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        s = bench.run_spec(toy(), store=tmp_path / "s.sqlite", progress=False, log=lambda m: None, address="auto")
        assert (s.ran, s.skipped) == (4, 0)
        assert len(results.load(tmp_path / "s.sqlite").config_hash.unique()) == 4
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True)
