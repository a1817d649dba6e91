"""Figures and reports drawn from the results store, never from models.

- :mod:`snnsec.report.figures`: ``fig_xxx(df) -> Figure`` for notebooks and papers;
- :mod:`snnsec.report.render`: the report folder (CSV, tables, PNG/PDF, ``report.html``);
- :mod:`snnsec.report.schema`: which rows each figure reads (the one place metric names live);
- :mod:`snnsec.report.style`: sizes, fonts and the colour of every trigger, attack and defense.
"""

from snnsec.report.render import Report, build_report, render_report
from snnsec.report.schema import FIGURES, MissingData

__all__ = ["FIGURES", "MissingData", "Report", "build_report", "render_report"]
