"""Siamese temporal contrastive learning (STCL): TCL over two augmented views.

Each sample ``x_i`` is augmented twice (:class:`EventAugment`, on frames, one vectorised call
per batch) into views ``v = 1, 2``; the shared network gives ``h_{v,i,t}`` and the projection
head ``z_{v,i,t}``. The ``2*B*T`` triples ``(v, i, t)`` are the anchors; positives of an anchor
are every other triple with the same label, across views, time steps and samples; the rest
are negatives::

    loss = 1/2 * [CE(mean_t o_{1,i,t}, y_i) + CE(mean_t o_{2,i,t}, y_i)] + lambda * L_STCL

with ``L_STCL`` the supervised contrastive loss of :func:`snnsec.hardening.tcl.supcon_loss`
over those anchors. Whether the paper adds a predictor / stop-gradient branch is not known
here; none is used.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F

from snnsec.data.augment import EventAugment
from snnsec.hardening.settings import DEFAULT_LAMBDA, DEFAULT_PROJ_DIM, DEFAULT_TAU
from snnsec.hardening.tcl import TCLLoss, logits_and_features_seq


class STCLLoss(TCLLoss):
    """``loss(model, x, y)``: the STCL objective above; ``augment`` makes the two views."""

    def __init__(self, feature_dim: int, *, tau: float = DEFAULT_TAU, lam: float = DEFAULT_LAMBDA,
                 proj_dim: int = DEFAULT_PROJ_DIM, augment: EventAugment | None = None):
        super().__init__(feature_dim, tau=tau, lam=lam, proj_dim=proj_dim)
        self.augment = augment or EventAugment()

    def views(self, x: torch.Tensor) -> torch.Tensor:
        """The two views stacked on the batch axis: ``[2B, T, P, H, W]``."""
        return torch.cat([self.augment(x), self.augment(x)])

    def forward(self, model, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, logits of the first view)``."""
        B = x.shape[0]
        logits, seq = logits_and_features_seq(model, self.views(x))
        ce = F.cross_entropy(logits, torch.cat([y, y]))  # the mean of the two views' CE
        con = self.contrastive(seq.reshape(2, B, *seq.shape[1:]), y)
        self.last = {"ce": float(ce.detach()), "contrastive": float(con.detach())}
        return ce + self.lam * con, logits[:B]
