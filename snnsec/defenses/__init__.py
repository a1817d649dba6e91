"""Backdoor defenses for spiking models on event data (see :mod:`snnsec.defenses.base`)."""

from snnsec.defenses.base import (KINDS, Detection, InputScores, Repair, get, make, names, register,  # noqa: F401
                                  to_rows)
