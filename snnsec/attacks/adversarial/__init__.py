"""Test-time adversarial attacks on spiking classifiers, with an integrity checklist.

* :class:`Attack`: any torchattacks attack (FGSM, BIM, PGD, PGDL2, EOTPGD, APGD, APGD-DLR,
  APGD-T, FAB-T, Square, AutoAttack, CW, DeepFool, SparseFool, OnePixel) as ``atk(x, y)`` on
  frames ``[B, T, P, H, W]``, model modes restored, forwards/backwards counted.
* :func:`gradient_mode`: attack-time surrogates (sigmoid, atan, triangle/rect at any width,
  straight-through) and the rate-gradient estimators BPTR and RGA.
* :class:`SpikeFlip`: binary event attack (insert/delete events) under an L0 budget.
* :class:`EOT`: expectation over transformation for stochastic encoders.
* :func:`evaluate`: attacks x estimators x eps, per-sample worst case, metrics and the checklist
  (:mod:`~snnsec.attacks.adversarial.checks`); :func:`evaluation_rows` turns it into result rows
  (:mod:`snnsec.runs.adversarial` writes metrics.json, the figure and the rows).
"""

from snnsec.attacks.adversarial.adapter import ATTACKS, Attack, Counter, attack_names
from snnsec.attacks.adversarial.binary import FlipResult, SpikeFlip, flips_to_reach
from snnsec.attacks.adversarial.eot import EOT, is_stochastic
from snnsec.attacks.adversarial.evaluate import (AdversarialEvaluation, EvalConfig, evaluate, expand_attacks,
                                                 format_eps, parse_eps)
from snnsec.attacks.adversarial.gradients import DEFAULT_SWEEP, gradient_mode, parse_gradient
from snnsec.attacks.adversarial.report import evaluation_rows

__all__ = ["ATTACKS", "DEFAULT_SWEEP", "EOT", "AdversarialEvaluation", "Attack", "Counter", "EvalConfig", "FlipResult",
           "SpikeFlip", "attack_names", "evaluate", "evaluation_rows", "expand_attacks", "flips_to_reach", "format_eps",
           "gradient_mode", "is_stochastic", "parse_eps", "parse_gradient"]
