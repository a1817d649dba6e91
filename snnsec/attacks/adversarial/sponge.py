"""The sponge attack on an SNN: an L-inf-bounded perturbation that maximises the spikes a
model fires, and with them its synaptic operations and energy.

Sponge examples (Shumailov et al., "Sponge Examples: Energy-Latency Attacks on Neural
Networks", EuroS&P 2021) raise an ANN's energy through its activation density; an SNN's
energy is its spike count, so the objective here is the total number of spikes over every
spiking layer and time step, ascended through the surrogate gradient with PGD steps (sign of
the gradient, step ``2.5 * eps / steps`` as Madry's PGD, no random start: the clean input is
where a sponge starts). On binary event frames the perturbed input is real-valued, so the
encoding layer then multiplies (MACs) where it accumulated before: :mod:`snnsec.energy`
counts that too.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from snnsec.harness import device_of, inspection_mode, spiking_neurons


class Sponge:
    """``atk(x) -> x_adv``: frames ``[B, T, P, H, W]`` in [0, 1], at most ``eps`` away (L-inf)."""

    def __init__(self, model: nn.Module, eps: float, steps: int = 20) -> None:
        if not eps > 0 or int(steps) < 1:
            raise ValueError(f"sponge: eps must be > 0 and steps >= 1, got eps={eps!r}, steps={steps!r}")
        self.model, self.eps, self.steps = model, float(eps), int(steps)
        self.neurons = [m for _, m, _ in spiking_neurons(model)]
        if not self.neurons:
            raise ValueError(f"sponge: {type(model).__name__} has no spiking neuron (no module holds a surrogate)")

    def params(self) -> dict:
        return {"attack": "sponge", "threat": "linf", "eps": self.eps, "steps": self.steps, "objective": "spike count"}

    def spikes(self, x: torch.Tensor) -> torch.Tensor:
        """The total spike count of ``x``'s forward, differentiable through the surrogates."""
        total = []

        def record(_module, _inputs, output):
            s = output[0] if isinstance(output, (tuple, list)) else output
            total.append(s.sum())

        hooks = [m.register_forward_hook(record) for m in self.neurons]
        try:
            self.model(x)
        finally:
            for h in hooks:
                h.remove()
        return torch.stack(total).sum()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        home, dev = x.device, device_of(self.model)
        x0 = x.detach().to(dev)
        alpha = 2.5 * self.eps / self.steps
        xa = x0.clone()
        with inspection_mode(self.model):
            for _ in range(self.steps):
                xa.requires_grad_(True)
                (g,) = torch.autograd.grad(self.spikes(xa), xa)
                xa = (x0 + (xa.detach() + alpha * g.sign() - x0).clamp(-self.eps, self.eps)).clamp(0.0, 1.0)
        return xa.detach().to(home)
