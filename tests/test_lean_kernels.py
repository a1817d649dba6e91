"""The lean no-grad kernels compute what spikingjelly's and torch's own kernels compute."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from spikingjelly.activation_based import functional, layer, neuron, surrogate

from snnsec import native
from snnsec.lean_kernels import LeanMaxPool, lean_kernels

needs_compiler = pytest.mark.skipif(native.lif_library() is None, reason="no C compiler: the C kernels can't be built")


@pytest.fixture(params=["C", "tensor-ops"])
def lif_kernel(request, monkeypatch):
    """Each LIF test runs on both implementations: the C loop and the tensor operations beneath it."""
    if request.param == "C" and native.lif_library() is None:
        pytest.skip("no C compiler: the C kernels can't be built")
    if request.param == "tensor-ops":
        monkeypatch.setenv("SNNSEC_NATIVE", "0")
    return request.param


def bits(t: torch.Tensor) -> torch.Tensor:
    """The float32 bit patterns: -0 and +0 differ, a NaN equals itself."""
    return t.contiguous().view(torch.int32)


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(bits(a), bits(b))


def _inputs(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 1.5
    x.view(-1)[::7] = 1.0  # inputs that put the membrane exactly at threshold and at reset
    x.view(-1)[::11] = 0.0
    return x


@pytest.mark.parametrize("decay_input", [True, False])
@pytest.mark.parametrize("v_reset", [0.0, None, -0.25])
@pytest.mark.parametrize("store_v_seq", [False, True])
def test_lif_spikes_and_membranes_are_bitwise_the_reference(decay_input, v_reset, store_v_seq, lif_kernel):
    x = _inputs((6, 5, 4, 9, 9))
    lif = neuron.LIFNode(tau=1.7, decay_input=decay_input, v_threshold=0.8, v_reset=v_reset,
                         surrogate_function=surrogate.ATan(), detach_reset=True, step_mode="m", store_v_seq=store_v_seq)
    net = nn.Sequential(lif)
    with torch.no_grad():
        ref = lif(x)
        ref_v, ref_seq = lif.v.clone(), (lif.v_seq.clone() if store_v_seq else None)
        functional.reset_net(net)
        with lean_kernels(net) as swapped:
            assert swapped == 1 and type(lif).__name__ == "LeanLIFNode"
            out = lif(x)
    assert type(lif) is neuron.LIFNode
    assert out.dtype == ref.dtype and bitwise_equal(out, ref) and 0 < ref.mean() < 1
    assert bitwise_equal(lif.v, ref_v)
    if store_v_seq:
        assert bitwise_equal(lif.v_seq, ref_seq)


def test_a_forward_that_builds_a_graph_keeps_the_surrogate_gradient(lif_kernel):
    x = _inputs((4, 3, 8)).requires_grad_(True)
    lif = neuron.LIFNode(surrogate_function=surrogate.ATan(), step_mode="m")
    ref = torch.autograd.grad(lif(x).sum(), x)[0]
    functional.reset_net(lif)
    with lean_kernels(lif):
        out = lif(x)
        assert out.requires_grad
        assert torch.equal(torch.autograd.grad(out.sum(), x)[0], ref) and ref.abs().sum() > 0


# kernel, stride, padding: csnn's k = s, the 3 x 3 stride-2 padded pool of the transformers' and
# SEW-ResNet's stems, overlapping and rectangular windows, padded windows that do not overlap
WINDOWS = [(2, None, 0), (3, None, 0), (3, 2, 1), (3, 1, 1), (2, 1, 0), ((3, 2), (2, 1), (1, 0)), (2, None, 1),
           ((3, 2), (3, 4), (1, 1))]


def _pool_inputs(shape, seed):
    g = torch.Generator().manual_seed(seed)
    spikes = (torch.rand(shape, generator=g) > 0.7).float()  # ties everywhere, whole windows of zeros
    real = _inputs(shape, seed)
    real.view(-1)[::13] = float("-inf")
    nans = real.clone()
    nans.view(-1)[::17] = float("nan")  # torch keeps a window's last NaN
    return spikes, real, -spikes, nans  # all-negative windows: the -inf padding must never win


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(((a == b) | (a.isnan() & b.isnan())).all())


@pytest.mark.parametrize("window", WINDOWS)
def test_max_pool_equals_torch_on_spikes_and_real_values_odd_sizes_included(window):
    k, s, p = window
    pools = nn.Sequential(nn.MaxPool2d(k, s, p), layer.MaxPool2d(k, s, p, step_mode="m"))
    for x in (*_pool_inputs((2, 3, 11, 13), 0), *_pool_inputs((2, 3, 12, 12), 1)):
        with torch.no_grad():
            ref_plain = pools[0](x)
            ref_seq = pools[1](x.unsqueeze(0).expand(4, -1, -1, -1, -1))
            with lean_kernels(pools) as swapped:
                assert swapped == 2 and all(isinstance(p, LeanMaxPool) for p in pools)
                assert same(pools[0](x), ref_plain)
                assert same(pools[1](x.unsqueeze(0).expand(4, -1, -1, -1, -1)), ref_seq)
    assert type(pools[0]) is nn.MaxPool2d and type(pools[1]) is layer.MaxPool2d


def test_modules_the_lean_kernels_do_not_cover_keep_their_own():
    from snnsec.compress import quantize_membranes

    net = nn.Sequential(nn.MaxPool2d(3, dilation=2), nn.MaxPool2d(2, ceil_mode=True),
                        nn.MaxPool2d(2, return_indices=True), nn.MaxPool2d(2, padding=2),
                        neuron.LIFNode(surrogate_function=surrogate.ATan(spiking=False), step_mode="m"),
                        neuron.ParametricLIFNode(step_mode="m"), neuron.IFNode(step_mode="m"),
                        nn.Sequential(neuron.LIFNode(step_mode="m")))
    quantize_membranes(net[7], 4)
    with lean_kernels(net) as swapped:
        assert swapped == 0
    with lean_kernels(nn.Sequential(neuron.LIFNode(step_mode="m")), enabled=False) as swapped:
        assert swapped == 0


def test_a_surrogate_swapped_in_inside_the_block_sees_every_step():
    from snnsec.harness import override_surrogate

    calls = []

    class Counting(nn.Module):
        spiking = True

        def forward(self, x):
            calls.append(x.shape)
            return (x >= 0).to(x)

    lif = neuron.LIFNode(surrogate_function=surrogate.ATan(), step_mode="m")
    net = nn.Sequential(lif)
    x = _inputs((5, 2, 6))
    with torch.no_grad(), lean_kernels(net) as swapped, override_surrogate(net, Counting):
        assert swapped == 1
        net(x)
    assert len(calls) == 5


@pytest.mark.parametrize("decay_input", [True, False])
@pytest.mark.parametrize("v_reset", [0.0, None, -0.25])
@pytest.mark.parametrize("sg", ["ATan", "Sigmoid", "PiecewiseQuadratic"])
@pytest.mark.parametrize("through_v", [False, True])
def test_lif_input_gradients_are_bitwise_the_reference(decay_input, v_reset, sg, through_v, lif_kernel):
    x = _inputs((6, 5, 4, 9, 9))
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    lif = neuron.LIFNode(tau=1.7, decay_input=decay_input, v_threshold=0.8, v_reset=v_reset,
                         surrogate_function=getattr(surrogate, sg)(), detach_reset=True, step_mode="m")

    def grads():
        functional.reset_net(lif)
        xr = x.clone().requires_grad_(True)
        out = lif(xr)
        loss = (out * w).sum() + (lif.v.square().sum() if through_v else 0)
        return out, torch.autograd.grad(loss, xr)[0]

    ref_out, ref_grad = grads()
    with lean_kernels(lif) as swapped:
        assert swapped == 1
        out, grad = grads()
        assert type(out.grad_fn).__name__ == "_LIFGraphBackward"
    assert bitwise_equal(out, ref_out) and bitwise_equal(grad, ref_grad)
    assert ref_grad.abs().sum() > 0


@needs_compiler
@pytest.mark.parametrize("sg", ["ATan", "Sigmoid"])
def test_the_c_loop_split_over_threads_gives_the_same_bits(sg):
    # 2 x 8 x 64 x 64 = 65,536 elements per step: the smallest membrane the C loop splits
    x = _inputs((4, 2, 8, 64, 64))
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    lif = neuron.LIFNode(tau=1.7, v_threshold=0.8, surrogate_function=getattr(surrogate, sg)(), detach_reset=True,
                         step_mode="m")

    def run():
        functional.reset_net(lif)
        xr = x.clone().requires_grad_(True)
        out = lif(xr)
        return out, lif.v.detach().clone(), torch.autograd.grad((out * w).sum() + lif.v.square().sum(), xr)[0]

    ref = run()
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            with lean_kernels(lif):
                assert all(bitwise_equal(a, b) for a, b in zip(run(), ref))
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("window", WINDOWS)
def test_max_pool_gradient_goes_where_torchs_does(window):
    k, s, p = window
    pool = layer.MaxPool2d(k, s, p, step_mode="m")
    g = torch.Generator().manual_seed(2)
    for x in (*_pool_inputs((3, 2, 4, 10, 11), 2), torch.zeros(3, 2, 4, 6, 6)):
        w = torch.randn(pool(x).shape, generator=g)

        def grads():
            xr, wr = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
            out = pool(xr)
            (first,) = torch.autograd.grad((out * wr).sum(), xr)
            (gx,) = torch.autograd.grad((pool(xr) * wr).sum(), xr, create_graph=True)
            # second order (the dynamic trigger's look-ahead): the gradient is linear in what comes in
            (gw,) = torch.autograd.grad((gx * x.nan_to_num()).sum(), wr)
            return out.detach(), first, gx.detach(), gw

        ref = grads()
        with lean_kernels(pool):
            lean = grads()
        assert same(lean[0], ref[0])
        # where the gradient goes, summed in torch's order where windows overlap, signs of zero included
        assert all(bitwise_equal(a, b) for a, b in zip(lean[1:], ref[1:])) and lean[1].is_contiguous()
        assert ref[1].abs().sum() > 0 or not x.any()


def test_second_order_gradients_through_the_lif_are_the_reference(lif_kernel):
    # the dynamic trigger differentiates a gradient (create_graph): through spikingjelly's own graph
    g = torch.Generator().manual_seed(4)
    base, w = torch.randn(5, 3, 7, generator=g), torch.randn(3, 7, generator=g)
    lif = neuron.LIFNode(surrogate_function=surrogate.Sigmoid(), detach_reset=True, step_mode="m")

    def second_order():
        functional.reset_net(lif)
        scale = torch.full((7,), 1.3, requires_grad=True)
        x = base * scale
        (gx,) = torch.autograd.grad((lif(x) * w).sum(), x, create_graph=True)
        return torch.autograd.grad((gx * base).sum(), scale)[0]

    ref = second_order()
    with lean_kernels(lif):
        assert torch.equal(second_order(), ref)
    assert ref.abs().sum() > 0


@pytest.mark.parametrize("estimator", ["assg", "pdsg", "hart"])
def test_attack_estimators_see_every_step_and_give_the_reference_gradients(estimator, lif_kernel):
    from snnsec.attacks.adversarial import adaptive

    def net():
        torch.manual_seed(0)
        return nn.Sequential(
            layer.Linear(12, 16, step_mode="m"),
            neuron.LIFNode(tau=1.7, v_threshold=0.8, surrogate_function=surrogate.ATan(), detach_reset=True,
                           step_mode="m"),
            layer.Linear(16, 5, step_mode="m"),
            neuron.LIFNode(v_reset=None, v_threshold=0.2, surrogate_function=surrogate.Sigmoid(), detach_reset=True,
                           step_mode="m"))

    mode = {"assg": lambda m: adaptive.assg_mode(m, 0.3), "pdsg": adaptive.pdsg_mode,
            "hart": lambda m: adaptive.hart_mode(m, 0.5)}[estimator]
    g = torch.Generator().manual_seed(5)
    xs = [torch.randn(6, 4, 12, generator=g) * 2 for _ in range(3)]
    w = torch.randn(6, 4, 5, generator=g)

    def run(model, lean):
        out = []
        with lean_kernels(model, lean) as swapped, mode(model):
            assert swapped == (2 if lean else 0)
            for i, x in enumerate(xs):  # an attack's iterations: the estimators' statistics carry over
                functional.reset_net(model)
                if i == 1:  # a forward without a graph (an attack's success check) updates them too
                    with torch.no_grad():
                        out.append(model(x))
                    continue
                xr = x.clone().requires_grad_(True)
                y = model(xr)
                out += [y.detach(), torch.autograd.grad((y * w).sum(), xr)[0]]
            sg = [m.surrogate_function for m in model.modules() if isinstance(m, neuron.LIFNode)]
            if estimator == "assg":
                out += [t for s in sg for k in sorted(s.M) for t in (s.M[k], s.D[k])]
            else:
                out += [t for s in sg for t in s.seen]
        return out

    ref, lean = run(net(), False), run(net(), True)
    assert len(ref) == len(lean) > 5
    assert all(bitwise_equal(a, b) for a, b in zip(lean, ref))
    assert ref[1].abs().sum() > 0 and ref[0].sum() > 0  # the first input gradient, the first spikes
