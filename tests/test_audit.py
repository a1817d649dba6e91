"""``snnsec audit``: verdicts, exit codes, report files, refusal of pickles, user architectures."""

from __future__ import annotations

import base64
import json
import pickle

import pytest
import torch

from defense_helpers import K, synthetic, train_tiny
from snnsec import audit as audit_mod
from snnsec import checkpoint
from snnsec.cli import main
from snnsec.data.spec import DataSpec

TARGET = 2
SPEC = DataSpec(name="tiny-synthetic", sensor_size=(12, 12, 2), T=4, classes=tuple(str(c) for c in range(K)))
# A user architecture, named as "module:function" (tests/ is on sys.path under pytest).
ARCH = "defense_helpers:tiny_factory"
# The tiny model needs far fewer NC steps than a real one.
FAST = ["--param", "nc.epochs=6", "--param", "nc.batches_per_epoch=4", "--param", "nc.batch_size=12"]


@pytest.fixture(scope="module", autouse=True)
def tiny_registered():
    # A checkpoint's "module:function" is never imported on its say-so; registering the
    # factory (as a user's own code would) is one of the ways to allow it.
    from defense_helpers import tiny_factory
    from snnsec import models

    models.register("tiny-test-net", tiny_factory, "the tests' tiny user architecture", replace=True)
    yield
    models._REGISTRY.pop("tiny-test-net", None)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    x, y = synthetic(n_per_class=24, seed=0)
    root = tmp_path_factory.mktemp("ckpts")
    # Seed 1: on this tiny 8-class net the margin test, which decides the verdict, flags 4 of 6
    # planted backdoors (seeds 0-5; it misses seeds 0 and 5, p = 0.31 and 0.10, though its top
    # class is the target in all six) and none of 6 clean nets.
    bd, _ = train_tiny(x, y, seed=1, poison_target=TARGET)
    cl, _ = train_tiny(x, y, seed=1)
    return {"backdoored": checkpoint.save(root / "bd", bd, arch=ARCH, arch_kwargs={}, spec=SPEC, recipe={},
                                          attack={"target": TARGET}),
            "clean": checkpoint.save(root / "clean", cl, arch=ARCH, arch_kwargs={}, spec=SPEC, recipe={})}


@pytest.fixture
def synthetic_clean_set(monkeypatch):
    # The checkpoints' dataset is synthetic, so stand in for the loader the CLI uses.
    x, y = synthetic(n_per_class=8, seed=5)
    monkeypatch.setattr(audit_mod, "clean_samples", lambda meta, n, **kw: (x[:n], y[:n], "tiny-synthetic test split"))


def _png_ok(data: bytes) -> bool:
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def test_backdoored_checkpoint_exits_1_with_target_and_report(ckpts, synthetic_clean_set, tmp_path, capsys):
    out = tmp_path / "a"
    rc = main(["audit", str(ckpts["backdoored"]), "--out", str(out), "--clean-samples", "64", "--no-progress", *FAST,
               "--param", "margin.steps=100"])
    assert rc == 1
    v = json.loads((out / "verdict.json").read_text())
    assert v["backdoored"] is True and v["target"] == TARGET
    assert set(v["evidence"]) == {"nc", "margin"}
    assert v["evidence"]["nc"]["target"] == TARGET and v["evidence"]["nc"]["statistic"] > 2
    assert "p_value" in v["evidence"]["margin"] and v["clean_samples"] == 64
    for name in ("nc_anomaly", "nc_triggers", "margin_distribution"):
        assert _png_ok((out / f"{name}.png").read_bytes())
    md = (out / "report.md").read_text()
    assert "BACKDOOR found, target class 2" in md and "nc_anomaly.png" in md
    page = (out / "report.html").read_text()
    imgs = page.split('src="data:image/png;base64,')[1:]
    assert len(imgs) == 3 and all(_png_ok(base64.b64decode(s.split('"', 1)[0])) for s in imgs)
    assert "<img" in page and "src=\"http" not in page  # self-contained
    assert "BACKDOOR" in capsys.readouterr().out


def test_clean_checkpoint_exits_0(ckpts, synthetic_clean_set, tmp_path):
    out = tmp_path / "c"
    assert main(["audit", str(ckpts["clean"]), "--out", str(out), "--methods", "nc", "--clean-samples", "64", "--no-progress",
                 *FAST]) == 0
    v = json.loads((out / "verdict.json").read_text())
    assert v["backdoored"] is False and v["target"] is None


def test_user_architecture_audits_data_free(ckpts, tmp_path, monkeypatch):
    # No dataset is reachable: the data-free method must not try to load one.
    monkeypatch.setattr(audit_mod, "clean_samples", lambda *a, **k: pytest.fail("loaded data"))
    out = tmp_path / "df"
    rc = main(["audit", str(ckpts["backdoored"]), "--methods", "margin", "--clean-samples", "0", "--out", str(out), "--no-progress",
               "--param", "margin.steps=50"])
    v = json.loads((out / "verdict.json").read_text())
    assert rc == (1 if v["backdoored"] else 0)
    assert v["arch"] == ARCH and v["clean_samples"] == 0 and v["data"] is None
    assert _png_ok((out / "margin_distribution.png").read_bytes())


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused(ckpts, tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"backbone.0.weight": _Payload(str(marker))}, protocol=2))
    meta = json.loads((ckpts["clean"] / "model.json").read_text())
    meta.pop("weights")
    (tmp_path / "evil.json").write_text(json.dumps(meta))
    rc = main(["audit", str(evil), "--out", str(tmp_path / "o"), "--methods", "margin", "--clean-samples", "0"])
    assert rc == 2
    assert not marker.exists()
    assert "snnsec audit: error" in capsys.readouterr().err
    assert not (tmp_path / "o" / "verdict.json").exists()


@pytest.mark.parametrize("argv, msg", [
    (["--methods", "strip"], "input-inspection"),
    (["--methods", "bogus"], "unknown name"),
    (["--methods", "nc", "--clean-samples", "0"], "need at least one clean sample per class, so N >= 8"),
    (["--methods", "nc", "--clean-samples", "7"], "N >= 8"),
    (["--param", "nc.epochs=0"], "defense 'nc': parameter 'epochs' must be an integer >= 1, got 0"),
    (["--param", "nc.epochs=-1"], "parameter 'epochs' must be an integer >= 1"),
    (["--param", "nc.epochs=2.5"], "parameter 'epochs' must be int"),
    (["--param", "margin.steps=0"], "defense 'margin': parameter 'steps' must be an integer >= 1"),
    (["--param", "margin.p_threshold=2"], "parameter 'p_threshold' must be a number > 0 and <= 1"),
    (["--param", "nc.anomaly_threshold=NaN"], "parameter 'anomaly_threshold' must be a number > 0"),
    (["--methods", "nc", "--param", "margin.steps=3"], "not among the methods"),
    (["--param", "nc.epochs"], "METHOD.KEY=VALUE"),
])
def test_bad_arguments_exit_2(ckpts, tmp_path, capsys, argv, msg):
    assert main(["audit", str(ckpts["clean"]), "--out", str(tmp_path / "o"), *argv]) == 2
    assert msg in capsys.readouterr().err


def test_missing_checkpoint_and_unloadable_data_exit_2(ckpts, tmp_path, capsys):
    assert main(["audit", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    # the checkpoint's dataset is not a registered one: the error says so
    assert main(["audit", str(ckpts["clean"]), "--out", str(tmp_path / "o"), "--methods", "nc"]) == 2
    assert "tiny-synthetic" in capsys.readouterr().err


def test_library_api_takes_samples(ckpts, tmp_path):
    x, _ = synthetic(n_per_class=8, seed=5)
    r = audit_mod.audit(ckpts["backdoored"], samples=x, methods=["nc"], progress=False,
                        method_params={"nc": {"epochs": 6, "batches_per_epoch": 4, "batch_size": 12}})
    assert r.backdoored and r.target == TARGET and r.info["data"] == "samples given by the caller"
    assert torch.isfinite(torch.tensor(r.detections["nc"].scores)).all()


def test_demo_writes_a_report_folder(ckpts, synthetic_clean_set, tmp_path, monkeypatch):
    # The demo's own models take minutes to train; the wiring is what is tested here.
    from snnsec import demo

    monkeypatch.setattr(demo, "ensure_models", lambda cfg, **kw: {"clean": ckpts["clean"], "backdoored": ckpts["backdoored"]})
    cfg = demo.DemoConfig(target=TARGET, clean_samples=64, nc_epochs=6, margin_steps=100, adversarial_samples=16,
                          adversarial_attacks=("fgsm",), adversarial_eps=(0.1,))
    out = demo.run_demo(tmp_path / "demo", cfg, progress=False, log=lambda *_: None)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["audits"]["backdoored"] == {"backdoored": True, "target": TARGET, "seconds": pytest.approx(summary["audits"]["backdoored"]["seconds"])}
    assert (out / "audit-clean" / "report.html").is_file() and (out / "index.html").is_file()
    assert "audit-backdoored/report.html" in (out / "index.html").read_text()
    assert summary["adversarial"]["clean_accuracy"] is not None
    assert _png_ok((out / "adversarial" / "robustness.png").read_bytes())


def test_demo_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    from snnsec import demo

    monkeypatch.setenv("SNNSEC_CACHE", str(tmp_path / "c"))
    assert demo.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SNNSEC_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert demo.cache_dir() == tmp_path / "x" / "snnsec"


def test_unexpected_failure_exits_2_not_1(ckpts, tmp_path, monkeypatch, capsys):
    # 1 means "backdoor found": a crash must never be read that way.
    def boom(*a, **k):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(audit_mod.defenses, "make", boom)
    assert main(["audit", str(ckpts["clean"]), "--methods", "margin", "--clean-samples", "0", "--out", str(tmp_path / "o")]) == 2
    assert "simulated crash" in capsys.readouterr().err


def _det(method, flagged, target, candidate):
    from snnsec.defenses.base import Detection

    return Detection(method=method, backdoored=flagged, target=target if flagged else None, statistic=0.0, scores=[],
                     candidate=candidate)


def _stat(method, statistic, candidate):
    from snnsec.defenses.base import Detection

    return Detection(method=method, backdoored=False, target=None, statistic=statistic, scores=[], candidate=candidate,
                     evidence={"p_threshold": 0.05} if method == "margin" else {})


@pytest.mark.parametrize("margin, nc, expected", [
    ((0.2, 3), (3.0, 3), (True, 3)),     # not significant alone, but NC names the same class: Fisher p 0.0025
    ((0.2, 3), (3.0, 4), (False, None)),  # NC names another class: the margin test stands alone
    ((0.01, 5), (0.5, 4), (True, 5)),    # significant alone
    ((0.3, 1), (0.2, 1), (False, None)),  # agreement on a weak class is not enough: Fisher p 0.39
])
def test_the_margin_test_decides_with_nc_as_second_vote(margin, nc, expected):
    dets = {"nc": _stat("nc", *nc), "margin": _stat("margin", *margin)}
    assert audit_mod.combine(dets) == expected
    assert audit_mod.combine({"margin": dets["margin"]}) == ((True, 5) if margin[0] < 0.05 else (False, None))
    _, _, why = audit_mod.decide(dets)
    assert why.startswith("margin test:") and ("names the same class" in why) == (nc[1] == margin[1])


@pytest.mark.parametrize("nc, strip, expected", [
    ((True, 3, 3), (False, None, 3), (True, 3)),    # the other method's argmax corroborates
    ((True, 3, 3), (False, None, 1), (False, None)),  # a lone flag without agreement is not enough
    ((False, None, 0), (False, None, 0), (False, None)),  # agreement without any flag is not enough
    ((True, 4, 4), (True, 5, 5), (False, None)),    # two flags naming different classes
])
def test_without_margin_a_flag_needs_a_majority(nc, strip, expected):
    assert audit_mod.combine({"nc": _det("nc", *nc), "nc-temporal": _det("nc-temporal", *strip)}) == expected
    assert audit_mod.combine({"nc": _det("nc", *nc)}) == (nc[0], nc[1])
