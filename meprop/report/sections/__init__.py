"""The report's sections: each module turns frames into one part of the page.

- :mod:`~meprop.report.sections.bench`: environment and method, headline, speedup tables,
  figures, peak memory (the benchmark results);
- :mod:`~meprop.report.sections.targets`: issue 5's performance targets vs achieved;
- :mod:`~meprop.report.sections.paper`: our rows beside the paper's Tables 1, 2, 7, 8;
- :mod:`~meprop.report.sections.accuracy`: training runs beside the paper's accuracies;
- :mod:`~meprop.report.sections.ddp`: DDP steps, bytes per rank, and their projections.

Each section function returns a :class:`Section`: its HTML and the files it wrote
(tables, figures), which the page lists. This module imports none of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Section"]


@dataclass
class Section:
    """One part of the page: ``anchor`` (the id), ``heading``, inner ``html`` and the ``files`` written."""

    anchor: str
    heading: str
    html: str
    files: list[Path] = field(default_factory=list)
