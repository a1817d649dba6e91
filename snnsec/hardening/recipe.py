"""Training recipes: a plain, JSON-able record (what checkpoints store) and the objects it builds.

``Recipe`` names the loss (``ce``, ``tcl``, ``stcl``) and optional adversarial training
(``pgd`` or ``trades``); ``recipe.build(model)`` returns the loss object that the training
loop calls as ``loss_fn(model, x, y)``. The CLI adds the flags with :func:`add_arguments` and
turns them into a recipe with :func:`recipe_from_args`; :func:`snnsec.train.run_training`
records ``{**recipe.to_dict(), "train": ...}`` in the checkpoint and :func:`recipe_from_meta`
reads it back.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from snnsec.hardening.settings import (AUGMENT_DEFAULTS, DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_EPS, DEFAULT_LAMBDA,
                                      DEFAULT_PROJ_DIM, DEFAULT_STEPS, DEFAULT_TAU, METHODS, parse_eps)

LOSSES = ("ce", "tcl", "stcl")
ADVS = ("none", *METHODS)


@dataclass
class Recipe:
    """How a model is trained. ``to_dict()`` is what checkpoints and result rows record."""

    loss: str = "ce"
    tau: float = DEFAULT_TAU
    lam: float = DEFAULT_LAMBDA
    proj_dim: int = DEFAULT_PROJ_DIM
    augment: dict[str, Any] = field(default_factory=lambda: dict(AUGMENT_DEFAULTS))
    adv: str = "none"
    adv_eps: float = DEFAULT_EPS
    adv_alpha: float = DEFAULT_ALPHA
    adv_steps: int = DEFAULT_STEPS
    trades_beta: float = DEFAULT_BETA

    def __post_init__(self) -> None:
        self.adv_eps = parse_eps(self.adv_eps, field="adv_eps")
        self.adv_alpha = parse_eps(self.adv_alpha, field="adv_alpha")
        if self.loss not in LOSSES:
            raise ValueError(f"recipe field 'loss': expected one of {LOSSES}, got {self.loss!r}")
        if self.adv not in ADVS:
            raise ValueError(f"recipe field 'adv': expected one of {ADVS}, got {self.adv!r}")
        if not self.tau > 0:
            raise ValueError(f"recipe field 'tau': expected a temperature > 0, got {self.tau!r}")
        if self.lam < 0:
            raise ValueError(f"recipe field 'lam': expected a weight >= 0, got {self.lam!r}")
        if self.adv != "none" and not (self.adv_eps >= 0 and self.adv_alpha >= 0 and self.adv_steps >= 1):
            raise ValueError(f"recipe adversarial fields: expected adv_eps >= 0, adv_alpha >= 0, adv_steps >= 1; got "
                             f"{self.adv_eps}, {self.adv_alpha}, {self.adv_steps}")
        from snnsec.data.augment import EventAugment

        self.augment = EventAugment(**self.augment).to_dict()  # validates the keys and values

    @property
    def name(self) -> str:
        """Short label for tables and figures: ``ce``, ``tcl``, ``stcl+pgd``, ``ce+trades``, ..."""
        return self.loss if self.adv == "none" else f"{self.loss}+{self.adv}"

    def to_dict(self) -> dict[str, Any]:
        """Only the fields that matter for this recipe (contrastive ones only for TCL/STCL, ...)."""
        d = asdict(self)
        if self.loss == "ce":
            for k in ("tau", "lam", "proj_dim"):
                d.pop(k)
        if self.loss != "stcl":
            d.pop("augment")
        if self.adv == "none":
            for k in ("adv_eps", "adv_alpha", "adv_steps", "trades_beta"):
                d.pop(k)
        elif self.adv != "trades":
            d.pop("trades_beta")
        return {"name": self.name, **d}

    def build(self, model):
        """The loss object ``loss_fn(model, x, y) -> (loss, logits)`` for this recipe and model.

        TCL/STCL carry a projection head sized to the model's ``features_seq``: its
        parameters are ``loss_fn.parameters()`` and must be optimised with the model's.
        """
        from torch import nn

        from snnsec.hardening.adversarial import AdversarialLoss
        from snnsec.data.augment import EventAugment
        from snnsec.hardening.stcl import STCLLoss
        from snnsec.hardening.tcl import TCLLoss, feature_dim

        if self.loss == "ce":
            from snnsec.train import CrossEntropy

            base = CrossEntropy()
        elif self.loss == "tcl":
            base = TCLLoss(feature_dim(model), tau=self.tau, lam=self.lam, proj_dim=self.proj_dim)
        else:
            base = STCLLoss(feature_dim(model), tau=self.tau, lam=self.lam, proj_dim=self.proj_dim,
                            augment=EventAugment(**self.augment))
        p = next(model.parameters(), None)
        if p is not None and isinstance(base, nn.Module):
            base = base.to(p.device)
        if self.adv == "none":
            return base
        return AdversarialLoss(base, method=self.adv, eps=self.adv_eps, alpha=self.adv_alpha, steps=self.adv_steps,
                               beta=self.trades_beta)


def build_recipe(d: dict[str, Any] | str | None, *, source: str = "recipe") -> Recipe:
    """A :class:`Recipe` from its dict or its name (``"tcl+pgd"``); ``None``: plain CE.

    ``source`` names the file in error messages.
    """
    if d is None:
        return Recipe()
    if isinstance(d, str):
        loss, _, adv = d.partition("+")
        d = {"loss": loss, "adv": adv or "none"}
    if not isinstance(d, dict):
        raise ValueError(f"{source}: recipe must be a table/dict, got {type(d).__name__}")
    names = {f.name for f in fields(Recipe)}
    unknown = sorted(set(d) - names - {"name"})
    if unknown:
        raise ValueError(f"{source}: unknown recipe field(s) {unknown}; expected some of {sorted(names)}")
    try:
        return Recipe(**{k: v for k, v in d.items() if k != "name"})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: {exc}") from None


def recipe_from_meta(recipe: dict[str, Any] | None, *, source: str = "model.json") -> Recipe:
    """The hardening recipe a checkpoint's ``meta["recipe"]`` records.

    ``snnsec train`` writes ``{**Recipe.to_dict(), "train": TrainConfig.to_dict()}``; an
    empty or missing recipe means plain CE.
    """
    if not recipe:
        return Recipe()
    if not isinstance(recipe, dict):
        raise ValueError(f"{source}: field 'recipe' must be an object, got {type(recipe).__name__}")
    return build_recipe({k: v for k, v in recipe.items() if k != "train"}, source=f"{source}: field 'recipe'")


def add_arguments(parser: argparse.ArgumentParser, *, builtin_losses: tuple[str, ...] = ("ce",)) -> None:
    """Add the recipe flags to ``parser`` (an argument group "hardening recipe").

    ``--loss`` takes ``builtin_losses`` (the training loop's own, e.g. ``("ce", "mse-rate")``)
    plus ``tcl`` and ``stcl``; :func:`recipe_from_args` maps the parsed flags to a recipe.
    """
    g = parser.add_argument_group("hardening recipe")
    losses = tuple(dict.fromkeys([*builtin_losses, *LOSSES]))
    g.add_argument("--loss", choices=losses, default="ce",
                   help="ce: cross-entropy on time-averaged logits; tcl: + temporal supervised contrastive loss "
                        "over (sample, time step) pairs; stcl: the same over two augmented views"
                        + ("; " + ", ".join(b for b in builtin_losses if b not in LOSSES) + ": the training loop's own"
                           if set(builtin_losses) - set(LOSSES) else "") + " (default ce)")
    g.add_argument("--tcl-tau", type=float, default=DEFAULT_TAU, help=f"contrastive temperature (default {DEFAULT_TAU})")
    g.add_argument("--tcl-lambda", type=float, default=DEFAULT_LAMBDA, help=f"weight of the contrastive term (default {DEFAULT_LAMBDA})")
    g.add_argument("--tcl-proj-dim", type=int, default=DEFAULT_PROJ_DIM, help=f"projection head output size (default {DEFAULT_PROJ_DIM})")
    aug = AUGMENT_DEFAULTS
    g.add_argument("--aug-shift", type=int, default=aug["max_shift"], help=f"STCL spatial jitter, pixels (default {aug['max_shift']})")
    g.add_argument("--aug-drop", type=float, default=aug["drop"], help=f"STCL event drop probability (default {aug['drop']})")
    g.add_argument("--aug-time-jitter", type=float, default=aug["time_jitter"],
                   help=f"STCL time-jitter probability (default {aug['time_jitter']})")
    g.add_argument("--aug-flip-polarity", type=float, default=aug["flip_polarity"],
                   help=f"STCL polarity-flip probability; 0 where polarity carries the class (default {aug['flip_polarity']})")
    g.add_argument("--adv", choices=ADVS, default="none", help="adversarial training: pgd (PGD-AT) or trades (default none)")
    g.add_argument("--adv-eps", default=DEFAULT_EPS, help="L-inf training radius, a number or k/255 (default 2/255)")
    g.add_argument("--adv-alpha", default=DEFAULT_ALPHA, help="PGD step size, a number or k/255 (default 1/255)")
    g.add_argument("--adv-steps", type=int, default=DEFAULT_STEPS, help=f"PGD steps per batch (default {DEFAULT_STEPS})")
    g.add_argument("--trades-beta", type=float, default=DEFAULT_BETA, help=f"TRADES robustness weight (default {DEFAULT_BETA})")


def recipe_from_args(args: argparse.Namespace) -> Recipe | None:
    """The recipe the flags of :func:`add_arguments` describe; ``None`` for plain training with a
    built-in loss (``--loss ce`` or another built-in, no ``--adv``), which the training loop handles itself."""
    if args.loss not in LOSSES:
        if args.adv != "none":
            raise ValueError(f"command line: --adv {args.adv} works with --loss {'|'.join(LOSSES)}, not {args.loss}")
        return None
    if args.loss == "ce" and args.adv == "none":
        return None
    return build_recipe({
        "loss": args.loss, "tau": args.tcl_tau, "lam": args.tcl_lambda, "proj_dim": args.tcl_proj_dim,
        "augment": {"max_shift": args.aug_shift, "drop": args.aug_drop, "time_jitter": args.aug_time_jitter,
                    "flip_polarity": args.aug_flip_polarity},
        "adv": args.adv, "adv_eps": args.adv_eps, "adv_alpha": args.adv_alpha, "adv_steps": args.adv_steps,
        "trades_beta": args.trades_beta,
    }, source="command line")
