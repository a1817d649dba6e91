"""The thread budget: who decides, and how idle cores are counted."""

from __future__ import annotations

import pytest

from snnsec import threads


def _stat(tmp_path, name, rows):
    p = tmp_path / name
    p.write_text("cpu  0 0 0 0 0 0 0 0 0 0\n" + "".join(
        f"cpu{i} {busy} 0 0 {idle} 0 0 0 0 0 0\n" for i, (busy, idle) in enumerate(rows)) + "intr 0\n")
    return str(p)


def test_precedence_flag_env_omp_then_measured():
    env = {"SNNSEC_THREADS": "3", "OMP_NUM_THREADS": "5"}
    assert threads.choose(2, environ=env) == (2, "--threads")
    assert threads.choose(None, environ=env) == (3, "SNNSEC_THREADS")
    assert threads.choose(None, environ={"OMP_NUM_THREADS": "5"}) == (5, "OMP_NUM_THREADS")
    n_allowed = len(threads.allowed_cores())
    n, why = threads.choose(None, environ={}, measure=lambda: 0)
    assert n == 1 and why == f"0 of {n_allowed} allowed cores idle"  # never fewer than one
    assert threads.choose(None, environ={}, measure=lambda: 99)[0] == n_allowed  # never more than allowed
    assert threads.choose(None, environ={}, measure=lambda: None) == (1, "idle cores unknown")
    with pytest.raises(ValueError, match="SNNSEC_THREADS: expected a number of threads >= 1, got 'many'"):
        threads.choose(None, environ={"SNNSEC_THREADS": "many"})
    with pytest.raises(ValueError, match="OMP_NUM_THREADS: expected a number of threads >= 1, got 0"):
        threads.choose(None, environ={"OMP_NUM_THREADS": "0"})


def test_idle_cores_are_counted_from_proc_stat(tmp_path, monkeypatch):
    monkeypatch.setattr(threads, "allowed_cores", lambda: [0, 1, 2])
    assert threads.free_cores(sample=0.0, path=str(tmp_path / "missing")) is None
    samples = iter([
        _stat(tmp_path, "a", [(100, 100), (100, 100), (100, 100)]),
        # over the window cpu0 was 90 % busy, cpu1 10 %, cpu2 60 %: one core is free
        _stat(tmp_path, "b", [(190, 110), (110, 190), (160, 140)]),
    ])
    real = threads._cpu_times
    monkeypatch.setattr(threads, "_cpu_times", lambda path="/proc/stat": real(next(samples)))
    assert threads.free_cores(sample=0.0) == 1


def test_cli_sizes_torch_once_at_entry(monkeypatch, tmp_path, capsys):
    import torch

    from snnsec.cli import main

    seen = []
    monkeypatch.setattr(threads, "apply", lambda n: seen.append(n))
    monkeypatch.setenv("SNNSEC_THREADS", "2")
    assert main(["eval", str(tmp_path / "missing"), "--store", str(tmp_path / "r.sqlite")]) == 2
    assert seen == [2]
    assert main(["eval", str(tmp_path / "missing"), "--threads", "1", "--store", str(tmp_path / "r.sqlite")]) == 2
    assert seen == [2, 1]
    assert main(["models"]) == 0 and seen == [2, 1]  # listing computes nothing
    assert torch.get_num_threads() == 1  # the stub kept the test's own setting
