"""The hardening recipe's settings and defaults, importable without torch (the CLI shows them
in ``snnsec train --help``; the losses in :mod:`~snnsec.hardening.adversarial`,
:mod:`~snnsec.hardening.tcl` and :mod:`~snnsec.hardening.stcl` take them from here)."""

from __future__ import annotations

METHODS = ("pgd", "trades")
DEFAULT_EPS = 2 / 255
DEFAULT_ALPHA = 1 / 255
DEFAULT_STEPS = 2
DEFAULT_BETA = 6.0

# SupCon's default temperature (Khosla et al. 2020); the TCL paper's value is not known here.
DEFAULT_TAU = 0.07
# Equal weighting of CE and the contrastive term: the paper's lambda is not known here.
DEFAULT_LAMBDA = 1.0
# SupCon projects to 128 dimensions; kept, since it is cheap next to the backbone.
DEFAULT_PROJ_DIM = 128

from snnsec.train_settings import AUGMENT_DEFAULTS  # noqa: F401  (the recipe's flags show them)


def parse_eps(v, *, field: str = "eps") -> float:
    """An L-inf radius in [0, 1] units: a number, or a string ``"k/255"`` as spec files write it."""
    try:
        num, _, den = str(v).partition("/") if isinstance(v, str) else (v, "", "1")
        e = float(num) / float(den)
    except (TypeError, ValueError, ZeroDivisionError):
        raise ValueError(f"field '{field}': expected a number or 'k/255', got {v!r}") from None
    if not 0 <= e <= 1:
        raise ValueError(f"field '{field}': expected a radius in [0, 1] (frames are in [0, 1]), got {v!r}")
    return e
