"""Spec expansion, the kind registry, and resuming a killed sweep without duplicates."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from snnsec import bench, results

SPEC = """
kind = "{kind}"
seeds = [0, 1]
plugins = [{plugins}]
[base]
dataset = "toy"
model = "tiny"
T = 4
[[sweep]]
trigger = ["static", "moving"]
rate = [0.01, 0.1]
[[sweep]]
trigger = "smart"
rate = [0.1]
"""


def write_spec(tmp_path: Path, kind: str, plugins: str = "") -> Path:
    p = tmp_path / "spec.toml"
    p.write_text(SPEC.format(kind=kind, plugins=plugins))
    return p


def test_spec_expands_sweeps_times_seeds(tmp_path):
    spec = bench.load_spec(write_spec(tmp_path, "toy"))
    assert len(spec.cells) == (2 * 2 + 1) * 2
    assert spec.cells[0] == {"kind": "toy", "dataset": "toy", "model": "tiny", "T": 4, "trigger": "static", "rate": 0.01, "seed": 0}
    assert len({bench.cell_hash(c) for c in spec.cells}) == len(spec.cells)


def test_a_sweep_may_list_its_own_seeds():
    spec = bench.parse_spec({"kind": "k", "seeds": [7], "base": {"dataset": "d", "model": "m"},
                             "sweep": [{"case": "clean", "seed": [0, 1, 2]}, {"case": "static"}]})
    assert [(c["case"], c["seed"]) for c in spec.cells] == [("clean", 0), ("clean", 1), ("clean", 2), ("static", 7)]
    with pytest.raises(ValueError, match=r"sweep 1: field 'seed' must be an integer"):
        bench.parse_spec({"kind": "k", "base": {"dataset": "d", "model": "m"}, "sweep": [{"seed": ["x"]}]})


def test_zoo_spec_has_four_architectures_of_eleven_models():
    from pathlib import Path

    spec = bench.load_spec(Path(__file__).parent.parent / "defenses" / "zoo-nmnist.toml")
    assert spec.kind == "audit" and len(spec.cells) == 44
    by_model = {}
    for c in spec.cells:
        by_model.setdefault(c["model"], []).append(c)
    assert sorted(by_model) == ["csnn", "plain-lif", "psn-csnn", "spikformer"]
    for cells in by_model.values():
        assert sum(c["rate"] == 0.0 and c["trigger"] != "dynamic" for c in cells) == 5
        assert {c["case"] for c in cells} == {"clean", "static", "moving", "smart", "flash", "off-corner", "dynamic"}
    targets = {c["target"] for c in spec.cells if c["case"] != "clean"}
    assert targets == set(range(10))  # the backdoors' targets cover every class


def test_spec_errors_name_file_and_field(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        bench.parse_spec({"base": {}}, source="x.toml")
    with pytest.raises(ValueError, match=r"x.toml.*unknown top-level field\(s\) \['grid'\]"):
        bench.parse_spec({"kind": "a", "grid": {}}, source="x.toml")
    with pytest.raises(ValueError, match=r"without \['model'\]"):
        bench.parse_spec({"kind": "a", "base": {"dataset": "d"}}, source="x.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("kind = ")
    with pytest.raises(ValueError, match="bad.toml: not valid TOML"):
        bench.load_spec(bad)
    with pytest.raises(FileNotFoundError):
        bench.load_spec(tmp_path / "missing.toml")
    with pytest.raises(ValueError, match="unknown cell kind 'nope'"):
        bench.get_kind("nope")


def test_backdoor_kind_is_discovered():
    assert "backdoor" in bench.kinds()


def test_interrupted_sweep_resumes_without_duplicates(tmp_path):
    calls = []

    def toy(cell, *, progress=True):
        calls.append(bench.cell_hash(cell))
        if len(calls) == 4 and not getattr(toy, "interrupted", False):
            toy.interrupted = True
            raise KeyboardInterrupt  # a Ctrl-C in the middle of the 4th cell
        return {"metrics": {"clean_accuracy": 0.5, "attack_success_rate": cell["rate"]}}

    bench.register_kind("toy-interrupt", toy)
    store = tmp_path / "r.sqlite"
    spec = write_spec(tmp_path, "toy-interrupt")
    with pytest.raises(KeyboardInterrupt):
        bench.run_spec(spec, store=store, log=lambda m: None)
    assert len(results.load(store)) == 3 * 2
    s = bench.run_spec(spec, store=store, log=lambda m: None)
    assert (s.total, s.skipped, s.ran) == (10, 3, 7)
    s = bench.run_spec(spec, store=store, log=lambda m: None)
    assert (s.skipped, s.ran) == (10, 0)
    df = results.load(store)
    assert len(df) == 10 * 2
    # Only the interrupted cell ran twice; every finished cell ran once.
    assert len(calls) == 11 and len(set(calls)) == 10


PLUGIN = """
import time
from snnsec.bench import register_kind

def slow(cell, *, progress=True):
    time.sleep(0.4)
    return {"metrics": {"clean_accuracy": 0.9, "attack_success_rate": float(cell["rate"])}}

register_kind("toy-slow", slow)
"""


def test_sigkilled_sweep_resumes_without_duplicates(tmp_path):
    (tmp_path / "toy_slow_kind.py").write_text(textwrap.dedent(PLUGIN))
    spec = write_spec(tmp_path, "toy-slow", plugins='"toy_slow_kind"')
    store = tmp_path / "r.sqlite"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "snnsec", "bench", str(spec), "--store", str(store)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if len(results.load(store)) >= 2 * 2:
                break
        except (FileNotFoundError, ValueError):  # not created yet, or its table not yet
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(results.load(store)) // 2
    assert 2 <= done_before < 10, proc.stderr.read().decode()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"{done_before} already done, {10 - done_before} run now" in out.stdout
    df = results.load(store)
    assert len(df) == 10 * 2
    assert len(df.drop_duplicates(subset=[c for c in df.columns if c in ("config_hash", "metric")])) == len(df)


LOGGING_PLUGIN = """
import os, time
from snnsec.bench import register_kind

def logged(cell, *, progress=True):
    # one line per execution, so the test can count how often each cell really ran
    with open(os.environ["RUN_LOG"], "a") as fh:
        fh.write(f"{cell['trigger']}-{cell['rate']}-{cell['seed']} {os.getpid()}\\n")
    time.sleep(float(os.environ.get("CELL_SECONDS", "0.3")))
    return {"metrics": {"clean_accuracy": 0.9, "attack_success_rate": float(cell["rate"])}}

register_kind("toy-logged", logged)
"""


def _runners(tmp_path, n):
    (tmp_path / "toy_logged_kind.py").write_text(textwrap.dedent(LOGGING_PLUGIN))
    spec = write_spec(tmp_path, "toy-logged", plugins='"toy_logged_kind"')
    log = tmp_path / "runs.log"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "RUN_LOG": str(log)}
    cmd = [sys.executable, "-m", "snnsec", "bench", str(spec), "--store", str(tmp_path / "r.sqlite"), "--no-progress"]
    return [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(n)], log


@pytest.mark.parametrize("n_runners", [2, 3])
def test_concurrent_runners_split_a_grid_and_run_no_cell_twice(tmp_path, n_runners):
    procs, log = _runners(tmp_path, n_runners)
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    executions = log.read_text().splitlines()
    cells = [line.split()[0] for line in executions]
    assert len(cells) == 10 and len(set(cells)) == 10  # every cell ran, and ran once
    assert len({line.split()[1] for line in executions}) >= 2  # the work was shared
    df = results.load(tmp_path / "r.sqlite")
    assert len(df) == 10 * 2 and df.groupby("config_hash").run_id.nunique().max() == 1
    ran = sum(int(o[0].rsplit(" run now", 1)[0].rsplit(", ", 1)[-1]) for o in outs)
    assert ran == 10


def test_a_stalled_runners_claim_is_taken_over_after_its_lease(tmp_path):
    calls = []

    def toy(cell, *, progress=True):
        calls.append(bench.cell_hash(cell))
        return {"metrics": {"clean_accuracy": 0.5}}

    bench.register_kind("toy-claims", toy)
    spec = bench.load_spec(write_spec(tmp_path, "toy-claims"))
    store = results.Store(tmp_path / "r.sqlite")
    first = bench.cell_hash(spec.cells[0])
    # a runner on another machine claimed the first cell, then went silent
    assert store.claim(first, "elsewhere:123:abc", lease=1.0)
    assert not store.claim(first, "me:1:x", lease=60.0)  # its heartbeat is fresh
    t0 = time.time()
    s = bench.run_spec(spec, store=store.path, log=lambda m: None, lease=1.0)
    assert (s.ran, s.skipped) == (10, 0) and len(calls) == 10
    assert time.time() - t0 >= 0.5  # the first cell waited for the lease to run out
    assert store.holder(first) is None
    # a claim whose owner process on this machine is gone is taken over at once
    import socket

    spec2 = bench.parse_spec({"kind": "toy-claims", "base": {"dataset": "d", "model": "m"}, "sweep": [{"case": "x"}]})
    h = bench.cell_hash(spec2.cells[0])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    store.claim(h, f"{socket.gethostname()}:{int(dead.stdout)}:zzz", lease=3600)
    assert bench.run_spec(spec2, store=store.path, log=lambda m: None, lease=3600).ran == 1


def test_attack_subparsers_are_shared_by_modules():
    import argparse

    from snnsec.cli import build_parser
    from snnsec.cli.attack import attack_subparsers

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    first = attack_subparsers(sub)
    first.add_parser("backdoor")
    assert attack_subparsers(sub) is first
    attack_subparsers(sub).add_parser("adversarial")  # what a second module does
    assert parser.parse_args(["attack", "adversarial"]).attack == "adversarial"

    args = build_parser().parse_args(["attack", "backdoor", "--data", "ndigits", "--trigger", "moving", "--direction", "vertical", "--out", "o"])
    from snnsec.cli.attack import config_from_args

    cfg = config_from_args(args)
    assert (cfg.trigger, cfg.trigger_params, cfg.rate, cfg.target) == ("moving", {"direction": "vertical"}, 0.1, 0)


def test_cell_row_groups_share_run_and_config_and_resume(tmp_path):
    def grouped(cell, *, progress=True):
        return {"metrics": {"clean_accuracy": 0.5}, "attack": f"backdoor:{cell['trigger']}",
                "attack_params": {"trigger": cell["trigger"], "rate": cell["rate"]},
                "groups": [{"metrics": {"firing_rate": 0.1 * i}, "extra": {"layer": f"sn{i}", "triggered": True}}
                           for i in range(2)] + [{"metrics": {"strip_threshold": 0.3}, "defense": "strip"}]}

    bench.register_kind("toy-groups", grouped)
    store = tmp_path / "r.sqlite"
    s = bench.run_spec(write_spec(tmp_path, "toy-groups"), store=store, log=lambda m: None)
    assert s.ran == 10
    df = results.load(store, parse_json=True)
    assert len(df) == 10 * 4
    # One run id and one config hash per cell, whatever group a row came from.
    per_cell = df.groupby("config_hash")
    assert per_cell["run_id"].nunique().eq(1).all() and per_cell.size().eq(4).all()
    fr = df[df["metric"] == "firing_rate"]
    assert sorted({e["layer"] for e in fr["extra"]}) == ["sn0", "sn1"] and set(fr["attack"]) == {"backdoor:static", "backdoor:moving", "backdoor:smart"}
    # A group's keys replace the cell's: the threshold row names its defense; the others inherit none.
    assert set(df.loc[df["metric"] == "strip_threshold", "defense"]) == {"strip"} and fr["defense"].isna().all()
    assert all(a["rate"] in (0.01, 0.1) for a in fr["attack_params"])
    s = bench.run_spec(write_spec(tmp_path, "toy-groups"), store=store, log=lambda m: None)
    assert (s.skipped, s.ran) == (10, 0)


@pytest.mark.parametrize("groups, msg", [
    ({"metrics": {}}, "'groups' must be a list"),
    ([{"metrics": {}}], r"groups\[0\]: 'metrics' must be a non-empty dict"),
    ([{"metrics": {"a": 1.0}, "colour": "red"}], r"groups\[0\]: unknown key\(s\) \['colour'\]"),
    (["x"], r"groups\[0\]: expected a dict"),
])
def test_bad_row_groups_are_refused(groups, msg):
    cell = {"kind": "toy", "dataset": "d", "model": "m", "seed": 0}
    with pytest.raises(ValueError, match=msg):
        bench.rows_for_cell(cell, {"metrics": {"a": 1.0}, "groups": groups})
