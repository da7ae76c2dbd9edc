"""What is missing or odd in the report's inputs: the problems list shown first on the page.

Problems found while reading (:attr:`meprop.report.ingest.LoadedResults.problems`) plus
those only the bench frame shows: runs without an ``env`` record, skipped cases, cases
without a dense baseline, cases measured more than once. A problem is *severe* when it
leaves no speedup to show.
"""

from __future__ import annotations

import html

import pandas as pd

from meprop.report.ingest import LoadedResults
from meprop.report.sections import Section

__all__ = ["input_problems", "problems_section"]


def input_problems(loaded: LoadedResults, frame: pd.DataFrame) -> tuple[list[str], bool]:
    """What is missing or odd in the inputs; the flag says whether it leaves no speedups."""
    problems = list(loaded.problems)
    env_runs = {r["run_id"] for r in loaded.of_type("env")}
    bench_runs = {r["run_id"] for r in loaded.of_type("bench")}
    for run in sorted(bench_runs - env_runs):
        problems.append(f"run {run}: no env record, so its machine is unknown")
    if frame.empty:
        problems.append("no benchmark records in the inputs (nothing to time-compare)")
        return problems, not loaded.of_type("train")  # severe unless there is an accuracy section
    skipped = frame[frame["status"] != "ok"]
    if not skipped.empty:
        reasons = skipped["reason"].fillna("no reason given").value_counts()
        problems.append(f"{len(skipped)} case(s) skipped: "
                        + "; ".join(f"{reason} ({count})" for reason, count in reasons.items()))
    ok = frame[(frame["status"] == "ok") & frame["meprop_ms"].notna()]  # timed rows (not memory-only)
    no_dense = ok[ok["dense_ms"].isna()]
    severe = not ok.empty and ok["speedup"].isna().all()
    if severe:
        problems.append("no dense baselines in the inputs: no speedup can be computed; "
                        "the tables show meProp times only (measure dense and meProp in one run)")
    elif not no_dense.empty:
        problems.append(f"{len(no_dense)} case(s) have no dense baseline; their speedup is blank")
    repeats = frame.duplicated(["machine", "key"], keep=False) & frame["key"].notna()
    if repeats.any():
        problems.append(f"{int(frame[repeats].drop_duplicates(['machine', 'key']).shape[0])} case(s) "
                        "were measured more than once on the same machine: every run's row is shown; "
                        "targets use the latest")
    return problems, severe


#: Problems listed on the page; the rest are counted (all are printed by ``meprop report``).
PAGE_PROBLEMS = 100


def problems_section(problems: list[str], severe: bool) -> Section:
    items = "".join(f"<li>{html.escape(p)}</li>" for p in problems[:PAGE_PROBLEMS])
    if len(problems) > PAGE_PROBLEMS:
        items += f"<li>… and {len(problems) - PAGE_PROBLEMS} more (printed by <code>meprop report</code>)</li>"
    return Section("problems", "What is missing in the inputs",
                   f'<div class="problems{" severe" if severe else ""}"><ul>{items}</ul></div>')
