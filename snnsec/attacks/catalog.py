"""The attacks' names, and what the adversarial attacks are, without importing torch.

The CLI lists these names in ``--help``, which must not wait seconds for torch; the
builders reach torchattacks only when an attack is built
(:class:`snnsec.attacks.adversarial.adapter.Attack`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from snnsec.surrogates import SURROGATES


class _OnFirstUse:
    """torchattacks, imported by the first builder that runs."""

    def __getattr__(self, name: str):
        return getattr(importlib.import_module("torchattacks"), name)


torchattacks = _OnFirstUse()


# The backdoor triggers' registry (snnsec.attacks.backdoor.triggers.TRIGGERS) by name, for --help;
# a test keeps the two equal.
TRIGGER_NAMES = ("dynamic", "flash", "framed", "moving", "smart", "static", "strobe")


@dataclass(frozen=True)
class AttackInfo:
    """One attack and its capabilities, which the adapter reads instead of the name."""

    name: str
    threat: str  # "linf" | "l2" | "minimal"
    white_box: bool
    build: Callable[..., torchattacks.Attack]
    description: str
    uses_eps: bool = True
    # iterations at full strength (None: the attack takes no step count); fast caps them at 10
    full_steps: int | None = None
    uses_queries: bool = False  # a query budget (Square, inside AutoAttack)
    # forwards averaged per gradient (expectation over transformation); None: not an option
    eot_iter: int | None = None
    # inputs mapped into (m, 1 - m) before attacking, the perturbation carried back after
    input_margin: float = 0.0
    # forward + backward passes per robust sample at full strength (a forward counts a third): the
    # evaluation's cascade runs cheap attacks first, so dear ones see only the samples still robust
    cost: float = 1.0


def _pgd_alpha(eps: float, steps: int) -> float:
    # Madry et al.'s rule: step 2.5 * eps / steps lets the iterate cross the ball and back
    return 2.5 * eps / steps


# Original AutoAttack ("standard", fra31/auto-attack) runs APGD/APGD-T/FAB-T with 100 iterations,
# 9 target classes and Square with 5,000 queries; torchattacks defaults to 10 steps and a time
# seed. Every attack's full strength is its entry's full_steps (and these queries); fast caps
# them at a strength the unit tests can afford (not for reported numbers).
FULL_QUERIES, FAST_QUERIES = 5000, 100
FAST_STEPS = 10


def _targets(num_classes: int) -> int:
    # torchattacks' n_classes is "target classes + 1"; AutoAttack standard uses 9 targets
    return min(num_classes, 10)


def _build_autoattack(m, eps, *, steps, seed, num_classes, queries, **_):
    comps = [
        torchattacks.APGD(m, norm="Linf", eps=eps, steps=steps, n_restarts=1, loss="ce", seed=seed),
        torchattacks.APGDT(m, norm="Linf", eps=eps, steps=steps, n_restarts=1, n_classes=_targets(num_classes), seed=seed),
        torchattacks.FAB(m, norm="Linf", eps=eps, steps=steps, n_restarts=1, multi_targeted=True,
                         n_classes=_targets(num_classes), seed=seed),
        # the original sets resc_schedule=False for Square inside AutoAttack
        torchattacks.Square(m, norm="Linf", eps=eps, n_queries=queries, n_restarts=1, resc_schedule=False, seed=seed),
    ]
    return torchattacks.MultiAttack(comps)


def _info(name, threat, white_box, build, description, **capabilities):
    return name, AttackInfo(name, threat, white_box, build, description, **capabilities)


# full-strength steps: PGD-20 (Madry et al.), APGD/FAB 100 (AutoAttack), CW 100, DeepFool 50
_PGD_STEPS, _APGD_STEPS = 20, 100
# EOTPGD exists for stochastic models: 10 draws per step (torchattacks' 2 is too few to average out
# a Poisson encoder); the APGD family takes one draw unless told
_EOT_DRAWS = 10
# CW optimises in tanh space: atanh(2x - 1) is infinite at exactly 0 and 1, so binary frames get a
# zero gradient and no perturbation. They are mapped into (0, 1) by this margin first.
CW_MARGIN = 0.01


ATTACKS: dict[str, AttackInfo] = dict([
    _info("fgsm", "linf", True, lambda m, eps, **k: torchattacks.FGSM(m, eps=eps), "FGSM, one signed gradient step"),
    _info("bim", "linf", True,
          lambda m, eps, *, steps, **k: torchattacks.BIM(m, eps=eps, alpha=_pgd_alpha(eps, steps), steps=steps),
          "BIM (iterative FGSM, no random start)", full_steps=_PGD_STEPS, cost=20),
    _info("pgd", "linf", True,
          lambda m, eps, *, steps, **k: torchattacks.PGD(m, eps=eps, alpha=_pgd_alpha(eps, steps), steps=steps,
                                                         random_start=True),
          "PGD with uniform random start, step 2.5*eps/steps", full_steps=_PGD_STEPS, cost=20),
    _info("eotpgd", "linf", True,
          lambda m, eps, *, steps, eot_iter, **k: torchattacks.EOTPGD(m, eps=eps, alpha=_pgd_alpha(eps, steps),
                                                                      steps=steps, eot_iter=eot_iter),
          "PGD with gradients averaged over eot_iter forwards (stochastic models)", full_steps=_PGD_STEPS,
          eot_iter=_EOT_DRAWS, cost=200),
    _info("pgdl2", "l2", True,
          lambda m, eps, *, steps, **k: torchattacks.PGDL2(m, eps=eps, alpha=_pgd_alpha(eps, steps), steps=steps),
          "PGD in an L2 ball of radius eps", full_steps=_PGD_STEPS, cost=20),
    _info("apgd", "linf", True,
          lambda m, eps, *, steps, seed, eot_iter, **k: torchattacks.APGD(m, norm="Linf", eps=eps, steps=steps,
                                                                          loss="ce", seed=seed, eot_iter=eot_iter),
          "APGD-CE (Croce & Hein 2020)", full_steps=_APGD_STEPS, eot_iter=1, cost=100),
    _info("apgd-dlr", "linf", True,
          lambda m, eps, *, steps, seed, eot_iter, **k: torchattacks.APGD(m, norm="Linf", eps=eps, steps=steps,
                                                                          loss="dlr", seed=seed, eot_iter=eot_iter),
          "APGD on the DLR loss", full_steps=_APGD_STEPS, eot_iter=1, cost=100),
    _info("apgdt", "linf", True,
          lambda m, eps, *, steps, seed, num_classes, eot_iter, **k: torchattacks.APGDT(
              m, norm="Linf", eps=eps, steps=steps, seed=seed, n_classes=_targets(num_classes), eot_iter=eot_iter),
          "APGD-T, targeted DLR over the 9 most likely other classes", full_steps=_APGD_STEPS, eot_iter=1,
          cost=900),
    _info("sapgd", "linf", True,
          lambda m, eps, *, steps, seed, **k: importlib.import_module("snnsec.attacks.adversarial.sapgd").SAPGD(
              m, eps=eps, steps=steps, seed=seed),
          "SA-PGD (2025): L1-normalised Adam-like moments, halving step; with --surrogates assg:<omega> the "
          "paper's ASSG + SA-PGD", full_steps=_APGD_STEPS, cost=100),
    _info("fab", "linf", True,
          lambda m, eps, *, steps, seed, num_classes, **k: torchattacks.FAB(
              m, norm="Linf", eps=eps, steps=steps, seed=seed, multi_targeted=True, n_classes=_targets(num_classes)),
          "FAB-T (minimal-norm, projected into the eps ball)", full_steps=_APGD_STEPS, cost=900),
    _info("square", "linf", False,
          lambda m, eps, *, seed, queries, **k: torchattacks.Square(m, norm="Linf", eps=eps, n_queries=queries, seed=seed),
          "Square Attack (black-box, score-based)", full_steps=1, uses_queries=True,
          cost=FULL_QUERIES / 3),
    _info("autoattack", "linf", True, _build_autoattack,
          "AutoAttack standard: APGD-CE, APGD-T, FAB-T, Square (per-sample worst case)", full_steps=_APGD_STEPS,
          uses_queries=True, cost=100 + 900 + 900 + FULL_QUERIES / 3),
    _info("cw", "minimal", True, lambda m, eps, *, steps, **k: torchattacks.CW(m, c=1, kappa=0, steps=steps, lr=0.01),
          "Carlini-Wagner L2 (inputs mapped into (0, 1) first)", uses_eps=False, full_steps=100,
          input_margin=CW_MARGIN),
    _info("deepfool", "minimal", True, lambda m, eps, *, steps, **k: torchattacks.DeepFool(m, steps=steps),
          "DeepFool (minimal L2)", uses_eps=False, full_steps=50),
    _info("sparsefool", "minimal", True, lambda m, eps, *, steps, **k: torchattacks.SparseFool(m, steps=steps),
          "SparseFool (minimal L0)", uses_eps=False, full_steps=10),
    _info("onepixel", "minimal", False, lambda m, eps, **k: torchattacks.OnePixel(m, pixels=1, steps=10, popsize=10),
          "One-pixel differential evolution (black-box L0)", uses_eps=False),
])


def attack_names() -> list[str]:
    return list(ATTACKS)


# Aliases the evaluator expands; "autoattack" is an attack of its own (one MultiAttack)
ALIASES = {
    "ensemble": ("pgd", "apgd", "apgd-dlr", "apgdt", "fab", "square"),
    "all": tuple(a for a in ATTACKS if a != "autoattack") + ("spikeflip",),
}
# attacks the evaluator runs itself rather than through torchattacks
EXTRA_ATTACKS = ("spikeflip",)
# gradient estimators that replace the spike function's gradient by a rate gradient
RATE_MODES = ("bptr", "rga")
# input-adaptive estimators (snnsec.attacks.adversarial.adaptive): pdsg takes no parameter,
# assg its omega, hart its gamma
ADAPTIVE_MODES = ("pdsg", "assg", "hart")
# defaults when no parameter is given: the references pick theirs per model by a search on the test
# set (ASSG: ternary search over omega in [0.35, 0.49]; HART: gamma grid 0.10..2.45); 0.43 is the
# reference's fixed omega for CIFAR10-DVS, gamma 0.5 a triangle of full width 1
ADAPTIVE_DEFAULTS = {"assg": 0.43, "hart": 0.5}


def gradient_names() -> tuple[str, ...]:
    return ("model", *SURROGATES, *RATE_MODES, *ADAPTIVE_MODES)
