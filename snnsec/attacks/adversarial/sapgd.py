"""SA-PGD: the stable adaptive PGD of arXiv 2512.22522 ("Towards Reliable Evaluation of
Adversarial Robustness for Spiking Neural Networks"; reference
``craree/Towards-Reliable-Evaluation-of-Adversarial-Robustness-for-Spiking-Neural-Networks``,
``attack.py`` ``ASSG_SAPGD``/``SAPGD``), as a torchattacks attack so the adapter runs it like
any other (``atk(x, y)``, modes restored, forwards counted). Paired with the ASSG estimator
(``--surrogates assg:<omega>``) it is the paper's ASSG + SA-PGD.

Per sample: start at ``x + eps r / max|r|`` with ``r ~ U(-1, 1)`` (APGD's start); each step takes
the gradient ``g`` of the summed cross-entropy (or DLR), keeps Adam-like moments of the
L1-normalised gradient, ``m = 0.5 m + g / mean|g|`` and ``v = 0.8 v + g^2 / mean(g^2)`` (no bias
correction, as the reference), moves by ``clip(m / sqrt(v) * step, -step, step)`` and projects
onto the eps-ball and [0, 1]. The step starts at eps and halves on the reference's schedule
(after 22 % of the steps, then after shrinking intervals: iterations 22, 41, 57, 70, 80, 87, 93
and 99 of 100). The latest misclassified iterate is kept.

Where it differs from the reference, on purpose: a 1e-12 floor under ``mean|g|`` and
``mean(g^2)`` (the reference divides by zero on a sample whose gradient vanishes, which a masked
model produces, and the NaN poisons the sample). Every iterate is judged, the final one included,
as in the reference (which takes a gradient there too). From the same start the iterates are
bitwise the reference's (2 samples x 10 steps with ASSG on a csnn, run here); random starts are
drawn per sample (keyed draws), the reference's from the global stream.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchattacks.attack import Attack as TorchAttack

# The reference's constants: moment decays, first halving at 22 % of the steps, the interval
# shrinking by 3 % of the steps down to 6 %
_BETA1, _BETA2 = 0.5, 0.8
_FIRST, _SHRINK, _FLOOR = 0.22, 0.03, 0.06
_TINY = 1e-12


def halving_steps(steps: int) -> list[int]:
    """The iterations after which SA-PGD halves its step size."""
    out, k, count = [], max(int(_FIRST * steps), 1), 0
    for i in range(steps):
        count += 1
        if count == k:
            out.append(i)
            count = 0
            k = max(k - max(int(_SHRINK * steps), 1), max(int(_FLOOR * steps), 1))
    return out


def _dlr(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    z, _ = logits.sort(dim=1)
    true = logits.gather(1, y[:, None])[:, 0]
    best_other = torch.where(z[:, -1] == true, z[:, -2], z[:, -1])
    return -(true - best_other) / (z[:, -1] - z[:, -3] + _TINY)


class SAPGD(TorchAttack):
    def __init__(self, model, eps: float = 8 / 255, steps: int = 100, loss: str = "ce", seed: int = 0) -> None:
        super().__init__("SAPGD", model)
        if loss not in ("ce", "dlr"):
            raise ValueError(f"sapgd: loss must be 'ce' or 'dlr', got {loss!r}")
        self.eps, self.steps, self.loss, self.seed = float(eps), int(steps), loss, int(seed)
        self.supported_mode = ["default"]

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (F.cross_entropy(logits, y, reduction="none") if self.loss == "ce" else _dlr(logits, y)).sum()

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = images.clone().detach().to(self.device)
        y = labels.clone().detach().to(self.device)
        B = x.shape[0]
        view = (B,) + (1,) * (x.dim() - 1)
        dims = tuple(range(1, x.dim()))
        r = 2 * torch.rand_like(x) - 1
        x_adv = (x + self.eps * r / r.abs().amax(dim=dims, keepdim=True).clamp_min(_TINY)).clamp(0.0, 1.0)
        best = x_adv.clone()
        fooled = torch.zeros(B, dtype=torch.bool, device=x.device)
        step = torch.full(view, self.eps, device=x.device, dtype=x.dtype)
        halve = set(halving_steps(self.steps))
        m = v = None
        for i in range(self.steps):
            x_adv.requires_grad_(True)
            logits = self.get_logits(x_adv)
            (g,) = torch.autograd.grad(self._loss(logits, y), x_adv)
            with torch.no_grad():
                wrong = logits.argmax(1) != y
                best[wrong] = x_adv.detach()[wrong]
                fooled |= wrong
                g1 = g / g.abs().mean(dim=dims, keepdim=True).clamp_min(_TINY)
                g2 = g * g / (g * g).mean(dim=dims, keepdim=True).clamp_min(_TINY)
                m = g1 if m is None else _BETA1 * m + g1
                v = g2 if v is None else _BETA2 * v + g2
                t = torch.maximum(torch.minimum(m / (v.sqrt() + _TINY) * step, step), -step)
                x_adv = torch.minimum(torch.maximum(x_adv.detach() + t, x - self.eps), x + self.eps).clamp(0.0, 1.0)
                if i in halve:
                    step = step / 2
        with torch.no_grad():
            wrong = self.get_logits(x_adv).argmax(1) != y
        best[wrong & ~fooled] = x_adv[wrong & ~fooled]
        fooled |= wrong
        return torch.where(fooled.view(view), best, x_adv).detach()
