"""meProp benchmark reports: results (JSON lines, pytest-benchmark, asv) -> tables, plots, HTML.

``build_report(paths, out_dir)`` writes ``out_dir/index.html`` (self-contained), the
figures as PNG/SVG and the tables as CSV/Markdown; ``meprop report`` is its command line.
Never times anything (DESIGN.md: data flows Case -> ... -> store -> report).
"""

from meprop.report.build import Report, build_report
from meprop.report.loaders import LoadedResults, ResultsError, load_results

__all__ = ["build_report", "Report", "load_results", "LoadedResults", "ResultsError"]
