"""meProp benchmark reports: results (JSON lines, pytest-benchmark, asv) -> tables, plots, HTML.

``build_report(paths, out_dir)`` writes ``out_dir/index.html``, the figures as PNG/SVG and
the tables as CSV/Markdown; ``meprop report`` is its command line. The parts, in the
order data flows: :mod:`~meprop.lab.report.ingest` (read every format into schema records,
:func:`load_results`), :mod:`~meprop.lab.report.frames` (records -> DataFrames, once),
:mod:`~meprop.lab.report.tables` and :mod:`~meprop.lab.report.figures` (what is shown),
:mod:`~meprop.lab.report.headline` (the representative cell per workload that a card quotes),
:mod:`~meprop.lab.report.sections` (bench, targets, paper, accuracy: each its HTML and
files), :mod:`~meprop.lab.report.html` (the page), :mod:`~meprop.lab.report.build` (the ordered
list of sections, :data:`~meprop.lab.report.build.SECTIONS`).
Never times anything (docs/design.md: data flows Case -> ... -> store -> report).
"""

from meprop.lab.report.build import Report, build_report
from meprop.lab.report.ingest import LoadedResults, load_results
from meprop.lab.results.store import ResultsError

__all__ = ["build_report", "Report", "load_results", "LoadedResults", "ResultsError"]
