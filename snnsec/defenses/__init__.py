"""Backdoor defenses for spiking models on event data (see :mod:`snnsec.defenses.base`).

The registry is filled here, one import per defense (its ``@register`` runs on import).
"""

from snnsec.defenses.base import (KINDS, DatasetInspection, Detection, InputInspection, InputScores,  # noqa: F401
                                  ModelInspection, Repair, RepairDefense, get, make, names, register, to_rows)

from snnsec.defenses import neural_cleanse  # noqa: F401,E402
from snnsec.defenses import membrane_margin  # noqa: F401,E402
from snnsec.defenses import strip  # noqa: F401,E402
from snnsec.defenses import activation_clustering  # noqa: F401,E402
from snnsec.defenses import spectral  # noqa: F401,E402
from snnsec.defenses import fine_pruning  # noqa: F401,E402
from snnsec.defenses import nc_unlearning  # noqa: F401,E402
from snnsec.defenses import abl  # noqa: F401,E402
from snnsec.defenses import ndsbm  # noqa: F401,E402
