"""Adversarial training: PGD-AT (Madry et al. 2018) and TRADES (Zhang et al. 2019), L-inf, frames in [0, 1].

Both wrap any base loss of the form ``loss(model, x, y)`` (CE, TCL, STCL), so TCL+AT and
STCL+AT are one object each:

- PGD-AT: ``base(model, x_adv, y)`` with ``x_adv`` = PGD on CE within ``||x_adv - x||_inf <= eps``.
- TRADES: ``base(model, x, y) + beta * KL(p(x) || p(x_adv))`` (batch mean), with ``x_adv``
  maximising that KL from ``x + 0.001 * N(0, 1)``, as the reference code starts.

The adversarial examples are generated in eval mode (batch norm uses its running statistics
and is not updated by the attack), then the modes are restored for the training step.
Defaults follow SNN-RAT's ``main_train.py`` (eps 2/255, step 1/255, 2 steps), the usual SNN
adversarial-training protocol; TRADES' beta = 6 is the paper's CIFAR-10 value.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from snnsec.harness import preserve_modes

from snnsec.hardening.settings import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_EPS, DEFAULT_STEPS, METHODS


def _kl(logits_clean: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(clean) || softmax(adv))`` averaged over the batch."""
    return F.kl_div(F.log_softmax(logits_adv, 1), F.softmax(logits_clean, 1), reduction="batchmean")


@dataclass
class PGD:
    """``atk(x, y) -> x_adv``: L-inf PGD on the model's CE (or TRADES' KL when ``loss="kl"``).

    ``random_start`` draws uniformly in the eps-ball (Madry); the KL variant always starts at
    ``x + 0.001 * N(0, 1)`` because its gradient is zero at ``x`` itself. The model's modes
    are restored on return.
    """

    model: nn.Module
    eps: float = DEFAULT_EPS
    alpha: float = DEFAULT_ALPHA
    steps: int = DEFAULT_STEPS
    random_start: bool = True
    loss: str = "ce"

    def __post_init__(self) -> None:
        if self.eps < 0 or self.alpha < 0 or int(self.steps) < 0:
            raise ValueError(f"PGD: eps, alpha and steps must be >= 0, got eps={self.eps}, alpha={self.alpha}, steps={self.steps}")
        if self.loss not in ("ce", "kl"):
            raise ValueError(f"PGD.loss: expected 'ce' or 'kl', got {self.loss!r}")

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        x = x.detach()
        if self.eps == 0 or self.steps == 0:
            return x.clone()
        with preserve_modes(self.model):
            self.model.eval()
            if self.loss == "kl":
                with torch.no_grad():
                    ref = self.model(x)
                x_adv = x + 0.001 * torch.randn_like(x)
            else:
                if y is None:
                    raise ValueError("PGD with loss='ce' needs the labels y")
                x_adv = x + torch.empty_like(x).uniform_(-self.eps, self.eps) if self.random_start else x.clone()
            x_adv = torch.min(torch.max(x_adv, x - self.eps), x + self.eps).clamp(0, 1)
            for _ in range(int(self.steps)):
                x_adv.requires_grad_(True)
                out = self.model(x_adv)
                loss = _kl(ref, out) if self.loss == "kl" else F.cross_entropy(out, y)
                (grad,) = torch.autograd.grad(loss, x_adv)
                x_adv = x_adv.detach() + self.alpha * grad.sign()
                x_adv = torch.min(torch.max(x_adv, x - self.eps), x + self.eps).clamp(0, 1)
        return x_adv.detach()


class AdversarialLoss(nn.Module):
    """``loss(model, x, y)`` that trains ``base`` adversarially (``method`` "pgd" or "trades").

    ``base`` is kept as a submodule, so a TCL projection head stays among ``parameters()``.
    """

    def __init__(self, base: nn.Module, *, method: str = "pgd", eps: float = DEFAULT_EPS, alpha: float = DEFAULT_ALPHA,
                 steps: int = DEFAULT_STEPS, beta: float = DEFAULT_BETA):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"adversarial training: method must be one of {METHODS}, got {method!r}")
        if beta < 0:
            raise ValueError(f"TRADES beta must be >= 0, got {beta}")
        self.base, self.method = base, method
        self.eps, self.alpha, self.steps, self.beta = float(eps), float(alpha), int(steps), float(beta)
        self.last: dict[str, float] = {}

    def forward(self, model, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(loss, logits)``: PGD-AT's logits are those of the adversarial batch, TRADES' the clean ones."""
        if self.method == "pgd":
            x_adv = PGD(model, self.eps, self.alpha, self.steps)(x, y)
            return _loss_and_logits(self.base(model, x_adv, y))
        x_adv = PGD(model, self.eps, self.alpha, self.steps, loss="kl")(x)
        natural, logits = _loss_and_logits(self.base(model, x, y))
        clean = model(x)
        robust = _kl(clean, model(x_adv))
        self.last = {"natural": float(natural.detach()), "robust": float(robust.detach())}
        return natural + self.beta * robust, clean if logits is None else logits


def _loss_and_logits(out) -> tuple[torch.Tensor, torch.Tensor | None]:
    return out if isinstance(out, tuple) else (out, None)
