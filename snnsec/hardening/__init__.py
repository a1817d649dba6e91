"""Hardened training recipes: TCL, STCL (temporal contrastive learning) and adversarial training.

    from snnsec.hardening import Recipe, build_recipe
    recipe = Recipe(loss="tcl", adv="pgd")          # TCL + PGD-AT at eps 2/255
    loss_fn = recipe.build(model)                  # loss_fn(model, x, y) -> (loss, logits)
    train(model, train_ds, test_ds, cfg, loss_fn=loss_fn)
    checkpoint.save(..., recipe={**recipe.to_dict(), "train": config.to_dict()})

See :mod:`snnsec.hardening.tcl`, :mod:`~snnsec.hardening.stcl` and
:mod:`~snnsec.hardening.adversarial` for the equations.
"""

import importlib

# Names resolve on first use, so that the recipe flags (snnsec train --help) load without torch.
_HOMES = {
    "PGD": "adversarial", "AdversarialLoss": "adversarial",
    "LOSSES": "recipe", "Recipe": "recipe", "add_arguments": "recipe", "build_recipe": "recipe",
    "recipe_from_args": "recipe", "recipe_from_meta": "recipe",
    "EventAugment": "stcl", "STCLLoss": "stcl",
    "ProjectionHead": "tcl", "TCLLoss": "tcl", "contrastive_masks": "tcl", "supcon_loss": "tcl",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'snnsec.hardening' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value
    return value
