"""Hardened training recipes: TCL, STCL (temporal contrastive learning) and adversarial training.

    from snnsec.hardening import Recipe, build_recipe
    recipe = Recipe(loss="tcl", adv="pgd")          # TCL + PGD-AT at eps 2/255
    loss_fn = recipe.build(model)                  # loss_fn(model, x, y) -> (loss, logits)
    train(model, train_ds, test_ds, cfg, loss_fn=loss_fn)
    checkpoint.save(..., recipe={**recipe.to_dict(), "train": config.to_dict()})

See :mod:`snnsec.hardening.tcl`, :mod:`~snnsec.hardening.stcl` and
:mod:`~snnsec.hardening.adversarial` for the equations.
"""

from snnsec.hardening.adversarial import PGD, AdversarialLoss
from snnsec.hardening.recipe import LOSSES, Recipe, add_arguments, build_recipe, recipe_from_args, recipe_from_meta
from snnsec.hardening.stcl import EventAugment, STCLLoss
from snnsec.hardening.tcl import ProjectionHead, TCLLoss, contrastive_masks, supcon_loss

__all__ = [
    "PGD", "AdversarialLoss", "LOSSES", "Recipe", "add_arguments", "build_recipe", "recipe_from_args", "recipe_from_meta",
    "EventAugment", "STCLLoss", "ProjectionHead", "TCLLoss", "contrastive_masks", "supcon_loss",
]
