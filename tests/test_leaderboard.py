"""The leaderboard kind end to end on the embedded ndigits data (tiny settings, fast attacks):
a compressed backbone's cell stores every leaderboard metric; the report draws the table and the
robustness-against-energy scatter from the rows; the RobustBench export writes one JSON per model
and eps with RobustBench's fields and the SNN's."""

from __future__ import annotations

import json

import pytest

from snnsec import bench, results
from snnsec.compress import method_spec
from snnsec.runs.leaderboard import variant_name

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_compress_names():
    assert method_spec("quantize:bits=4") == {"method": "quantize", "bits": 4, "keep_ends": True}
    assert method_spec(None) is None and method_spec("none") is None
    assert method_spec({"method": "binary"}) == {"method": "binary", "keep_ends": True}
    assert variant_name({"model": "csnn", "compress": "prune:sparsity=0.9"}) == "csnn+prune(sparsity=0.9)"
    assert variant_name({"model": "csnn"}) == "csnn"
    with pytest.raises(ValueError, match="expected METHOD:KEY=VALUE"):
        method_spec("prune:0.9")
    with pytest.raises(ValueError, match="keep_ends must be true or false"):
        method_spec("binary:keep_ends=no")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    import os

    root = tmp_path_factory.mktemp("leaderboard")
    old = os.environ.get("SNNSEC_CKPT_CACHE")
    os.environ["SNNSEC_CKPT_CACHE"] = str(root / "ckpt")
    try:
        spec = bench.parse_spec({
            "kind": "leaderboard",
            "base": {"dataset": "ndigits", "model": "csnn", "T": 4, "epochs": 1, "batch_size": 32, "lr": 1e-3,
                     "attacks": "fgsm,pgd", "gradients": ["model", "assg:0.43"], "eps": ["8/255", "32/255"],
                     "fast": True, "n_samples": 16,
                     "energy_samples": 16, "backdoors": ["static"], "audit_samples": 20, "finetune_epochs": 1,
                     "compress": "prune:sparsity=0.5"}}, source="tiny-leaderboard.toml")
        bench.run_spec(spec, store=root / "r.sqlite", progress=False, log=lambda m: None)
    finally:
        if old is None:
            os.environ.pop("SNNSEC_CKPT_CACHE")
        else:
            os.environ["SNNSEC_CKPT_CACHE"] = old
    return root / "r.sqlite"


def test_a_cell_stores_every_leaderboard_metric(store):
    rows = results.Store(store).load(parse_json=True)
    metrics = set(rows["metric"])
    assert {"clean_accuracy", "robust_accuracy@8/255", "robust_accuracy@32/255", "reliable", "attack_forwards_per_sample", "sops",
            "energy_pj", "spike_driven", "asr:static", "audit_backdoored:static", "audit_correct:static"} <= metrics
    extra = rows.iloc[0]["extra"]
    assert extra["variant"] == "csnn+prune(sparsity=0.5)" and extra["compression"]["sparsity"] == 0.5
    v = dict(zip(rows["metric"], rows["value"]))
    assert 0 <= v["robust_accuracy@32/255"] <= v["robust_accuracy@8/255"] <= v["clean_accuracy"] <= 1
    assert v["energy_pj"] > 0 and v["attack_forwards_per_sample"] > 0


def test_report_draws_the_table_and_the_scatter(store):
    from snnsec.report.figures import fig_leaderboard, fig_robustness_energy
    from snnsec.report.tables import leaderboard_table

    df = results.Store(store).load()
    t = leaderboard_table(df)
    assert list(t["variant"]) == ["csnn+prune(sparsity=0.5)"] and t.iloc[0]["n_seeds"] == 1
    assert [c for c in t.columns if c.startswith("robust_accuracy@")] == ["robust_accuracy@8/255", "robust_accuracy@32/255"]
    for fig in (fig_leaderboard(df), fig_robustness_energy(df)):
        assert len(fig.snnsec_rows) == len(df)


def test_robustbench_export(store, tmp_path, capsys):
    from snnsec.cli import main

    assert main(["results", "export", "--format", "robustbench", "--out", str(tmp_path / "rb"), "--store", str(store)]) == 0
    files = sorted((tmp_path / "rb").rglob("*.json"))
    assert [f.relative_to(tmp_path / "rb").as_posix() for f in files] == [
        "ndigits/Linf-32_255/csnn+prune(sparsity=0.5).json", "ndigits/Linf-8_255/csnn+prune(sparsity=0.5).json"]
    entry = json.loads(files[1].read_text())
    assert {"name", "architecture", "dataset", "eps", "clean_acc", "autoattack_acc", "unreliable",
            "number_forward_passes", "snn"} <= set(entry)
    assert entry["architecture"] == "csnn" and entry["snn"]["T"] == 4 and entry["snn"]["neuron"] == "LIFNode"
    assert entry["number_forward_passes"] == 1 and entry["attack_forwards_per_sample"] > 1
    assert entry["snn"]["framing"] == "events" and entry["snn"]["gradient_estimators"] == ["model", "assg:0.43"]
    assert 0 <= entry["autoattack_acc"] <= entry["clean_acc"] <= 100


def test_an_estimator_the_model_refuses_is_named_before_any_training(tmp_path, monkeypatch):
    from snnsec.runs.leaderboard import leaderboard_cell

    monkeypatch.setenv("SNNSEC_CKPT_CACHE", str(tmp_path / "ckpt"))
    cell = {"kind": "leaderboard", "dataset": "ndigits", "model": "psn-csnn", "T": 4, "epochs": 1,
            "gradients": "model,assg:0.43", "seed": 0}
    with pytest.raises(ValueError, match=r"psn-csnn: gradients 'assg:0.43' does not apply .* own \[\[sweep\]\]"):
        leaderboard_cell(cell, progress=False)
    with pytest.raises(ValueError, match="gradient"):
        leaderboard_cell({**cell, "gradients": "assg:0.7"}, progress=False)
    assert not (tmp_path / "ckpt").exists()


def test_an_older_evaluation_setting_of_a_variant_is_never_averaged_in(store):
    # a store that held the spec's cells before the spec changed its attacks keeps those rows
    import pandas as pd

    from snnsec.report.tables import leaderboard_table

    df = results.Store(store).load()
    other = df.assign(attack_params=json.dumps({"attacks": "pgd", "eps": ["8/255"], "gradients": ["model"]}),
                      value=0.0)
    now = leaderboard_table(df).iloc[0]["clean_accuracy"]
    assert now > 0
    older = other.assign(time="2000-01-01T00:00:00+00:00")
    newer = other.assign(time="2999-01-01T00:00:00+00:00")
    assert leaderboard_table(pd.concat([older, df])).iloc[0]["clean_accuracy"] == now
    assert leaderboard_table(pd.concat([df, newer])).iloc[0]["clean_accuracy"] == 0.0
    assert len(leaderboard_table(pd.concat([older, df]))) == 1
