"""What a spiking model's inference costs: synaptic operations, MACs, an energy estimate, firing
rates, and the spike-driven check.

The counts are exact, taken per operator at the aten level by spikingjelly's op counter
(``spikingjelly.activation_based.op_counter``, the field's reference tool) during real forwards:

- a convolution or matrix product (conv, linear, attention's ``@``) with an operand that is a
  {0, 1} spike tensor costs **synaptic operations** (accumulates, ACs): the number of weight
  uses the spikes trigger, border effects included; spike-by-spike products count their 1-1 pairs;
- one with no binary operand costs **MACs**: every multiply-accumulate of the dense product.

Energy is ``E_AC * SOPs + E_MAC * MACs`` with the 45 nm figures the SNN papers use (Horowitz,
"Computing's energy problem", ISSCC 2014, 32-bit float: add 0.9 pJ, multiply 3.7 pJ, so a MAC
4.6 pJ; as Spikformer, Spikingformer and the Spike-driven Transformer report energy). Only the
weight operators count, as in those papers: BatchNorm folds into the weights at inference,
and additions, pooling and the neurons' own updates are left out.

**The spike-driven check** lists every weight operator that ran with no binary operand: a layer
fed non-spike values, that is integer-float (SEW's added spikes, Spikformer's residual sums)
or float-float multiplication, which neuromorphic hardware cannot run as accumulates. The
first weight operator is the encoding layer; with binary event frames it is spike-driven too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from snnsec.harness import device_of, preserve_modes

__all__ = ["E_AC_PJ", "E_MAC_PJ", "LayerCost", "EnergyReport", "measure"]

E_AC_PJ = 0.9  # pJ per accumulate, 32-bit float, 45 nm (Horowitz 2014)
E_MAC_PJ = 4.6  # pJ per multiply-accumulate (3.7 pJ multiply + 0.9 pJ add)


def _weight_ops():
    aten = torch.ops.aten
    # operand positions of the two factors of each weight operator
    return {aten.convolution.default: (0, 1), aten.mm.default: (0, 1), aten.addmm.default: (1, 2),
            aten.bmm.default: (0, 1), aten.baddbmm.default: (1, 2)}


def _binary(t: torch.Tensor) -> bool:
    return t.dtype == torch.bool or bool(t.eq(0).logical_or_(t.eq(1)).all())


def _integer(t: torch.Tensor) -> bool:
    return bool(torch.equal(t, t.round()))


def _input_counters():
    """Counters of the op counter's kind that record, per scope, the weight-operator calls that
    had no binary operand, and those of them whose operands include an integer-valued one."""
    from spikingjelly.activation_based.op_counter import BaseCounter

    ops = _weight_ops()

    class _Calls(BaseCounter):
        def __init__(self, test):
            super().__init__()
            self.rules = {op: (lambda args, kwargs, out, where=where: test([args[i] for i in where]))
                          for op, where in ops.items()}

    def non_spike(operands):
        return int(not any(_binary(t) for t in operands))

    def integer(operands):
        return int(non_spike(operands) and any(_integer(t) for t in operands))

    class _Order(BaseCounter):
        """The order in which modules first run a weight operator themselves (the counter hands
        every enclosing scope, in no order; the innermost is the longest name)."""

        def __init__(self):
            super().__init__()
            self.rules = {op: (lambda args, kwargs, out: 0) for op in ops}
            self.first: dict[str, int] = {}

        def count(self, func, args, kwargs, out, active_modules=None, parent_names=None) -> int:
            if parent_names:
                self.first.setdefault(max(parent_names, key=len), len(self.first))
            return 0

    return _Calls(lambda operands: 1), _Calls(non_spike), _Calls(integer), _Order()


@dataclass(frozen=True)
class LayerCost:
    """One module's weight operators over all samples measured (per-sample figures divide by n)."""

    layer: str  # module path under the model ("backbone.0", "blocks.0.attn")
    sops: float
    macs: float
    calls: int
    non_spike_calls: int  # calls with no binary operand
    integer_calls: int  # of those, calls with an integer-valued operand (added spikes)

    @property
    def energy_pj(self) -> float:
        """Over all samples measured."""
        return E_AC_PJ * self.sops + E_MAC_PJ * self.macs

    @property
    def spike_driven(self) -> bool:
        return self.non_spike_calls == 0

    @property
    def input_kind(self) -> str:
        if self.spike_driven:
            return "spikes"
        return "integers" if self.integer_calls == self.non_spike_calls else "real values"


@dataclass
class EnergyReport:
    """Costs per layer and in total, per sample."""

    layers: list[LayerCost]
    n: int
    firing_rates: list = field(default_factory=list)  # snnsec.activity.LayerRate per spiking layer
    predictions: torch.Tensor | None = None  # [n] class of each sample, from the counted forwards

    @property
    def sops(self) -> float:
        return sum(c.sops for c in self.layers) / self.n

    @property
    def macs(self) -> float:
        return sum(c.macs for c in self.layers) / self.n

    @property
    def energy_pj(self) -> float:
        return E_AC_PJ * self.sops + E_MAC_PJ * self.macs

    @property
    def body_energy_pj(self) -> float:
        """Energy of every weight layer but the encoding one: what spikes cost. An L-inf
        perturbation makes binary frames real-valued, so the encoding layer turns to MACs under
        any attack; the body shows what the attack did to the spiking."""
        body = self.layers[1:]
        return sum(c.energy_pj for c in body) / self.n

    @property
    def mean_firing_rate(self) -> float:
        return sum(r.rate for r in self.firing_rates) / len(self.firing_rates) if self.firing_rates else float("nan")

    @property
    def non_spike_layers(self) -> list[LayerCost]:
        """The spike-driven check's list: layers fed non-spike values (the encoding layer included)."""
        return [c for c in self.layers if not c.spike_driven]

    @property
    def encoding_layer(self) -> str | None:
        return self.layers[0].layer if self.layers else None

    def spike_driven(self, *, encoding_aside: bool = True) -> bool:
        """True if every weight operator saw spikes (the encoding layer aside when asked)."""
        return not [c for c in self.non_spike_layers if not (encoding_aside and c.layer == self.encoding_layer)]

    def metrics(self) -> dict[str, float]:
        return {"sops": self.sops, "macs": self.macs, "energy_pj": self.energy_pj, "body_energy_pj": self.body_energy_pj,
                "mean_firing_rate": self.mean_firing_rate, "non_spike_layers": float(len(self.non_spike_layers)),
                "spike_driven": float(self.spike_driven())}

    def row_groups(self) -> list[dict]:
        """Per-layer rows (``snnsec.bench`` row groups): SOPs, MACs and energy per sample, with the
        input kind; and the firing rate of every spiking layer."""
        groups = []
        for i, c in enumerate(self.layers):
            groups.append({"metrics": {"layer_sops": c.sops / self.n, "layer_macs": c.macs / self.n,
                                       "layer_energy_pj": c.energy_pj / self.n},
                           "extra": {"layer": c.layer, "layer_index": i, "input": c.input_kind,
                                     "encoding": c.layer == self.encoding_layer}})
        for i, r in enumerate(self.firing_rates):
            groups.append({"metrics": {"firing_rate": r.rate},
                           "extra": {"layer": r.label, "module": r.module, "layer_index": i, "triggered": False}})
        return groups


def _nearest_children(scopes: list[str]) -> dict[str, list[str]]:
    """Each scope's nearest recorded sub-scopes (no recorded scope between them)."""
    out: dict[str, list[str]] = {s: [] for s in scopes}
    for s in scopes:
        inner = [o for o in scopes if o.startswith(s + ".")]
        out[s] = [o for o in inner if not any(o.startswith(i + ".") for i in inner if i != o)]
    return out


@torch.no_grad()
def measure(model: nn.Module, x: torch.Tensor, *, batch_size: int = 32, rates: bool = True) -> EnergyReport:
    """Count ``model``'s operators on inputs ``x`` (frames ``[N, T, P, H, W]``; batch by batch on
    the model's device, in eval mode, modes restored). Returns per-sample costs per layer."""
    from spikingjelly.activation_based.op_counter import DispatchCounterMode, MACCounter, SynOpCounter

    if len(x) == 0:
        raise ValueError("energy: no inputs")
    ops = set(_weight_ops())
    syn, mac = SynOpCounter(), MACCounter()
    calls, non_spike, integer, order = _input_counters()
    dev = device_of(model)
    preds = []
    with preserve_modes(model):
        model.eval()
        with DispatchCounterMode([syn, mac, calls, non_spike, integer, order]):
            for i in range(0, len(x), batch_size):
                preds.append(model(x[i:i + batch_size].to(dev)).argmax(1).cpu())
    counts = {name: c.get_counts() for name, c in
              (("sops", syn), ("macs", mac), ("calls", calls), ("non_spike", non_spike), ("integer", integer))}
    root = type(model).__name__ + "."

    def total(kind: str, scope: str) -> int:
        return sum(v for op, v in counts[kind].get(scope, {}).items() if op in ops)

    # The op counter records an operator in its module and every module above it. A module's own
    # cost is its total less its nearest recorded sub-modules' (attention computes Q K^T and its
    # product with V itself, beside its projection layers), and every module with own calls is a layer.
    scopes = [s for s in counts["calls"] if s != "Global"]
    children = _nearest_children(scopes)

    def own(kind: str, scope: str) -> int:
        return total(kind, scope) - sum(total(kind, c) for c in children[scope])

    layers = [LayerCost(layer=s.removeprefix(root), sops=float(own("sops", s)), macs=float(own("macs", s)),
                        calls=own("calls", s), non_spike_calls=own("non_spike", s), integer_calls=own("integer", s))
              for s in sorted(scopes, key=lambda s: order.first.get(s, len(scopes))) if own("calls", s)]
    firing = []
    if rates:
        from snnsec.activity import firing_rates

        try:
            firing = firing_rates(model, x, batch_size=batch_size)
        except ValueError:  # a model without spiking neurons: no rates to report
            firing = []
    return EnergyReport(layers=layers, n=len(x), firing_rates=firing, predictions=torch.cat(preds))
