"""Compression: binary weights are +-alpha per channel, quantised weights take at most 2**bits - 1
levels, pruning reaches its sparsity, gradients pass straight through, and a baked model is the
plain backbone again (it saves and loads as one)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from snnsec import checkpoint, compress, models
from snnsec.harness import calibrate_bn

T, P, H, W, K = 4, 2, 34, 34, 10


def _model(arch="csnn"):
    torch.manual_seed(0)
    m = models.build(arch, in_channels=P, num_classes=K, sensor_hw=(H, W), T=T)
    x = (torch.rand(4, T, P, H, W, generator=torch.Generator().manual_seed(0)) < 0.2).float()
    calibrate_bn(m, x)
    return m.eval(), x


def test_binary_weights_are_plus_minus_alpha_per_channel_and_ends_stay_full():
    m, _ = _model()
    layers = [w for _, w in compress.weight_layers(m)]
    compress.compress(m, "binary")
    compress.bake(m)
    for layer in layers[1:-1]:
        w = layer.weight.detach().flatten(1)
        for row in w:
            values = torch.unique(row.abs())
            assert len(values) == 1  # one alpha per output channel, +-alpha only
            assert torch.isclose(values[0], row.abs().mean())
    first, last = compress.stats(m)[0], compress.stats(m)[-1]
    assert first["distinct_per_channel"] > 2 and last["distinct_per_channel"] > 2


@pytest.mark.parametrize("bits", [2, 4])
def test_quantised_weights_take_few_levels(bits):
    m, _ = _model()
    compress.compress(m, "quantize", bits=bits, keep_ends=False)
    compress.bake(m)
    assert all(s["distinct_per_channel"] <= 2 ** bits - 1 for s in compress.stats(m))


@pytest.mark.parametrize("method", ["prune", "soft-prune"])
def test_pruning_reaches_its_sparsity_in_every_layer(method):
    m, _ = _model("spikingformer")
    compress.compress(m, method, sparsity=0.8)
    compress.bake(m)
    for s in compress.stats(m):
        assert s["sparsity"] == pytest.approx(0.8, abs=max(2 / s["weights"], 0.01)), s


def test_gradients_pass_straight_through_and_training_moves_the_full_precision_weights():
    m, x = _model()
    compress.compress(m, "binary")
    layer = compress.weight_layers(m)[1][1]
    original = layer.parametrizations.weight.original
    before = original.detach().clone()
    m.train()
    loss = F.cross_entropy(m(x), torch.arange(len(x)) % K)
    loss.backward()
    assert original.grad is not None and float(original.grad.abs().sum()) > 0
    torch.optim.SGD(m.parameters(), lr=0.1).step()
    assert not torch.equal(before, original.detach())


def _baked_round_trip(m, x, path):
    """Bake ``m``, save and load it: ``(loaded, meta, logits before baking)``."""
    from snnsec.data.spec import DataSpec

    with torch.no_grad():
        expected = m(x)
    compress.bake(m)
    spec = DataSpec("toy", sensor_size=(W, H, P), T=T, classes=tuple(str(i) for i in range(K)))
    checkpoint.save(path, m, arch="csnn", arch_kwargs={}, spec=spec, recipe={"compression": m.compression})
    loaded, meta = checkpoint.load(path)
    return loaded, meta, expected


def test_a_baked_model_saves_and_loads_as_its_backbone(tmp_path):
    m, x = _model()
    compress.compress(m, "prune", sparsity=0.5)
    loaded, meta, expected = _baked_round_trip(m, x, tmp_path / "ck")
    with torch.no_grad():
        assert torch.allclose(loaded(x), expected, atol=1e-6)
    assert meta["recipe"]["compression"]["method"] == "prune"


def test_bad_requests_are_refused():
    m, _ = _model()
    with pytest.raises(ValueError, match="method must be one of binary, quantize, prune, soft-prune, got 'ternary'"):
        compress.compress(m, "ternary")
    with pytest.raises(ValueError, match=r"compress prune: unknown parameter\(s\) \['bits'\]"):
        compress.compress(m, "prune", bits=4)
    with pytest.raises(ValueError, match="sparsity must be a fraction in"):
        compress.compress(m, "prune", sparsity=1.0)
    with pytest.raises(ValueError, match="bits must be an integer in"):
        compress.compress(m, "quantize", bits=1)
    compress.compress(m, "binary")
    with pytest.raises(ValueError, match="compressed already"):
        compress.compress(m, "prune")


def test_cli_compresses_a_checkpoint(tmp_path, capsys):
    from snnsec.cli import main
    from snnsec.data import load

    _, spec = load("ndigits", split="test", T=4)
    m = models.build("csnn", in_channels=2, num_classes=10, sensor_hw=(34, 34), T=4, channels=[4, 8], hidden=32)
    ck = checkpoint.save(tmp_path / "ck", m, arch="csnn", arch_kwargs={"channels": [4, 8], "hidden": 32}, spec=spec,
                         recipe={"name": "ce"})
    code = main(["compress", str(ck), "--method", "quantize", "--bits", "3", "--finetune-epochs", "0",
                 "--out", str(tmp_path / "q"), "--store", str(tmp_path / "r.sqlite"), "--no-progress"])
    assert code == 0
    assert "quantize: clean_accuracy" in capsys.readouterr().out
    q, meta = checkpoint.load(tmp_path / "q")
    assert meta["recipe"]["compression"]["bits"] == 3 and meta["recipe"]["base"]["recipe"] == {"name": "ce"}
    assert all(s["distinct_per_channel"] <= 7 for s in compress.stats(q)[1:-1])
    assert main(["compress", str(ck), "--method", "prune", "--compress-ends", "--out", str(tmp_path / "p"),
                 "--store", str(tmp_path / "r.sqlite")]) == 2
    assert main(["compress", str(ck), "--method", "binary", "--membrane-bits", "4", "--finetune-epochs", "0",
                 "--out", str(tmp_path / "m"), "--store", str(tmp_path / "r.sqlite"), "--no-progress"]) == 0
    assert checkpoint.load(tmp_path / "m")[0].membrane_bits == 4
    capsys.readouterr()
    assert main(["compress", str(tmp_path / "m"), "--method", "prune", "--membrane-bits", "4", "--out",
                 str(tmp_path / "m2"), "--store", str(tmp_path / "r.sqlite"), "--no-progress"]) == 2
    assert "field 'membrane_bits'" in capsys.readouterr().err


def test_training_compressed_from_the_start(tmp_path):
    from snnsec.cli import main

    assert main(["train", "--data", "ndigits", "--T", "4", "--epochs", "1", "--model-arg", "channels=[4,8]",
                 "--model-arg", "hidden=32", "--compress", "prune:sparsity=0.5", "--out", str(tmp_path / "ck"),
                 "--store", str(tmp_path / "r.sqlite"), "--no-progress"]) == 0
    m, meta = checkpoint.load(tmp_path / "ck")
    assert meta["recipe"]["compression"]["method"] == "prune"
    assert all(s["sparsity"] == pytest.approx(0.5, abs=0.01) for s in compress.stats(m))
    assert main(["train", "--data", "ndigits", "--compress", "prune:sparsity=2", "--out", str(tmp_path / "bad"),
                 "--store", str(tmp_path / "r.sqlite")]) == 2
    assert not (tmp_path / "bad").exists()


def _recorded_membranes(m, x):
    """Every neuron's membrane after each step, as the harness runs it (store_v_seq)."""
    from snnsec.harness import spiking_neurons

    out = []
    neurons = [n for _, n, _ in spiking_neurons(m)]
    hooks = [n.register_forward_hook(lambda mod, i, o: out.append((mod.v_seq.clone(), mod.v_threshold))) for n in neurons]
    for n in neurons:
        n.store_v_seq = True
    with torch.no_grad():
        m(x)  # the harness resets the neurons after the forward, so the hooks read v_seq first
    for n, h in zip(neurons, hooks):
        n.store_v_seq = False
        h.remove()
    assert len(out) == len(neurons)
    return out


@pytest.mark.parametrize("bits", [2, 4])
def test_low_bit_membranes_stay_on_their_grid_and_match_a_hand_written_lif(bits):
    from spikingjelly.activation_based import neuron, surrogate

    m, x = _model()
    compress.compress(m, "quantize", bits=4, membrane_bits=bits)
    levels = 2 ** (bits - 1) - 1
    for v_seq, th in _recorded_membranes(m, x):
        grid = v_seq / (th / levels)
        assert torch.allclose(grid, grid.round(), atol=1e-4) and float(grid.abs().max()) <= levels + 1e-4
    # one LIF against its definition: charge, fire, hard reset, then the state rounded to the grid
    lif = neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan(), detach_reset=True, step_mode="m")
    holder = torch.nn.Sequential(lif)
    compress.quantize_membranes(holder, bits)
    inp = torch.randn(8, 5, 6, generator=torch.Generator().manual_seed(1)) * 1.5
    v, spikes = torch.zeros(5, 6), []
    for t in range(8):
        h = v + (inp[t] - v) / 2.0
        s = (h >= 1.0).float()
        spikes.append(s)
        v = torch.clamp(torch.round(h * (1 - s) * levels), -levels, levels) / levels
    assert torch.equal(lif(inp), torch.stack(spikes)) and torch.allclose(lif.v, v)


def test_low_bit_membranes_keep_input_gradients_and_survive_a_checkpoint(tmp_path):
    m, x = _model()
    compress.compress(m, "binary", membrane_bits=3)
    xg = x.clone().requires_grad_(True)
    m(xg).sum().backward()
    assert float(xg.grad.abs().sum()) > 0
    loaded, meta, expected = _baked_round_trip(m, x, tmp_path / "ck")
    assert meta["membrane_bits"] == 3 and loaded.membrane_bits == 3
    plain = models.build("csnn", in_channels=P, num_classes=K, sensor_hw=(H, W), T=T)
    plain.load_state_dict(loaded.state_dict())
    with torch.no_grad():
        assert torch.equal(loaded(x), expected)
        assert not torch.equal(plain.eval()(x), expected)  # the same weights at full precision differ
    import json

    meta_file = tmp_path / "ck" / "model.json"

    raw = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**raw, "membrane_bits": 1}))
    with pytest.raises(ValueError, match=r"model.json: field 'membrane_bits' must be an integer in \[2, 16\]"):
        checkpoint.load(tmp_path / "ck")


def test_membranes_that_cannot_be_quantized_are_named_before_any_weight_changes():
    m, _ = _model("psn-csnn")
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(ValueError, match=r"membrane_bits: cannot quantize the membrane of .*PSN.*drop membrane_bits"):
        compress.compress(m, "binary", membrane_bits=4)
    assert not getattr(m, "compression", None) and not compress.weight_layers(m)[1][1].__dict__.get("parametrizations")
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())
    with pytest.raises(ValueError, match="compress quantize: membrane_bits must be an integer in"):
        compress.compress(m, "quantize", membrane_bits=1)
