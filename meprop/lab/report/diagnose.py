"""What is missing or odd in the report's inputs: the problems list shown first on the page.

Problems found while reading (:attr:`meprop.lab.report.ingest.LoadedResults.problems`) plus
those only the bench frame shows: runs without an ``env`` record, skipped cases, cases
without a dense baseline. A case measured more than once keeps its latest outcome
(:func:`latest_per_case`). A problem is *severe* when it leaves no speedup to show.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from meprop.lab.report.ingest import LoadedResults
from meprop.lab.report.sections import Section

__all__ = ["input_problems", "latest_per_case", "problems_section"]


def input_problems(loaded: LoadedResults, frame: pd.DataFrame) -> tuple[list[str], bool]:
    """What is missing or odd in the inputs; the flag says whether it leaves no speedups."""
    problems = list(loaded.problems)
    env_runs = {r["run_id"] for r in loaded.of_type("env")}
    bench_runs = {r["run_id"] for r in loaded.of_type("bench")}
    for run in sorted(bench_runs - env_runs):
        problems.append(f"run {run}: no env record, so its machine is unknown")
    if frame.empty:
        problems.append("no benchmark records in the inputs (nothing to time-compare)")
        # severe unless there is an accuracy or a time-to-accuracy section
        return problems, not (loaded.of_type("train") or loaded.of_type("convergence"))
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
    return problems, severe


def latest_per_case(frame: pd.DataFrame, loaded: LoadedResults) -> tuple[pd.DataFrame, int]:
    """Keep the latest record of each case per machine; returns it and how many cases repeated.

    A case measured more than once (``--resume`` retrying a skipped case, a re-run) keeps
    its latest outcome: the row whose run has the latest env ``timestamp`` (else its
    ``commit_date``, for asv results without start times); rows of runs without one count as older, and ties go to the row read last (later in its file).
    """
    if frame.empty:
        return frame, 0
    stamps = {r["run_id"]: str((r.get("env") or {}).get("timestamp") or (r.get("env") or {}).get("commit_date") or "")
              for r in loaded.of_type("env")}
    keyed = frame[frame["key"].notna()]
    repeated = int((keyed.groupby(["machine", "key"]).size() > 1).sum())
    if not repeated:
        return frame, 0
    ranked = frame.assign(_stamp=[stamps.get(r, "") for r in frame["run_id"]], _read=np.arange(len(frame)))
    ranked = ranked.sort_values(["_stamp", "_read"], kind="stable")
    older = ranked["key"].notna() & ranked.duplicated(["machine", "key"], keep="last")
    kept = ranked[~older].sort_values("_read")
    return kept.drop(columns=["_stamp", "_read"]).reset_index(drop=True), repeated


#: Problems listed on the page; the rest are counted (all are printed by ``meprop report``).
PAGE_PROBLEMS = 100


def problems_section(problems: list[str], severe: bool) -> Section:
    items = "".join(f"<li>{html.escape(p)}</li>" for p in problems[:PAGE_PROBLEMS])
    if len(problems) > PAGE_PROBLEMS:
        items += f"<li>… and {len(problems) - PAGE_PROBLEMS} more (printed by <code>meprop report</code>)</li>"
    return Section("problems", "What is missing in the inputs",
                   f'<div class="problems{" severe" if severe else ""}"><ul>{items}</ul></div>')
