"""Performance targets judged against measured rows: target vs achieved, and its section.

The targets themselves (numbers, row-matching fields, and the cases the ``perf`` profile
runs for them) come from a targets file (docs/targets.md; the project's own is
``benchmarks/targets.toml``, written for its 2-core reference CPU). :func:`match_targets` finds the rows of a
:func:`bench_frame <meprop.lab.report.frames.bench_frame>` that each target selects and
reports target vs achieved, per machine and device; :func:`section` is the page's part.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from meprop.lab.plan.targets import Target
from meprop.lab.report.html import table_html
from meprop.lab.report.sections import Section
from meprop.lab.report.tables import break_even_table, write_table

__all__ = ["match_targets", "targets_display", "section"]


def match_targets(frame: pd.DataFrame, targets: tuple[Target, ...]) -> pd.DataFrame:
    """Target vs achieved for every machine and device in ``frame``.

    Columns: ``machine, device, target, kind, required, achieved, low, high, samples, met, at,
    flag, note`` (``required``/``achieved``: a speedup, or a k ratio for ``kind == "break_even"``;
    ``low``/``high``: the achieved speedup's 95% interval). ``met`` is ``"yes"``, ``"NO"``,
    ``"NO (flagged)"``, ``"not measured"`` or ``"n/a"`` (review items). A flagged cell never
    meets a target (the headline's rule): noisy, above the ideal n/k, or, for a target above
    1x, an interval that contains 1.0 or is unknown (a target of at most 1x, such as the
    forward's, means "not slower", which an interval around 1.0 is consistent with). A
    ``speedup`` target is judged at its latest row, a ``worst`` one at its slowest matching
    row (``at`` names that cell and how many rows and grid cases were measured), a
    ``break_even`` one at its worst (n, batch) group.
    """
    ok = frame[(frame["status"] == "ok") & frame["speedup"].notna()] if not frame.empty else frame
    rows = []
    groups = list(ok.groupby(["machine", "device"], sort=True)) if not ok.empty else [(("-", "-"), ok)]
    for (machine, device), group in groups:
        for target in targets:
            row = {"machine": machine, "device": device, "target": target.label, "kind": target.kind,
                   "required": target.minimum, "achieved": np.nan, "low": np.nan, "high": np.nan,
                   "samples": np.nan, "met": "not measured", "at": "", "flag": "", "note": target.note}
            if target.kind == "review":
                row["met"] = "n/a"
                rows.append(row)
                continue
            # a target with workload None (the forward's) selects every workload's rows
            sel = group[target.selects(group)]
            if not sel.empty:
                _achieve(row, target, sel)
            rows.append(row)
    return pd.DataFrame(rows)


def _achieve(row: dict, target: Target, sel: pd.DataFrame) -> None:
    if target.kind == "break_even":
        be = break_even_table(sel, target.measurement)
        if be.empty:
            return
        worst = be.loc[be["break-even k/n"].fillna(0).idxmin()]
        row["achieved"] = 0.0 if pd.isna(worst["break-even k/n"]) else worst["break-even k/n"]
        row["at"] = f"worst of {len(be)}: n={worst['hidden n']}, batch {worst['batch']}"
        if pd.notna(worst["first slower k/n"]):
            row["at"] += f" (not faster at k/n={worst['first slower k/n']:.3g})"
    else:
        pick = sel.loc[sel["speedup"].idxmin()] if target.kind == "worst" else _latest(sel)
        row["achieved"] = pick["speedup"]
        row["at"] = f"n={pick['hidden']}, batch {pick['batch']}, k={pick['k']}"
        if pd.notna(pick["threads"]):
            row["at"] += f", {int(pick['threads'])} threads"
        if target.kind == "worst":
            row["at"] = f"{_worst_of(target, sel)}: {pick['workload']} {row['at']}, {pick['mode']}"
        row.update(low=pick["speedup_low"], high=pick["speedup_high"], samples=pick["n_samples"])
        reasons = [r for r in pick["flag"].split(", ") if r]
        if target.minimum <= 1:  # "not slower than dense": an interval containing 1.0 is consistent with it
            reasons = [r for r in reasons if r in ("noisy", "above ideal")]
        row["flag"] = ", ".join(reasons)
    reached = row["achieved"] >= target.minimum - 1e-12
    row["met"] = "NO (flagged)" if reached and row["flag"] else ("yes" if reached else "NO")


#: the fields that tell a target's cases apart in a frame row
_CASE_COLUMNS = ("workload", "measurement", "hidden", "batch", "k", "mode", "threads", "optimizer", "adam")


def _worst_of(target: Target, sel: pd.DataFrame) -> str:
    """``worst of 10 measured``; with ``(24 in the grid)`` when some of the target's cases
    (:meth:`Target.cases`) have no row, and how many of them do when other rows matched too."""
    text = f"worst of {len(sel)} measured"
    cases = {tuple(getattr(case, name) for name in _CASE_COLUMNS) for case in target.cases()}
    if not cases:
        return text
    rows = {tuple(values) for values in sel[list(_CASE_COLUMNS)].itertuples(index=False)}
    measured = len(cases & rows)
    if measured == len(cases):
        return text
    if measured == len(sel):
        return f"{text} ({len(cases)} in the grid)"
    return f"{text} ({measured} of the {len(cases)} in the grid)"


def _latest(sel: pd.DataFrame) -> pd.Series:
    """Several rows of one case (re-runs): the last one read is the latest run."""
    return sel.iloc[-1]


def targets_display(matched: pd.DataFrame) -> pd.DataFrame:
    """``match_targets`` output for the page: required/achieved as text with their unit."""
    def text(value, kind, bound):
        if pd.isna(value):
            return "—"
        number = f"{value:.1%} k/n" if kind == "break_even" else f"{value:.2f}x"
        return f"≥ {number}" if bound else number

    out = matched.copy()
    out["required"] = [text(v, k, True) for v, k in zip(matched["required"], matched["kind"])]
    out["achieved"] = [text(v, k, False) for v, k in zip(matched["achieved"], matched["kind"])]
    out["95% CI"] = [f"{lo:.2f}–{hi:.2f}x" if np.isfinite(lo) and np.isfinite(hi) else "—"
                     for lo, hi in zip(matched["low"], matched["high"])]
    out.insert(out.columns.get_loc("achieved") + 1, "95% CI", out.pop("95% CI"))
    return out.drop(columns=["kind", "low", "high"])


def section(frame: pd.DataFrame, out_dir: Path, targets: tuple[Target, ...] = ()) -> tuple[Section, pd.DataFrame]:
    """The targets section and the matched table (empty when no target case was measured)."""
    if not targets:
        html = ('<p class="note">No targets file was given (<code>meprop report --targets FILE</code>, '
                "docs/targets.md), so no row is judged against a target.</p>")
        return Section("targets", "Performance targets", html), pd.DataFrame()
    matched = match_targets(frame, targets) if not frame.empty else pd.DataFrame()
    if matched.empty or not matched["achieved"].notna().any():
        html = ('<p class="note">No case of the targets table is in these '
                "results; <code>meprop bench --profile perf</code> measures them.</p>")
        return Section("targets", "Performance targets", html), matched
    files = list(write_table(matched, out_dir, "targets").values())
    met = matched[matched["met"].isin(["yes", "NO", "NO (flagged)"])]
    html = (f"<h3>Performance targets: {int((met['met'] == 'yes').sum())} of "
            f"{len(met)} measured targets met</h3>"
            "<p>Targets come from the targets file (the project's own are for its 2-core reference CPU, "
            "float32, 2 threads); "
            "\"not measured\": the run has no such case (run <code>meprop bench --profile perf"
            "</code>). <b>NO (flagged)</b>: the median reaches the target but the cell is flagged "
            "(noisy, above the ideal n/k, or its 95% interval contains 1.0) and so meets nothing.</p>" + table_html(targets_display(matched), speedup_column=None))
    return Section("targets", "Performance targets", html, files), matched
