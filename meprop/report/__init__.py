"""meProp benchmark reports: results (JSON lines, pytest-benchmark, asv) -> tables, plots, HTML.

``build_report(paths, out_dir)`` writes ``out_dir/index.html``, the figures as PNG/SVG and
the tables as CSV/Markdown; ``meprop report`` is its command line. The parts, in the
order data flows: :mod:`~meprop.report.ingest` (read every format into schema records,
:func:`load_results`), :mod:`~meprop.report.frames` (records -> DataFrames, once),
:mod:`~meprop.report.tables` and :mod:`~meprop.report.figures` (what is shown),
:mod:`~meprop.report.headline` (the representative cell per workload that a card quotes),
:mod:`~meprop.report.sections` (bench, targets, paper, accuracy: each its HTML and
files), :mod:`~meprop.report.html` (the page), :mod:`~meprop.report.build` (the ordered
list of sections, :data:`~meprop.report.build.SECTIONS`).
Never times anything (DESIGN.md: data flows Case -> ... -> store -> report).
"""

from meprop.report.build import Report, build_report
from meprop.report.ingest import LoadedResults, load_results
from meprop.results.store import ResultsError

__all__ = ["build_report", "Report", "load_results", "LoadedResults", "ResultsError"]
