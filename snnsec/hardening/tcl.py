"""Temporal contrastive learning (TCL) for spiking classifiers.

After Qiu et al., *Temporal Contrastive Learning for Spiking Neural Networks* (arXiv:2305.13909).
The paper's full text was not available when this was written: what follows is the supervised
contrastive loss of Khosla et al. (2020, the ``L_out`` form) applied over (sample, time step)
anchors, as the paper's abstract describes. The exact equation is in :func:`supcon_loss`.

Notation. A batch holds samples ``i = 1..B`` with labels ``y_i``; the backbone gives the
penultimate features ``h_{i,t}`` at every time step ``t = 1..T`` (the harness tap
``features_seq``), and a small projection head ``g`` (used only in training) maps them to
``z_{i,t} = g(h_{i,t}) / ||g(h_{i,t})||``. Every pair ``a = (i, t)`` is an anchor.

- positives ``P(a) = {b = (j, t') : b != a, y_j = y_i}``: the same sample at the other steps
  (the temporal constraint) and every step of every other sample of the same class (the class
  constraint);
- the contrast set ``A(a) = {b : b != a}``; the negatives are ``A(a) \\ P(a)``, i.e. ``y_j != y_i``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from snnsec.harness import preserve_modes

from snnsec.hardening.settings import DEFAULT_LAMBDA, DEFAULT_PROJ_DIM, DEFAULT_TAU


def contrastive_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(positive, negative)`` boolean masks ``[N, N]`` for anchors with these labels.

    ``positive[a, b]``: ``b != a`` and same label; ``negative[a, b]``: different label.
    The diagonal is in neither.
    """
    labels = torch.as_tensor(labels).reshape(-1)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def anchor_labels(y: torch.Tensor, T: int, views: int = 1) -> torch.Tensor:
    """Labels of the anchors of ``views`` stacked ``[views, B, T]`` representations, flattened."""
    return y.reshape(1, -1, 1).expand(views, -1, T).reshape(-1)


def supcon_loss(z: torch.Tensor, labels: torch.Tensor, tau: float = DEFAULT_TAU) -> torch.Tensor:
    """Supervised contrastive loss over the rows of ``z`` (``[N, d]``, L2-normalised here).

    With ``s_ab = z_a . z_b / tau``::

        L = 1/|A+| * sum_{a in A+}  -1/|P(a)| * sum_{p in P(a)} [ s_ap - log sum_{b != a} exp(s_ab) ]

    where ``A+`` are the anchors with at least one positive (an anchor alone in its class
    contributes nothing, rather than a division by zero). Masks: :func:`contrastive_masks`.
    """
    if z.ndim != 2:
        raise ValueError(f"supcon_loss: z must be [N, d], got shape {tuple(z.shape)}")
    if tau <= 0:
        raise ValueError(f"supcon_loss: temperature tau must be > 0, got {tau}")
    z = F.normalize(z, dim=1)
    pos, _ = contrastive_masks(labels.to(z.device))
    sim = z @ z.T / tau
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    log_denominator = torch.logsumexp(sim.masked_fill(eye, float("-inf")), dim=1)
    log_prob = sim - log_denominator[:, None]
    n_pos = pos.sum(1)
    has_pos = n_pos > 0
    if not bool(has_pos.any()):
        return z.sum() * 0.0  # keeps the graph: a batch of singletons adds no gradient
    per_anchor = -(log_prob * pos).sum(1)[has_pos] / n_pos[has_pos]
    return per_anchor.mean()


class ProjectionHead(nn.Module):
    """``g``: Linear -> ReLU -> Linear, as SupCon's MLP head; used only while training."""

    def __init__(self, in_dim: int, out_dim: int = DEFAULT_PROJ_DIM, hidden: int | None = None):
        super().__init__()
        hidden = int(hidden or in_dim)
        self.net = nn.Sequential(nn.Linear(int(in_dim), hidden), nn.ReLU(inplace=True), nn.Linear(hidden, int(out_dim)))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


def logits_and_features_seq(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Time-averaged logits ``[B, K]`` and per-step penultimate features ``[B, T, D]``, in one forward."""
    taps, logits = model.taps(x, return_logits=True)
    if "features_seq" not in taps:
        raise ValueError(f"TCL/STCL need the model tap 'features_seq' [B, T, D] (a head applied per time step); "
                         f"{type(model).__name__} gives only {sorted(taps)}")
    return logits, taps["features_seq"]


def feature_dim(model) -> int:
    """``D`` of the model's ``features_seq`` tap, probed on one zero input."""
    shape = tuple(model.input_shape)
    p = next(model.parameters(), None)
    x = torch.zeros((1, *shape), dtype=p.dtype if p is not None else torch.float32, device=p.device if p is not None else "cpu")
    with preserve_modes(model), torch.no_grad():
        model.eval()
        return int(model.taps(x)["features_seq"].shape[-1])


class TCLLoss(nn.Module):
    """``loss(model, x, y) = CE(mean_t o_{i,t}, y_i) + lambda * L_TCL``, returned with the logits.

    ``L_TCL`` is :func:`supcon_loss` over the ``B*T`` anchors ``z_{i,t}`` with temperature
    ``tau``. The projection head is this module's only parameter set: give
    ``loss.parameters()`` to the optimiser beside the model's; it is never saved with the model.
    ``last`` holds the two terms of the latest call (floats), for logging.
    """

    def __init__(self, feature_dim: int, *, tau: float = DEFAULT_TAU, lam: float = DEFAULT_LAMBDA,
                 proj_dim: int = DEFAULT_PROJ_DIM):
        super().__init__()
        if tau <= 0:
            raise ValueError(f"TCL: temperature tau must be > 0, got {tau}")
        if lam < 0:
            raise ValueError(f"TCL: weight lambda must be >= 0, got {lam}")
        self.tau, self.lam = float(tau), float(lam)
        self.head = ProjectionHead(feature_dim, proj_dim)
        self.last: dict[str, float] = {}

    def contrastive(self, feats_seq: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``L_TCL`` of features ``[V, B, T, D]`` (``V`` views) with sample labels ``y`` ``[B]``."""
        V, B, T, D = feats_seq.shape
        z = self.head(feats_seq.reshape(V * B * T, D))
        return supcon_loss(z, anchor_labels(y, T, V), self.tau)

    def forward(self, model, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, logits)``: the logits give the training loop its running accuracy."""
        logits, seq = logits_and_features_seq(model, x)
        ce = F.cross_entropy(logits, y)
        con = self.contrastive(seq.unsqueeze(0), y)
        self.last = {"ce": float(ce.detach()), "contrastive": float(con.detach())}
        return ce + self.lam * con, logits
