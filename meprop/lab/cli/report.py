"""``meprop report RESULTS... [--out DIR] [--title ...]``: build the HTML report.

Reads results files or folders (``meprop bench`` JSON lines, pytest-benchmark
``--benchmark-json`` output, asv results), writes the report folder and prints the path
of its ``index.html``. Bad input ends with a one-line error (exit status 2), never a
traceback; problems that still leave a report are printed as warnings and shown on the page.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", metavar="RESULTS",
                        help="results files or folders (meprop bench output, pytest-benchmark JSON, asv results)")
    parser.add_argument("--out", default="reports/report", metavar="DIR",
                        help="output folder for index.html, figures/ and tables/ (default: %(default)s)")
    parser.add_argument("--title", default=None, help="page title (default: 'meProp benchmark report')")
    parser.add_argument("--targets", default=None, metavar="FILE",
                        help="targets file to judge the results by (docs/targets.md; default "
                             "benchmarks/targets.toml in the current directory, if there)")


def run(args: argparse.Namespace) -> int:
    from meprop.lab.report.build import build_report
    from meprop.lab.results.store import ResultsError

    if args.title is not None and not args.title.strip():
        print("meprop report: error: --title must not be empty", file=sys.stderr)
        return 2
    from meprop.lab.plan.target_file import TargetsFileError, load_targets

    try:
        targets = load_targets(args.targets) if args.targets is not None else None
        report = build_report([Path(p) for p in args.results], Path(args.out), title=args.title,
                              targets=targets)
    except (ResultsError, TargetsFileError) as error:
        print(f"meprop report: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"meprop report: error: cannot write the report into {args.out!r}: {error}", file=sys.stderr)
        return 2
    for problem in report.problems:
        print(f"meprop report: warning: {problem}", file=sys.stderr)
    print(report.index.resolve())
    return 0
