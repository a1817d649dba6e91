"""The runs layer (see ../shared/DESIGN.md, Layers): code that loads data and checkpoints, runs an
algorithm, and saves what came out (files, figures, rows). Algorithm packages (attacks, defenses,
hardening) never import it; the CLI and the bench do.

The bench's cell kinds are registered here, one line each (:func:`snnsec.bench.register_kind`);
the cell functions import their algorithms when they run, so this costs no torch import.
"""

from snnsec.bench import register_kind
from snnsec.runs.bench_cells import adversarial_cell, backdoor_cell, hardening_cell
from snnsec.runs.defense_cells import audit_cell, defense_cell
from snnsec.runs.event_threats import event_threat_cell
from snnsec.runs.leaderboard import leaderboard_cell

register_kind("backdoor", backdoor_cell)
register_kind("adversarial", adversarial_cell)
register_kind("hardening", hardening_cell)
register_kind("defense", defense_cell)
register_kind("audit", audit_cell)
register_kind("leaderboard", leaderboard_cell)
register_kind("event-threats", event_threat_cell)
