"""Energy: exact synaptic operations and MACs, the 45 nm estimate, and the spike-driven check
(which must reproduce the Spikingformer paper's finding on the backbones it names)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from snnsec import energy, models
from snnsec.harness import calibrate_bn


class _TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(10, 5, bias=False)
        self.fc2 = nn.Linear(5, 3)

    def forward(self, x):
        return self.fc2(self.fc1(x))


def test_counts_are_exact_for_spikes_and_for_real_values():
    torch.manual_seed(0)
    net = _TwoLayers()
    spikes = (torch.rand(4, 10) < 0.3).float()
    r = energy.measure(net, spikes, rates=False)
    fc1, fc2 = r.layers
    assert (fc1.layer, fc2.layer) == ("fc1", "fc2")
    # a spike fans out to every output: one accumulate per (spike, output)
    assert fc1.sops == spikes.sum().item() * 5 and fc1.macs == 0
    # fc1's output is real-valued: fc2 multiplies every input by every weight
    assert fc2.sops == 0 and fc2.macs == 4 * 5 * 3
    assert r.sops == fc1.sops / 4 and r.macs == 15
    assert r.energy_pj == pytest.approx(energy.E_AC_PJ * r.sops + energy.E_MAC_PJ * r.macs)
    assert (energy.E_AC_PJ, energy.E_MAC_PJ) == (0.9, 4.6)
    assert [c.layer for c in r.non_spike_layers] == ["fc2"] and fc2.input_kind == "real values"
    assert r.encoding_layer == "fc1" and not r.spike_driven()


def test_added_spikes_are_integers_not_spikes():
    net = nn.Sequential(nn.Linear(6, 2, bias=False))
    summed = torch.tensor([[0.0, 1, 2, 0, 1, 1], [2, 0, 0, 1, 0, 1], [1, 1, 0, 0, 2, 0]])  # two spike maps added
    r = energy.measure(net, summed, rates=False)
    (layer,) = r.layers
    assert layer.input_kind == "integers" and not layer.spike_driven
    # as the encoding layer it is set aside, as the papers do
    assert r.spike_driven(encoding_aside=True) and not r.spike_driven(encoding_aside=False)


def test_an_empty_input_is_refused():
    with pytest.raises(ValueError, match="energy: no inputs"):
        energy.measure(_TwoLayers(), torch.zeros(0, 10))


@pytest.fixture(scope="module")
def backbone_reports():
    x = (torch.rand(2, 2, 2, 34, 34, generator=torch.Generator().manual_seed(0)) < 0.15).float()
    out = {}
    for arch in ("spikformer", "sew-resnet", "spikingformer", "sdt", "csnn"):
        torch.manual_seed(0)
        m = models.build(arch, in_channels=2, num_classes=10, sensor_hw=(34, 34), T=2)
        calibrate_bn(m, x)
        out[arch] = energy.measure(m.eval(), x)
    return out


def test_the_spike_driven_check_reproduces_the_spikingformer_paper(backbone_reports):
    # Spikformer's and SEW-ResNet's residuals feed added spikes (integers) to the next weight layer ...
    for arch, first in (("spikformer", "backbone.blocks.0.attn.qkv_conv_bn.0"), ("sew-resnet", "backbone.blocks.1.conv1.0.0")):
        r = backbone_reports[arch]
        assert not r.spike_driven(), arch
        assert first in [c.layer for c in r.non_spike_layers if c.input_kind == "integers"], arch
    # ... Spikingformer's and the Spike-driven Transformer's never do (binary frames: the encoding layer
    # too). Spikingformer's head reads the mean of the residual stream, as in its reference code: real
    # values, but no integer anywhere, which is the paper's point
    r = backbone_reports["spikingformer"]
    assert [(c.layer, c.input_kind) for c in r.non_spike_layers] == [("backbone.head.0", "real values")]
    for arch in ("sdt", "csnn"):
        r = backbone_reports[arch]
        assert r.spike_driven(encoding_aside=False) and r.macs == 0, (arch, [c.layer for c in r.non_spike_layers])


def test_reports_carry_firing_rates_and_rows(backbone_reports):
    r = backbone_reports["csnn"]
    assert r.firing_rates and 0 < r.mean_firing_rate < 1
    m = r.metrics()
    assert set(m) == {"sops", "macs", "energy_pj", "body_energy_pj", "mean_firing_rate", "non_spike_layers", "spike_driven"}
    groups = r.row_groups()
    layer_rows = [g for g in groups if "layer_sops" in g["metrics"]]
    assert len(layer_rows) == len(r.layers) and layer_rows[0]["extra"]["encoding"]
    assert sum(g["metrics"]["layer_sops"] for g in layer_rows) == pytest.approx(r.sops)


def test_the_sponge_raises_spikes_and_energy_within_its_box():
    from adversarial_helpers import trained_csnn
    from snnsec.attacks.adversarial.sponge import Sponge

    model, x, _ = trained_csnn()
    eps = 32 / 255
    atk = Sponge(model, eps, steps=10)
    xa = atk(x)
    assert float((xa - x).abs().max()) <= eps + 1e-6 and 0 <= float(xa.min()) and float(xa.max()) <= 1
    assert not model.training and all(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        assert float(atk.spikes(xa)) > 1.2 * float(atk.spikes(x))
    clean, sponged = energy.measure(model, x), energy.measure(model, xa)
    assert sponged.mean_firing_rate > clean.mean_firing_rate
    assert sponged.energy_pj > clean.energy_pj
    with pytest.raises(ValueError, match="sponge: eps must be > 0"):
        Sponge(model, 0.0)


@pytest.fixture(scope="module")
def energy_ckpt(tmp_path_factory):
    from snnsec import checkpoint
    from snnsec.attacks.backdoor.triggers import make_trigger
    from snnsec.data import load

    _, spec = load("ndigits", split="test", T=4)
    torch.manual_seed(0)
    m = models.build("csnn", in_channels=2, num_classes=10, sensor_hw=(34, 34), T=4, channels=[4, 8], hidden=32)
    x = (torch.rand(16, 4, 2, 34, 34, generator=torch.Generator().manual_seed(0)) < 0.1).float()
    calibrate_bn(m, x)
    trigger = make_trigger("static", size=0.2)
    return checkpoint.save(tmp_path_factory.mktemp("energy") / "ck", m.eval(), arch="csnn",
                           arch_kwargs={"channels": [4, 8], "hidden": 32}, spec=spec, recipe={},
                           attack={"target": 0, "trigger": trigger.to_spec()})


def test_cli_reports_every_input_kind_and_stores_rows(energy_ckpt, tmp_path, capsys):
    from snnsec import results
    from snnsec.cli import main

    store = tmp_path / "r.sqlite"
    code = main(["energy", str(energy_ckpt), "--n-samples", "12", "--triggered", "--attack", "fgsm", "--eps", "16/255",
                 "--sponge", "16/255", "--sponge-steps", "3", "--out", str(tmp_path / "e"), "--store", str(store),
                 "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "spike-driven: every weight layer sees spikes" in out and "sponge@16/255" in out
    import json

    summary = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert set(summary["inputs"]) == {"clean", "triggered", "fgsm@16/255", "sponge@16/255"}
    assert summary["inputs"]["clean"]["energy_ratio"] == 1.0
    rows = results.Store(store).load()
    kinds = set(rows[rows.metric == "energy_pj"]["attack"].fillna("clean"))
    assert kinds == {"clean", "triggered", "fgsm@16/255", "sponge@16/255"}
    assert set(rows[rows.metric == "layer_sops"]["extra"].map(lambda e: json.loads(e)["layer"])) >= {"backbone.0"}


def test_cli_refuses_a_trigger_the_checkpoint_lacks(tmp_path, capsys):
    from snnsec import checkpoint
    from snnsec.cli import main
    from snnsec.data import load

    _, spec = load("ndigits", split="test", T=4)
    m = models.build("csnn", in_channels=2, num_classes=10, sensor_hw=(34, 34), T=4, channels=[4, 8], hidden=32)
    ck = checkpoint.save(tmp_path / "ck", m, arch="csnn", arch_kwargs={"channels": [4, 8], "hidden": 32}, spec=spec,
                         recipe={})
    assert main(["energy", str(ck), "--triggered", "--out", str(tmp_path / "e"), "--store", str(tmp_path / "r.sqlite")]) == 2
    assert "records no trigger (field 'attack.trigger'" in capsys.readouterr().err
    assert main(["energy", str(ck), "--eps", "8/255", "--out", str(tmp_path / "e2"), "--store", str(tmp_path / "r.sqlite")]) == 2
    assert "--eps needs --attack" in capsys.readouterr().err


def test_body_energy_leaves_the_encoding_layer_out():
    torch.manual_seed(0)
    net = _TwoLayers()
    x = torch.rand(4, 10)  # real-valued input: the encoding layer multiplies
    r = energy.measure(net, x, rates=False)
    fc1, fc2 = r.layers
    assert r.body_energy_pj == pytest.approx((energy.E_AC_PJ * fc2.sops + energy.E_MAC_PJ * fc2.macs) / 4)
    assert r.energy_pj - r.body_energy_pj == pytest.approx(energy.E_MAC_PJ * fc1.macs / 4)


class _Attention(nn.Module):
    """A module that computes a product itself beside its child layer, as spiking attention does."""

    def __init__(self):
        super().__init__()
        self.q = nn.Linear(6, 4, bias=False)

    def forward(self, x):
        q = (self.q(x) > 0).float()
        return q @ q.t()


def test_products_a_module_computes_itself_are_counted_beside_its_children():
    net = nn.Sequential(_Attention())
    x = (torch.rand(3, 6, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    r = energy.measure(net, x, rates=False)
    assert [c.layer for c in r.layers] == ["0.q", "0"]
    q = (net[0].q(x) > 0).float()
    assert r.layers[1].sops == float((q @ q.t()).sum())  # spike x spike: one accumulate per 1-1 pair
    assert r.layers[1].calls == 1 and r.layers[0].calls == 1
