"""The report folder and ``snnsec report``: full, partial and empty stores, filters, and a
report.html that needs nothing outside itself."""

from __future__ import annotations

import re
import sqlite3

import pandas as pd
import pytest
import report_rows as R

from snnsec import results
from snnsec.cli import main
from snnsec.report import build_report, render
from snnsec.report.schema import FIGURES

FIG_NAMES = [f.name for f in FIGURES]


@pytest.fixture(scope="module")
def full_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("full") / "results.sqlite"
    results.Store(path).append(R.all_rows())
    return path


@pytest.fixture(scope="module")
def full_report(full_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return build_report(out, store=full_store)


def _external_refs(html: str) -> list[str]:
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", html, flags=re.I)
    refs += re.findall(r"url\(([^)]*)\)", html, flags=re.I)
    return [r for r in refs if not (r.startswith("data:") or r.startswith("#"))]


def test_full_store_renders_every_figure(full_report):
    rep = full_report
    assert [f.name for f in rep.drawn] == FIG_NAMES and not rep.missing
    for name in FIG_NAMES:
        png = rep.out_dir / "figures" / f"{name}.png"
        pdf = rep.out_dir / "figures" / f"{name}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert pdf.read_bytes()[:5] == b"%PDF-"
    assert not list(rep.out_dir.rglob(".*"))  # no temporary files left behind


def test_report_html_is_self_contained(full_report):
    html = full_report.html.read_text(encoding="utf-8")
    assert _external_refs(html) == []
    assert html.count('src="data:image/png;base64,') == len(FIG_NAMES)
    assert "<script" not in html.lower() and "<link" not in html.lower()


def test_report_shows_settings_versions_and_unreliable_runs(full_report):
    html = full_report.html.read_text(encoding="utf-8")
    assert full_report.unreliable == {"adv-resnet": "unreliable: loss does not rise with eps",
                                      "lb-csnn+binary-1": "unreliable"}
    assert "Unreliable evaluations" in html and "adv-resnet" in html and "loss does not rise with eps" in html
    # Settings behind each number: params, seeds, config hashes and versions of the plotted rows.
    assert "rate=0.05" in html and "trigger=static" in html and "eps_label=4/255" in html
    assert "torch 2.13.0" in html
    assert "<th>config_hash</th>" in html and "<th>seed</th>" in html
    md = full_report.summary_md.read_text(encoding="utf-8")
    assert "## Backdoor attacks" in md and "## Adversarial robustness" in md and "## Hardening recipes" in md
    assert "adv-resnet" in md
    summary = render.summary_tables(R.frame(R.all_rows()))
    adv = summary["adversarial"]
    assert "unreliable" in adv.columns
    flagged = adv[adv["unreliable"] != ""]
    assert set(flagged["model"]) == {"resnet"}


def test_results_csv_is_tidy_and_complete(full_report, full_store):
    csv = pd.read_csv(full_report.csv)
    stored = results.load(full_store)
    assert list(csv.columns) == list(results.COLUMNS)
    assert len(csv) == len(stored)
    assert sorted(csv["value"].round(12)) == sorted(stored["value"].round(12))


def test_summary_tables_hold_means_over_seeds():
    rows = R.backdoor_rows()
    t = render.summary_tables(R.frame(rows))["backdoor"]
    line = t[t["attack_params"].str.contains("rate=0.1") & (t["attack"] == "backdoor:static")].iloc[0]
    vals = [r["value"] for r in rows if r["attack"] == "backdoor:static" and r["attack_params"]["rate"] == 0.1
            and r["metric"] == "attack_success_rate"]
    assert line["attack_success_rate"].startswith(f"{sum(vals) / len(vals):.4g} ± ")
    assert line["attack_success_rate"].endswith("(n=2)")
    assert line["seeds"] == "0, 1"


def test_empty_store_gives_a_report_that_says_so(tmp_path):
    store = tmp_path / "empty.sqlite"
    results.Store(store).append([R.row("ssim", 1.0)])
    with sqlite3.connect(store) as con:
        con.execute("DELETE FROM results")
    rep = build_report(tmp_path / "out", store=store)
    assert rep.n_rows == 0 and not rep.drawn and len(rep.missing) == len(FIGURES)
    html = rep.html.read_text(encoding="utf-8")
    assert "The store holds no rows" in html
    for f in FIGURES:
        assert f.title in html
    assert pd.read_csv(rep.csv).empty
    assert "Missing figures" in rep.summary_md.read_text(encoding="utf-8")


def test_no_rows_at_all_and_missing_default_store(tmp_path, monkeypatch):
    rep = render.render_report(None, tmp_path / "none")
    assert rep.n_rows == 0 and "The store holds no rows" in rep.html.read_text(encoding="utf-8")
    monkeypatch.setenv("SNNSEC_STORE", str(tmp_path / "not-yet.sqlite"))
    rep = build_report(tmp_path / "default")
    assert rep.n_rows == 0 and "does not exist yet" in rep.html.read_text(encoding="utf-8")


def test_partial_store_lists_what_is_missing_and_drops_stale_figures(tmp_path, full_report):
    out = tmp_path / "out"
    # An earlier report in the same folder, with figures the partial store cannot draw.
    render.render_report(R.frame(R.defense_rows()), out)
    assert (out / "figures" / "strip_entropy.png").exists() and (out / "figures" / "anomaly_index.pdf").exists()
    store = tmp_path / "partial.sqlite"
    results.Store(store).append(R.backdoor_rows() + R.adversarial_rows())
    rep = build_report(out, store=store)
    assert [f.name for f in rep.drawn] == ["backdoor_rate", "robust_accuracy"]
    html = rep.html.read_text(encoding="utf-8")
    assert "Missing figures" in html and "strip_entropy" in html and "run the STRIP defense" in html
    assert not (out / "figures" / "strip_entropy.png").exists()
    assert not (out / "figures" / "anomaly_index.pdf").exists()
    assert (out / "figures" / "backdoor_rate.pdf").exists()


def test_a_malformed_row_is_reported_not_fatal(tmp_path):
    bad = R.row("gallery_clip", 4, attack="backdoor:static", attack_params={"trigger": "static"},
                extra={"variant": "clean", "frames": [1, 2, 3]})
    rep = render.render_report(R.frame(R.backdoor_rows() + [bad]), tmp_path)
    (gal,) = [f for f in rep.missing if f.name == "trigger_gallery"]
    assert "could not be drawn" in gal.missing and "[T][P][H][W]" in gal.missing
    assert "backdoor_rate" in [f.name for f in rep.drawn]


def test_filters(full_store, tmp_path):
    df, _ = render.load_rows(full_store, ["model=resnet"])
    assert set(df["model"]) == {"resnet"}
    df, _ = render.load_rows(full_store, ["attack_params.trigger=static", "attack_params.trigger=moving", "metric=clean_accuracy"])
    assert set(df["attack"]) == {"backdoor:static", "backdoor:moving"} and set(df["metric"]) == {"clean_accuracy"}
    df, _ = render.load_rows(full_store, ["T=8", "defense=none", "seed=1"])
    assert len(df) and df["defense"].isna().all() and set(df["seed"]) == {1}
    with pytest.raises(ValueError, match="unknown column 'colour'"):
        render.load_rows(full_store, ["colour=red"])
    with pytest.raises(ValueError, match="expected key=value"):
        render.load_rows(full_store, ["model"])
    with pytest.raises(FileNotFoundError, match="results store not found"):
        render.load_rows(tmp_path / "typo.sqlite")


def test_cli_report(full_store, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["report", "--store", str(full_store), "--filter", "dataset=ndigits", "--filter", "model=resnet",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"of {len(FIGURES)} figures drawn" in printed and "report.html" in printed
    assert "missing: Clean accuracy and attack success rate against poison rate" in printed
    assert "1 run(s) flagged unreliable: adv-resnet" in printed
    assert (out / "report.html").is_file() and (out / "summary.html").is_file()
    assert main(["report", "--store", str(tmp_path / "nope.sqlite"), "--out", str(out)]) == 2
    assert "snnsec report: error: results store not found" in capsys.readouterr().err
    assert main(["report", "--store", str(full_store), "--filter", "x=1", "--out", str(out)]) == 2
    capsys.readouterr()
    (tmp_path / "file").write_text("x")
    assert main(["report", "--store", str(full_store), "--out", str(tmp_path / "file")]) == 2
    assert "file: is a file; expected a folder" in capsys.readouterr().err


def test_gallery_pngs_stay_small(tmp_path):
    paths = render.save_gallery(R.frame(R.all_rows()), tmp_path, max_bytes=120_000)
    assert sorted(p.stem for p in paths) == sorted(FIG_NAMES)
    assert all(p.stat().st_size <= 120_000 for p in paths)
