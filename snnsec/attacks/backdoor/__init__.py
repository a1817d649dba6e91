"""Backdoor (poisoning) attacks on spiking classifiers with neuromorphic data.

- triggers: :mod:`.triggers` (static, moving, smart, flash, framed, strobe) and
  :mod:`.dynamic` (spiking-autoencoder generator, LIRA-style bilevel training);
  rebuild any of them from ``model.json`` with :func:`trigger_from_spec`;
- poisoning: :class:`PoisonedDataset` (rate, target, all-to-one/all-to-all, dirty/clean label);
- one experiment end to end: :func:`run_backdoor` with a :class:`BackdoorConfig`.
"""

# the trigger registry: each module registers its triggers on import
from snnsec.attacks.backdoor import triggers  # noqa: F401
from snnsec.attacks.backdoor import dynamic  # noqa: F401
from snnsec.attacks.backdoor.poison import PoisonedDataset, poison_label, select_poison_indices
from snnsec.attacks.backdoor.run import BackdoorConfig, BackdoorResult, run_backdoor
from snnsec.attacks.backdoor.triggers import (
    TRIGGERS,
    FlashTrigger,
    FramedTrigger,
    MovingTrigger,
    SmartTrigger,
    StaticTrigger,
    StrobeTrigger,
    make_trigger,
    trigger_class,
    trigger_from_spec,
    trigger_names,
)

__all__ = [
    "TRIGGERS", "BackdoorConfig", "BackdoorResult", "FlashTrigger", "FramedTrigger", "MovingTrigger",
    "PoisonedDataset", "SmartTrigger", "StaticTrigger", "StrobeTrigger", "make_trigger", "poison_label",
    "run_backdoor", "select_poison_indices", "trigger_class", "trigger_from_spec", "trigger_names",
]
