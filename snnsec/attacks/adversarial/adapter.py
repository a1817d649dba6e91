"""torchattacks on a :class:`~snnsec.harness.SpikingClassifier`.

One class, :class:`Attack`, builds any supported torchattacks attack on a model's attack view
(time packed into channels, ``[B, T*P, H, W]``) and is the ``atk(x, y) -> x_adv`` object the
rest of the suite uses. It takes frames ``[B, T, P, H, W]``
(or static images ``[B, C, H, W]`` for rate-coded models), returns the same shape, restores
every module's training flag afterwards (torchattacks leaves eval models in train mode when
asked to attack in train mode) and counts forwards and backwards through :class:`Counter`.

Threat models. ``linf``/``l2`` attacks are bounded by eps. ``minimal`` attacks (CW,
DeepFool, SparseFool, OnePixel) look for the smallest perturbation they can find, whatever
its size; the evaluator counts one of their adversarials at radius eps only if it lies
inside the L-inf ball of radius eps, so they are valid (usually weak) L-inf attacks too.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn
import torchattacks

from snnsec.attacks.catalog import ATTACKS, FAST_QUERIES, FAST_STEPS, FULL_QUERIES, attack_names
from snnsec.attacks.adversarial.adaptive import restart_statistics
from snnsec.attacks.adversarial.per_sample import keyed_draws, model_forward
from snnsec.harness import AttackView, device_of, preserve_modes, torch_rng_restored

__all__ = ["ATTACKS", "Attack", "Counter", "attack_names"]


class Counter(nn.Module):
    """Wraps a model and counts what an attack costs.

    ``forwards``/``backwards``: calls (a backward is counted when a gradient reaches the
    logits, so FAB's per-class Jacobian counts K). ``forward_samples``/``backward_samples``:
    the same weighted by batch size, the comparable unit across attacks whose batches shrink.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.zero()

    def zero(self) -> None:
        self.forwards = self.backwards = self.forward_samples = self.backward_samples = 0

    def counts(self) -> dict[str, int]:
        return {"forwards": self.forwards, "backwards": self.backwards, "forward_samples": self.forward_samples,
                "backward_samples": self.backward_samples}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with model_forward():
            out = self.model(x)
        self.forwards += 1
        self.forward_samples += int(x.shape[0])
        if out.requires_grad:
            n = int(x.shape[0])

            def hook(grad):
                self.backwards += 1
                self.backward_samples += n

            out.register_hook(hook)
        return out






class Attack:
    """``atk(x, y) -> x_adv`` for one torchattacks attack on a :class:`SpikingClassifier`.

    ``model``: the classifier (or any module taking the same input). ``steps``/``queries``
    default to full strength (PGD-20, APGD 100, Square 5,000) unless ``fast=True``. Counts of
    forwards/backwards accumulate in ``self.counter`` (call ``counter.zero()`` to restart).
    ``options`` set other attributes of the torchattacks object (e.g. CW's ``c``, DeepFool's
    ``overshoot``); an attribute the attack does not have is an error.
    """

    def __init__(self, model: nn.Module, name: str, eps: float = 0.0, *, steps: int | None = None,
                 queries: int | None = None, seed: int = 0, eot_iter: int | None = None, fast: bool = False,
                 num_classes: int | None = None, **options) -> None:
        if name not in ATTACKS:
            raise ValueError(f"unknown attack {name!r}; expected one of {attack_names()} (or 'bits' for spike flips)")
        if not (isinstance(eps, (int, float)) and eps >= 0 and math.isfinite(eps)):
            raise ValueError(f"attack {name}: eps must be a finite number >= 0, got {eps!r}")
        self.model = model
        self.name = name
        self.info = ATTACKS[name]
        self.eps = float(eps)
        self.seed = int(seed)
        self.fast = bool(fast)
        if num_classes is None:
            num_classes = getattr(model, "num_classes", None)
        if num_classes is None:
            raise ValueError(f"attack {name}: pass num_classes (the model has no .num_classes)")
        self.num_classes = int(num_classes)
        info = self.info
        full = info.full_steps or 1
        self.steps = int(steps) if steps is not None else (min(full, FAST_STEPS) if fast else full)
        self.queries = int(queries) if queries is not None else (FAST_QUERIES if fast else FULL_QUERIES)
        self.eot_iter = int(eot_iter) if eot_iter is not None else (info.eot_iter or 1)
        self.options = dict(options)
        self.counter = Counter(AttackView(model))
        self._build()  # fail now on a bad option, not in the middle of an evaluation

    def params(self) -> dict:
        out = {"attack": self.name, "threat": self.info.threat, "seed": self.seed}
        if self.info.uses_eps:
            out["eps"] = self.eps
        if self.info.full_steps is not None:
            out["steps"] = self.steps
        if self.info.uses_queries:
            out["queries"] = self.queries
        if self.info.eot_iter is not None:
            out["eot_iter"] = self.eot_iter
        if self.info.input_margin:
            out["input_margin"] = self.info.input_margin
        return {**out, **self.options}

    def _build(self) -> torchattacks.Attack:
        atk = self.info.build(self.counter, self.eps, steps=self.steps, seed=self.seed, num_classes=self.num_classes,
                              queries=self.queries, eot_iter=self.eot_iter)
        for k, v in self.options.items():
            if k.startswith("_") or not hasattr(atk, k):
                raise ValueError(f"attack {self.name}: torchattacks.{type(atk).__name__} has no option {k!r}")
            setattr(atk, k, v)
        return atk

    def __call__(self, x: torch.Tensor, y: torch.Tensor, keys=None) -> torch.Tensor:
        """Adversarial examples of ``x`` (labels ``y``), on ``x``'s device; computed on the model's.

        ``keys`` (one int per sample, e.g. its index in the evaluated set): random starts are drawn
        per sample from these keys (:func:`~snnsec.attacks.adversarial.per_sample.keyed_draws`), so a
        sample gets the same start in any batch; without them they come from the seeded global stream.
        """
        home, dev = x.device, device_of(self.model)
        x, y = x.to(dev), y.to(dev)
        view = self.counter.model
        packed = view.pack(x)
        restart_statistics(self.model)
        draws = contextlib.nullcontext() if keys is None else keyed_draws(keys, self.seed, packed.ndim)
        with preserve_modes(self.model), _rng_guard(self.seed), draws:
            atk = self._build()
            m = self.info.input_margin
            inp = m + (1 - 2 * m) * packed if m else packed
            adv = atk(inp, y)
        if m:
            # carry the perturbation of the mapped input back to the original one
            adv = (packed + (adv - inp)).clamp(0.0, 1.0)
        return view.unpack(adv.detach()).to(home)


@contextlib.contextmanager
def _rng_guard(seed: int):
    # PGD's random start and several torchattacks attacks draw from the global RNG (APGD even reseeds
    # it); seed it per call for reproducibility and give the caller its RNG state back afterwards.
    with torch_rng_restored():
        torch.manual_seed(seed)
        yield
