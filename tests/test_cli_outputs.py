"""--out and --store are checked before any work starts, with a message and exit 2."""

from __future__ import annotations

import json
import sqlite3

import pytest

from snnsec import results
from snnsec.cli import main


@pytest.fixture
def no_work(monkeypatch):
    import snnsec.train

    def refuse(*a, **k):
        raise AssertionError("the command started working before its outputs were checked")

    monkeypatch.setattr(snnsec.train, "run_training", refuse)


def _train(out, store, *extra):
    return main(["train", "--data", "ndigits", "--epochs", "1", "--out", str(out), "--store", str(store),
                 "--no-progress", *extra])


def _store_with_rows(path):
    rows = results.make_rows(run_id="r", dataset="d", model="m", T=4, seed=0, metrics={f"m{i}": i for i in range(300)},
                             config={"k": 1})
    results.Store(path).append(rows)
    return path


def test_bad_stores_are_refused_before_work(tmp_path, no_work, capsys):
    folder = tmp_path / "store-folder"
    folder.mkdir()
    text = tmp_path / "notes.txt"
    text.write_text("not a database")
    corrupt = _store_with_rows(tmp_path / "corrupt.sqlite")
    con = sqlite3.connect(corrupt)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    raw = bytearray(corrupt.read_bytes())
    raw[4096 : 4096 + 8] = b"\xff" * 8  # the header of page 2, the results table's root
    corrupt.write_bytes(bytes(raw))
    foreign = tmp_path / "foreign.sqlite"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE results (id INTEGER PRIMARY KEY, score REAL)")
    con.close()
    for store, message in [
        (folder, "store-folder: is a folder; expected an SQLite file"),
        (text, "notes.txt: is not an SQLite database"),
        (corrupt, "corrupt.sqlite: "),
        (foreign, "foreign.sqlite: table 'results' lacks column(s) ['run_id'"),
        (text / "below-a-file.sqlite", "cannot be created"),
    ]:
        assert _train(tmp_path / "ck", store) == 2, store
        err = capsys.readouterr().err
        assert "snnsec train: error: results store" in err and message in err, err
    assert not (tmp_path / "ck").exists()
    assert text.read_text() == "not a database"


def test_out_folders_that_are_not_ours_are_refused(tmp_path, no_work, capsys):
    store = tmp_path / "r.sqlite"
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "model.json").write_text("{}")
    (ckpt / "metrics.json").write_text('{"clean_accuracy": 0.97}')
    adversarial = ["attack", "adversarial", str(ckpt), "--out", str(ckpt), "--store", str(store)]
    for extra in ([], ["--overwrite"]):
        assert main(adversarial + extra) == 2
        assert "is a checkpoint folder; this command's adversarial output (its metrics.json) would replace" in capsys.readouterr().err
    assert json.loads((ckpt / "metrics.json").read_text()) == {"clean_accuracy": 0.97}
    assert _train(ckpt, store) == 2
    assert "holds a checkpoint already; add --overwrite" in capsys.readouterr().err
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"jpeg")
    assert _train(mine, store) == 2
    assert "holds files snnsec did not write; add --overwrite" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("x")
    assert _train(tmp_path / "a-file", store) == 2
    assert "is a file; expected a folder" in capsys.readouterr().err
    assert (mine / "holiday.jpg").read_bytes() == b"jpeg"


def test_a_folder_a_command_wrote_is_reused_and_marked(tmp_path, capsys):
    store = _store_with_rows(tmp_path / "r.sqlite")
    out = tmp_path / "rep"
    assert main(["report", "--store", str(store), "--out", str(out)]) == 0
    assert json.loads((out / ".snnsec-out.json").read_text())["writes"] == "report"
    assert main(["report", "--store", str(store), "--out", str(out)]) == 0  # its own folder: fine
    (out / "mine.txt").write_text("x")
    assert main(["audit", "nowhere", "--out", str(out), "--store", str(store)]) == 2
    assert "holds the output of another command (report)" in capsys.readouterr().err
