"""The results store: rows in, the same rows out; filters; concurrent writers; export."""

from __future__ import annotations

import json
import multiprocessing as mp
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from snnsec import provenance, results
from snnsec.cli import main


def _rows(run_id="r1", dataset="ndigits", model="csnn", metrics=None, **kw):
    return results.make_rows(run_id=run_id, dataset=dataset, model=model, T=8, seed=3,
                             metrics=metrics or {"clean_accuracy": 0.9, "attack_success_rate": 0.25},
                             config=kw.pop("config", {"lr": 1e-3, "epochs": 2}), **kw)


def test_round_trip_every_column(tmp_path):
    store = results.Store(tmp_path / "r.sqlite")
    rows = _rows(attack="backdoor:static", attack_params={"rate": 0.1}, defense="strip",
                 defense_params={"n": 20}, extra={"note": "x"})
    assert store.append(rows) == 2
    df = results.load(tmp_path / "r.sqlite")
    assert list(df.columns) == list(results.COLUMNS)
    assert df["metric"].tolist() == ["clean_accuracy", "attack_success_rate"]
    assert df["value"].tolist() == [0.9, 0.25]
    r = df.iloc[0]
    assert (r.run_id, r.dataset, r.model, int(r["T"]), int(r.seed), r.attack, r.defense) == \
        ("r1", "ndigits", "csnn", 8, 3, "backdoor:static", "strip")
    assert json.loads(r.attack_params) == {"rate": 0.1}
    assert json.loads(r.defense_params) == {"n": 20}
    assert json.loads(r.config) == {"lr": 1e-3, "epochs": 2}
    assert json.loads(r.versions) == provenance.versions()
    assert json.loads(r.extra) == {"note": "x"}
    assert r.config_hash == results.config_hash({"epochs": 2, "lr": 1e-3})
    assert pd.Timestamp(r.time).tzinfo is not None
    parsed = results.load(tmp_path / "r.sqlite", parse_json=True)
    assert parsed.iloc[0]["attack_params"] == {"rate": 0.1}


def test_store_is_wal_and_nan_survives(tmp_path):
    path = tmp_path / "r.sqlite"
    results.Store(path).append(_rows(metrics={"ssim": float("nan"), "reliable": True}))
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    df = results.load(path)
    assert pd.isna(df["value"].iloc[0]) and df["value"].iloc[1] == 1.0


def test_config_hash_ignores_key_order_and_sees_values():
    a = results.config_hash({"a": 1, "b": {"c": [1, 2], "d": None}})
    assert a == results.config_hash({"b": {"d": None, "c": [1, 2]}, "a": 1})
    assert a != results.config_hash({"a": 1, "b": {"c": [2, 1], "d": None}})
    assert len(a) == 64


def test_filters(tmp_path):
    path = tmp_path / "r.sqlite"
    store = results.Store(path)
    store.append(_rows(run_id="a", dataset="ndigits", model="csnn"))
    store.append(_rows(run_id="b", dataset="nmnist", model="csnn", attack="pgd"))
    store.append(_rows(run_id="c", dataset="nmnist", model="spikformer", metrics={"clean_accuracy": 0.5}))
    assert results.load(path, dataset="nmnist")["run_id"].unique().tolist() == ["b", "c"]
    assert results.load(path, dataset="nmnist", model="csnn")["run_id"].unique().tolist() == ["b"]
    assert results.load(path, run_id=["a", "c"], metric="clean_accuracy")["value"].tolist() == [0.9, 0.5]
    assert results.load(path, attack=None)["run_id"].unique().tolist() == ["a", "c"]
    assert results.load(path, run_id=[]).empty
    with pytest.raises(ValueError, match=r"\[.datset.\] are not columns"):
        results.load(path, datset="x")


def test_has_config(tmp_path):
    store = results.Store(tmp_path / "r.sqlite")
    h = results.config_hash({"cell": 1})
    assert not store.has_config(h)  # no file yet: nothing is done
    store.append(_rows(config={"cell": 1}))
    assert store.has_config(h)
    assert not store.has_config(results.config_hash({"cell": 2}))


def test_bad_rows_write_nothing(tmp_path):
    path = tmp_path / "r.sqlite"
    good = _rows()
    with pytest.raises(ValueError, match=r"row 2: unknown column\(s\) \['colour'\]"):
        results.Store(path).append(good + [{**good[0], "colour": "red"}])
    with pytest.raises(ValueError, match=r"row 0: missing \['metric'\]"):
        results.Store(path).append([{k: v for k, v in good[0].items() if k != "metric"}])
    with pytest.raises(ValueError, match="metric 'acc' must be a number"):
        _rows(metrics={"acc": "high"})
    assert not path.exists() or results.load(path).empty


def test_missing_store_is_an_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results store at .*nope.sqlite"):
        results.load(tmp_path / "nope.sqlite")
    assert not (tmp_path / "nope.sqlite").exists()


def test_default_path_env_and_cwd(monkeypatch, tmp_path):
    monkeypatch.setenv("SNNSEC_STORE", str(tmp_path / "x.sqlite"))
    assert results.default_store_path() == tmp_path / "x.sqlite"
    monkeypatch.delenv("SNNSEC_STORE")
    assert results.default_store_path() == Path("reports/results.sqlite")


def _writer(path: str, worker: int, n: int) -> None:
    store = results.Store(path)
    for i in range(n):
        store.append(_rows(run_id=f"w{worker}-{i}", config={"worker": worker, "i": i}))


def test_concurrent_writers(tmp_path):
    path = str(tmp_path / "r.sqlite")
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(path, w, 15)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    df = results.load(path)
    assert len(df) == 4 * 15 * 2
    assert sorted(df["run_id"].unique()) == sorted(f"w{w}-{i}" for w in range(4) for i in range(15))
    # each append was one transaction: a run's two rows are adjacent, never interleaved
    ids = df["run_id"].tolist()
    assert all(ids[k] == ids[k + 1] for k in range(0, len(ids), 2))


def test_export_csv_and_cli(tmp_path, monkeypatch):
    path = tmp_path / "r.sqlite"
    results.Store(path).append(_rows(run_id="a") + _rows(run_id="b", dataset="nmnist"))
    out = results.export(tmp_path / "all.csv", path=path)
    back = pd.read_csv(out)
    assert back["run_id"].tolist() == ["a", "a", "b", "b"] and back["value"].tolist() == [0.9, 0.25, 0.9, 0.25]
    monkeypatch.setenv("SNNSEC_STORE", str(path))
    assert main(["results", "export", "--out", str(tmp_path / "n.csv"), "--dataset", "nmnist"]) == 0
    assert pd.read_csv(tmp_path / "n.csv")["run_id"].tolist() == ["b", "b"]
    with pytest.raises(ValueError, match="expected one of"):
        results.export(tmp_path / "x.xlsx", path=path)


def test_export_parquet(tmp_path):
    path = tmp_path / "r.sqlite"
    results.Store(path).append(_rows())
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="pip install pyarrow"):
            results.export(tmp_path / "r.parquet", path=path)
        assert main(["results", "export", "--store", str(path), "--out", str(tmp_path / "r.parquet")]) == 2
        assert not (tmp_path / "r.parquet").exists()
        return
    out = results.export(tmp_path / "r.parquet", path=path)
    assert pd.read_parquet(out)["value"].tolist() == [0.9, 0.25]
