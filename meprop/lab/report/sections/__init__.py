"""The report's sections: each module turns frames into one part of the page.

- :mod:`~meprop.lab.report.sections.bench`: environment and method, headline, speedup tables,
  figures, peak memory (the benchmark results);
- :mod:`~meprop.lab.report.sections.targets`: the performance targets vs achieved;
- :mod:`~meprop.lab.report.sections.paper`: our rows beside the paper's Tables 1, 2, 7, 8;
- :mod:`~meprop.lab.report.sections.accuracy`: training runs beside the paper's accuracies.

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
