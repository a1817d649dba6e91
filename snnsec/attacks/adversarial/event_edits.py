"""Raw-event attacks: add, delete and shift events of an ``(x, y, t, p)`` stream before framing.

An attacker between the sensor and the model changes events, not frames; the model sees the
frames the dataset's own framing (:func:`snnsec.data.frames.to_frames`) makes of them, with
event-count slicing as much as with time slicing. The budget is a fraction of the sample's
events: each added, deleted or shifted event counts one.

The search is first-order and greedy. Each round takes the loss gradient with respect to the
current frames (through the model's surrogate, or the estimator ``gradient`` names) and scores
every edit by the frame cells it switches: deleting all events of an occupied cell gains ``-g``
for as many events as the cell holds, adding one event to an empty cell gains ``+g``, shifting
the only event of a cell to an empty cell of the same pixel and polarity (its time moved into
the other frame's span) gains ``g_to - g_from``. The best edits by gain per event, one per cell,
fill the round's share of the budget; the stream is then framed again exactly, since an edit
moves the boundaries of count-sliced frames a little. The attack keeps the edited stream of the
round with the highest loss, and its result is judged on exact frames only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from snnsec.attacks.adversarial.gradients import gradient_mode
from snnsec.harness import device_of, preserve_modes

__all__ = ["EDIT_OPS", "EventEdits", "EventEditResult"]

EDIT_OPS = ("add", "delete", "shift")


@dataclass
class EventEditResult:
    events: list[np.ndarray]  # the adversarial streams
    frames: torch.Tensor  # their frames [N, T, P, H, W]
    correct: torch.Tensor  # [N] the model's prediction on them is the label
    edits: torch.Tensor  # [N] events added + deleted + shifted
    n_events: torch.Tensor  # [N] events of each clean stream
    counts: dict = field(default_factory=dict)  # per op, over all samples

    @property
    def edit_fraction(self) -> torch.Tensor:
        return self.edits.double() / self.n_events.clamp(min=1).double()


@dataclass
class EventEdits:
    """``EventEdits(budget=0.05, ops=("add", "delete", "shift"))(model, streams, labels, spec)``.

    ``budget``: edited events as a fraction of each sample's events (rounded down, at least 1
    when positive). ``rounds``: gradient steps, each spending an equal share of what is left.
    ``spec``: the dataset's :class:`~snnsec.data.spec.DataSpec` (sensor size, T, slicing, binary).
    """

    budget: float
    ops: tuple[str, ...] = EDIT_OPS
    rounds: int = 5
    gradient: str = "model"
    batch_size: int = 32

    def __post_init__(self) -> None:
        if not (0 <= float(self.budget) <= 1):
            raise ValueError(f"event edits: budget is a fraction of the sample's events in [0, 1], got {self.budget!r}")
        self.ops = tuple(self.ops)
        bad = [o for o in self.ops if o not in EDIT_OPS]
        if bad or not self.ops:
            raise ValueError(f"event edits: ops must be some of {EDIT_OPS}, got {list(self.ops)}")
        if int(self.rounds) < 1:
            raise ValueError(f"event edits: rounds must be >= 1, got {self.rounds}")

    def __call__(self, model: nn.Module, streams: list[np.ndarray], labels, spec) -> EventEditResult:
        y = torch.as_tensor(labels, dtype=torch.long)
        if len(streams) != y.numel():
            raise ValueError(f"event edits: {len(streams)} streams for {y.numel()} labels")
        n_events = torch.tensor([len(s) for s in streams])
        allowance = [int(math.floor(self.budget * len(s))) or (1 if self.budget > 0 else 0) for s in streams]
        current = [s.copy() for s in streams]
        best = [s.copy() for s in streams]
        edits = torch.zeros(len(streams), dtype=torch.long)
        best_edits = edits.clone()
        counts = {o: 0 for o in self.ops}
        with preserve_modes(model):
            model.eval()
            frames = _frames(current, spec)
            loss, grad, pred = self._forward(model, frames, y, need_grad=True)
            best_loss, best_frames, best_pred = loss.clone(), frames.clone(), pred.clone()
            for r in range(int(self.rounds)):
                for i, s in enumerate(current):
                    share = -(-(allowance[i] - int(edits[i])) // (int(self.rounds) - r))  # ceil
                    if share <= 0:
                        continue
                    current[i], spent, by_op = _edit(s, grad[i].numpy(), share, self.ops, spec)
                    edits[i] += spent
                    for o, k in by_op.items():
                        counts[o] += k
                frames = _frames(current, spec)
                # one forward per round: its loss picks the best round, its gradient guides the next
                loss, grad, pred = self._forward(model, frames, y, need_grad=r + 1 < int(self.rounds))
                for i in torch.nonzero(loss > best_loss).flatten().tolist():
                    best[i], best_edits[i], best_loss[i] = current[i].copy(), edits[i], loss[i]
                    best_frames[i], best_pred[i] = frames[i], pred[i]
        return EventEditResult(events=best, frames=best_frames, correct=best_pred == y, edits=best_edits,
                               n_events=n_events, counts=counts)

    def _forward(self, model, frames, y, need_grad):
        """Per-sample loss, its gradient with respect to the frames (when asked) and the predictions."""
        dev = device_of(model)
        losses, grads, preds = [], [], []
        with gradient_mode(model, self.gradient):
            for i in range(0, frames.shape[0], self.batch_size):
                xb = frames[i:i + self.batch_size].to(dev).requires_grad_(need_grad)
                with torch.set_grad_enabled(need_grad):
                    logits = model(xb)
                    loss = F.cross_entropy(logits, y[i:i + self.batch_size].to(dev), reduction="none")
                if need_grad:
                    (g,) = torch.autograd.grad(loss.sum(), xb)
                    grads.append(g.detach().cpu())
                losses.append(loss.detach().cpu())
                preds.append(logits.detach().argmax(1).cpu())
        return torch.cat(losses), (torch.cat(grads) if need_grad else None), torch.cat(preds)


def _frames(streams: list[np.ndarray], spec) -> torch.Tensor:
    from snnsec.data.frames import to_frames

    return torch.stack([torch.from_numpy(to_frames(s, spec.sensor_size, spec.T, spec.slicing, spec.binary)
                                         .astype(np.float32)) for s in streams])


def _edit(events: np.ndarray, g: np.ndarray, share: int, ops, spec):
    """One round on one stream: the best edits (by first-order gain per event) worth at most
    ``share`` events, one per frame cell. Returns the new stream, events spent, spent per op."""
    from snnsec.data.frames import frame_bounds

    T, P, H, W = g.shape
    n_cells = g.size
    bounds = frame_bounds(events, T, spec.slicing)
    used = int(bounds[T])
    f_of = np.searchsorted(bounds, np.arange(used), side="right") - 1  # frame of each used event
    p_of = events["p"][:used].astype(np.int64) if P > 1 else np.zeros(used, dtype=np.int64)
    cell = ((f_of * P + p_of) * H + events["y"][:used].astype(np.int64)) * W + events["x"][:used].astype(np.int64)
    count = np.bincount(cell, minlength=n_cells)
    gf = g.reshape(-1).astype(np.float64)
    # candidates as arrays: gain per event, cost in events, kind, source cell, target cell (-1: none)
    gains, costs, kinds, srcs, dsts = [], [], [], [], []
    if "delete" in ops:
        c = np.flatnonzero((count > 0) & (gf < 0) & (count <= share))
        gains.append(-gf[c] / count[c]), costs.append(count[c]), kinds.append(np.full(len(c), 0))
        srcs.append(c), dsts.append(np.full(len(c), -1))
    if "add" in ops:
        c = np.flatnonzero((count == 0) & (gf > 0))
        gains.append(gf[c]), costs.append(np.ones(len(c), dtype=np.int64)), kinds.append(np.full(len(c), 1))
        srcs.append(np.full(len(c), -1)), dsts.append(c)
    if "shift" in ops:
        grid = gf.reshape(T, P * H * W)
        empty_gain = np.where(count.reshape(T, -1) > 0, -np.inf, grid)
        to_frame = empty_gain.argmax(0)  # per pixel and polarity: the best empty frame
        gain_to = empty_gain[to_frame, np.arange(P * H * W)]
        c = np.flatnonzero(count == 1)
        pix = c % (P * H * W)
        gain = gain_to[pix] - gf[c]
        ok = np.isfinite(gain) & (gain > 0)
        c, pix, gain = c[ok], pix[ok], gain[ok]
        gains.append(gain), costs.append(np.ones(len(c), dtype=np.int64)), kinds.append(np.full(len(c), 2))
        srcs.append(c), dsts.append(to_frame[pix] * (P * H * W) + pix)
    gain, cost, kind, src, dst = (np.concatenate(a) for a in (gains, costs, kinds, srcs, dsts))
    order = np.argsort(-gain, kind="stable")
    spent, taken = 0, np.zeros(n_cells, dtype=bool)
    chosen = []
    for k in order:
        if gain[k] <= 0 or spent >= share:
            break
        if spent + cost[k] > share or (src[k] >= 0 and taken[src[k]]) or (dst[k] >= 0 and taken[dst[k]]):
            continue
        taken[[v for v in (src[k], dst[k]) if v >= 0]] = True
        spent += int(cost[k])
        chosen.append(k)
    by_op = {o: 0 for o in ops}
    if not spent:
        return events, 0, by_op
    chosen = np.asarray(chosen)
    names = ("delete", "add", "shift")
    for j, o in enumerate(names):
        if o in by_op:
            by_op[o] = int(cost[chosen][kind[chosen] == j].sum())
    span = _frame_spans(events, bounds)
    frame_of_cell = lambda c: c // (P * H * W)  # noqa: E731
    keep = np.ones(len(events), dtype=bool)
    dropped = np.zeros(n_cells, dtype=bool)
    dropped[src[chosen[kind[chosen] == 0]]] = True
    keep[:used] &= ~dropped[cell]
    new_t = events["t"].copy()
    moves = chosen[kind[chosen] == 2]
    if len(moves):
        first = np.full(n_cells, -1, dtype=np.int64)
        first[cell[::-1]] = np.arange(used)[::-1]  # the (only) event of each source cell
        new_t[first[src[moves]]] = span[frame_of_cell(dst[moves])]
    new = events.copy()
    new["t"] = new_t
    new = new[keep]
    adds = dst[chosen[kind[chosen] == 1]]
    if len(adds):
        extra = np.zeros(len(adds), dtype=events.dtype)
        rest = adds % (P * H * W)
        extra["p"] = rest // (H * W) if P > 1 else events["p"][0]
        extra["y"], extra["x"] = (rest % (H * W)) // W, rest % W
        extra["t"] = span[frame_of_cell(adds)]
        new = np.concatenate([new, extra])
    return new[np.argsort(new["t"], kind="stable")], spent, by_op


def _frame_spans(events: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """A timestamp inside each frame's span (the middle of its first and last event's times)."""
    T = len(bounds) - 1
    t = events["t"].astype(np.int64)
    out = np.zeros(T, dtype=np.int64)
    for f in range(T):
        a, b = int(bounds[f]), int(bounds[f + 1])
        if b > a:
            out[f] = (t[a] + t[b - 1]) // 2
        else:  # an empty frame: between its neighbours
            out[f] = out[f - 1] if f else (t[0] if len(t) else 0)
    return out
