"""Registers the ``backdoor`` bench kind (see :mod:`snnsec.bench`)."""

from __future__ import annotations

from snnsec.bench import register_kind


def backdoor_cell(cell: dict, *, progress: bool = True) -> dict:
    from snnsec.attacks.backdoor.run import BackdoorConfig, run_backdoor, run_output

    return run_output(run_backdoor(BackdoorConfig.from_cell(cell), progress=progress))


register_kind("backdoor", backdoor_cell)
