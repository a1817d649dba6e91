"""``snnsec attack adversarial`` and the ``adversarial`` bench kind, end to end on a tiny ndigits checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from snnsec import checkpoint, models, results
from snnsec.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """csnn (narrow) briefly trained on 96 ndigits samples at T=4, saved as a checkpoint."""
    from snnsec.data import load

    ds, spec = load("ndigits", split="train", T=4)
    x = torch.stack([torch.as_tensor(ds[i][0]) for i in range(96)])
    y = torch.tensor([int(ds[i][1]) for i in range(96)])
    torch.manual_seed(0)
    kw = {"channels": [4, 8], "hidden": 32}
    m = models.build("csnn", in_channels=2, num_classes=10, sensor_hw=(34, 34), T=4, **kw)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    m.train()
    for i in range(12):
        idx = torch.arange(i * 32, (i + 1) * 32) % 96
        loss = F.cross_entropy(m(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    out = tmp_path_factory.mktemp("ckpt")
    checkpoint.save(out, m, arch="csnn", arch_kwargs=kw, spec=spec, recipe={"test": True}, seed=0)
    return out


def test_cli_writes_metrics_figure_and_rows(ckpt, tmp_path, capsys):
    out = tmp_path / "adv"
    code = main(["attack", "adversarial", str(ckpt), "--data", "ndigits", "--attacks", "pgd,square",
                 "--eps", "0,8/255,64/255", "--n-samples", "12", "--fast", "--out", str(out), "--no-progress"])
    assert code == 0
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["robust_accuracy"]) == {"0/255", "8/255", "64/255"}
    assert m["robust_accuracy"]["0/255"] == m["clean_accuracy"]
    assert isinstance(m["reliable"], bool) and m["checks"]
    assert m["n_samples"] == 12
    assert (out / "robustness.png").stat().st_size > 1000
    df = results.load()
    worst = df[df["attack"] == "adversarial:worst-case"]
    assert len(worst) == 3 * 2  # robust_accuracy + attack_success_rate per eps
    assert "reliable" in set(df["metric"])
    printed = capsys.readouterr().out
    assert ("reliable" in printed) or ("UNRELIABLE" in printed)


def test_cli_spike_flips_print_flips_and_no_eps_curve(ckpt, tmp_path, capsys):
    out = tmp_path / "flip"
    code = main(["attack", "adversarial", str(ckpt), "--data", "ndigits", "--attacks", "spikeflip", "--n-samples", "8",
                 "--flip-budget", "200", "--flip-step", "10", "--out", str(out), "--no-progress"])
    assert code == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["robust_accuracy"] == {} and m["flips"]["median_events"] > 0
    printed = capsys.readouterr().out
    assert "no eps-bounded attack run" in printed
    assert f"median {m['flips']['median_flips']:g} flipped events" in printed


def test_cli_rejects_bad_eps(ckpt, tmp_path, capsys):
    code = main(["attack", "adversarial", str(ckpt), "--eps", "8", "--out", str(tmp_path / "x"), "--no-progress"])
    assert code == 2
    assert "eps" in capsys.readouterr().err


def test_bench_kind_runs_and_resumes(ckpt, tmp_path):
    from snnsec.bench import parse_spec, run_spec

    spec = parse_spec({"kind": "adversarial", "base": {"dataset": "ndigits", "model": "csnn", "checkpoint": str(ckpt),
                                                       "attacks": "pgd", "eps": ["8/255"], "n_samples": 8, "fast": True}},
                      source="test")
    store = tmp_path / "s.sqlite"
    first = run_spec(spec, store=store, progress=False, log=lambda s: None)
    again = run_spec(spec, store=store, progress=False, log=lambda s: None)
    assert (first.ran, again.ran, again.skipped) == (1, 0, 1)
    df = results.load(store)
    assert "robust_accuracy@8/255" in set(df["metric"]) and "reliable" in set(df["metric"])
