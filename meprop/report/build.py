"""Build the report folder: results in, ``index.html`` + figures + tables out.

Order of the page (issue 4): problems with the inputs (if any), environment per run and
how the numbers were measured, headline (best speedups, break-even k/n, targets vs
achieved), speedup tables per measurement, figures, the paper side by side, peak memory,
accuracy (from ``meprop.report.accuracy`` when present), and the list of files written.
Every table is also written as CSV and Markdown under ``tables/``, every figure as PNG
and SVG under ``figures/``.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from meprop.report import figures as figs
from meprop.report import paper, targets
from meprop.report.html import figure_html, render_page, table_html
from meprop.report.loaders import LoadedResults, ResultsError, load_results
from meprop.report.tables import (
    MEASUREMENT_TITLES,
    MEASUREMENTS,
    bench_frame,
    break_even_table,
    env_frame,
    headline_table,
    memory_table,
    speedup_table,
    train_frame,
    write_table,
)

__all__ = ["Report", "build_report", "input_problems", "latest_per_case"]

DEFAULT_TITLE = "meProp benchmark report"


@dataclass
class Report:
    """What :func:`build_report` wrote and found."""

    index: Path
    problems: list[str] = field(default_factory=list)
    headline: pd.DataFrame = field(default_factory=pd.DataFrame)
    targets: pd.DataFrame = field(default_factory=pd.DataFrame)
    files: list[Path] = field(default_factory=list)


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
    return problems, severe


def latest_per_case(frame: pd.DataFrame, loaded: LoadedResults) -> tuple[pd.DataFrame, int]:
    """Keep the latest record of each case per machine; returns it and how many cases repeated.

    A case measured more than once (``--resume`` retrying a skipped case, a re-run) keeps
    its latest outcome: the row whose run has the latest env ``timestamp``; rows of runs
    without one count as older, and ties go to the row read last (later in its file).
    """
    if frame.empty:
        return frame, 0
    stamps = {r["run_id"]: str((r.get("env") or {}).get("timestamp") or "") for r in loaded.of_type("env")}
    keyed = frame[frame["key"].notna()]
    repeated = int((keyed.groupby(["machine", "key"]).size() > 1).sum())
    if not repeated:
        return frame, 0
    ranked = frame.assign(_stamp=[stamps.get(r, "") for r in frame["run_id"]], _read=np.arange(len(frame)))
    ranked = ranked.sort_values(["_stamp", "_read"], kind="stable")
    older = ranked["key"].notna() & ranked.duplicated(["machine", "key"], keep="last")
    kept = ranked[~older].sort_values("_read")
    return kept.drop(columns=["_stamp", "_read"]).reset_index(drop=True), repeated


def _meta(loaded: LoadedResults) -> str:
    envs = [r.get("env") or {} for r in loaded.of_type("env")]
    commits = sorted({str(e.get("git_commit"))[:12] for e in envs if e.get("git_commit")})
    stamps = sorted(str(e.get("timestamp")) for e in envs if e.get("timestamp"))
    machines = sorted({str(e.get("machine")) for e in envs if e.get("machine")})
    parts = [f"built {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"]
    if stamps:
        parts.append("measured " + (stamps[0] if len(stamps) == 1 else f"{stamps[0]} … {stamps[-1]}"))
    if commits:
        parts.append("git commit " + ", ".join(commits))
    if machines:
        parts.append("machine" + ("s " if len(machines) > 1 else " ") + ", ".join(machines))
    profiles = sorted({str(e.get("profile")) for e in envs if e.get("profile")})
    if profiles:
        parts.append("profile " + ", ".join(profiles))
    return html.escape(" · ".join(parts))


def _method(loaded: LoadedResults, frame: pd.DataFrame) -> str:
    ok = frame[frame["status"] == "ok"] if not frame.empty else frame
    samples = ok["n_samples"].dropna() if not ok.empty else pd.Series(dtype=float)
    n = (f"{int(samples.min())}" if samples.min() == samples.max() else
         f"{int(samples.min())}–{int(samples.max())}") if not samples.empty else "an unrecorded number of"
    timings = sorted({str((r.get("env") or {}).get("timing")) for r in loaded.of_type("env")
                      if (r.get("env") or {}).get("timing")})
    text = (f"Each time is the <b>median of {n} samples</b> after warm-up; the spread is the "
            "interquartile range (IQR) in % of the median, and a cell is flagged <b>noisy</b> when "
            "either side's IQR exceeds 10% of its median. <b>Speedup</b> = dense median / meProp median; "
            "for <code>meprop bench</code> runs dense and meProp are measured in the same run, "
            "interleaved. <b>Ideal</b> = n / k; <b>efficiency</b> = speedup / ideal. "
            "<b>Linear-only backprop</b> is the backward of the linear layer(s) alone for a fixed output "
            "gradient (the paper's \"backprop time\", Tables 1 and 7); <b>overall backprop</b> is the "
            "whole <code>loss.backward()</code> of a model (Tables 2 and 8).")
    if timings:
        text += " Other sources: " + html.escape("; ".join(timings)) + "."
    return f"<p>{text}</p>"


def _headline(frame: pd.DataFrame, out_dir: Path, written: list[Path]) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    head = headline_table(frame) if not frame.empty else pd.DataFrame()
    cards = []
    for _, row in head.iterrows():
        for label in ("linear-only", "overall"):
            value = row.get(f"best {label} speedup")
            if value is not None and np.isfinite(value):
                cards.append(
                    f'<div class="card"><div class="small">best {label} backprop · '
                    f'{html.escape(str(row["machine"]))} · {html.escape(str(row["device"]))} · '
                    f'{html.escape(str(row["mode"]))}</div><div class="big">{value:.1f}x</div>'
                    f'<div class="small">{html.escape(str(row[f"{label} at"]))}</div></div>')
    parts = [f'<div class="headline">{"".join(cards)}</div>' if cards else
             '<p class="note">No speedups could be computed (see the problems above).</p>']
    if not head.empty:
        written += write_table(head, out_dir, "headline").values()
        parts.append("<h3>Best speedups per machine, device and mode</h3>" + table_html(head, speedup_column=None))
    be = break_even_table(frame) if not frame.empty else pd.DataFrame()
    parts.append("<h3>Break-even k/n (linear-only backprop)</h3>")
    if be.empty:
        parts.append('<p class="note">No linear-only backprop speedups measured.</p>')
    else:
        written += write_table(be, out_dir, "break_even").values()
        parts.append('<p>The largest measured k/n at which meProp is still faster than dense; the true '
                     'crossing lies between it and the next measured ratio ("first slower"). '
                     "Blank: meProp is slower at every measured k/n.</p>" + table_html(be, speedup_column=None))
    matched = targets.match_targets(frame) if not frame.empty else pd.DataFrame()
    target_html = ""
    if not matched.empty and matched["achieved"].notna().any():
        written += write_table(matched, out_dir, "targets").values()
        met = matched[matched["met"].isin(["yes", "NO"])]
        target_html = (f"<h3>Performance targets (issue 5): {int((met['met'] == 'yes').sum())} of "
                       f"{len(met)} measured targets met</h3>"
                       "<p>Targets are for the project's 2-core CPU, float32, 2 threads; "
                       "\"not measured\": the run has no such case (run <code>meprop bench --profile perf"
                       "</code>).</p>" + table_html(targets.targets_display(matched), speedup_column=None))
    else:
        target_html = ('<p class="note">No case of the performance target table (issue 5) is in these '
                       "results; <code>meprop bench --profile perf</code> measures them.</p>")
    parts.append(target_html)
    return "\n".join(parts), head, matched


def _tables(frame: pd.DataFrame, out_dir: Path, written: list[Path]) -> str:
    parts = []
    for measurement in MEASUREMENTS:
        table = speedup_table(frame, measurement)
        if table.empty:
            continue
        written += write_table(table, out_dir, f"speedup_{measurement}").values()
        note = ""
        slow_below = 1.0
        if measurement == "forward":  # the forward is unchanged: within 5% of dense is the goal
            slow_below, note = 1 / 1.05, "<p>The forward pass is unchanged by meProp: red marks a meProp forward more than 5% slower than dense.</p>"
        parts.append(f"<h3>{MEASUREMENT_TITLES[measurement]} ({len(table)} cases)</h3>" + note
                     + table_html(table, slow_below=slow_below))
    return "\n".join(parts) or '<p class="note">No benchmark rows.</p>'


def _figures(frame: pd.DataFrame, out_dir: Path, written: list[Path]) -> str:
    if frame.empty:
        return '<p class="note">No benchmark rows to plot.</p>'
    sections = figs.all_figures(frame, out_dir)
    titles = {"speedup_vs_k": "Speedup vs k/n", "speedup_vs_hidden": "Speedup vs hidden size",
              "time_breakdown": "Forward vs backprop time", "modes": "Selection modes side by side",
              "devices": "CPU vs GPU"}
    parts = []
    for key, files in sections.items():
        if not files:
            continue
        parts.append(f"<h3>{titles[key]}</h3>")
        for f in files:
            written += [f.png, f.svg]
            parts.append(figure_html(f.png, f.svg, f.title, f.caption, out_dir))
    return "\n".join(parts) or ('<p class="note">Too few points to plot (a curve needs at least two k '
                                "ratios or hidden sizes of one case).</p>")


def _paper(frame: pd.DataFrame, out_dir: Path, written: list[Path]) -> str:
    comparison = paper.paper_comparison(frame)
    parts = []
    if comparison.empty:
        parts.append('<p class="note">These results contain none of the paper\'s measured shapes '
                     "(Table 7: linear-only, n=8192, batch 1024, k 8–512; Table 8: MLP n=8192; "
                     "Table 1: n=500, batch 10, k 10/20); <code>meprop bench --profile paper</code> "
                     "measures them. The paper's figures are listed below for reference.</p>")
    else:
        written += write_table(comparison, out_dir, "paper_comparison").values()
        parts.append("<p>The paper's speedups were measured on a GTX 1080 GPU (Tables 7, 8) or for whole "
                     "CPU training runs (Table 1); ours on the device named in each row.</p>"
                     + table_html(comparison, speedup_column=None))
    tables = paper.paper_tables()
    parts.append("<details><summary>The paper's Tables 7, 8, 1 and 2</summary>"
                 "<h3>Table 7 (GPU, h=8192, batch 1024, linear-only backprop)</h3>" + table_html(tables["table7"])
                 + "<h3>Table 8 (GPU, MNIST MLP h=8192, overall backprop)</h3>" + table_html(tables["table8"])
                 + "<h3>Table 1 (CPU, hidden 500)</h3>" + table_html(tables["table1"])
                 + "<h3>Table 2 (CPU, Adam, overall)</h3>" + table_html(tables["table2"], speedup_column=None)
                 + "</details>")
    return "\n".join(parts)


def _memory(frame: pd.DataFrame, out_dir: Path, written: list[Path]) -> str:
    table = memory_table(frame) if not frame.empty else pd.DataFrame()
    if table.empty:
        return '<p class="note">No peak memory was recorded in these results.</p>'
    written += write_table(table, out_dir, "peak_memory").values()
    return ("<p>Peak memory during the measurement: <code>cuda_max_allocated</code> is "
            "<code>torch.cuda.max_memory_allocated</code>; <code>cpu_rss_delta</code> the growth of the "
            "process's resident set.</p>" + table_html(table, speedup_column=None))


def _accuracy(train: pd.DataFrame, out_dir: Path, problems: list[str]) -> str:
    if train.empty:
        return '<p class="note">No training results in the inputs (<code>meprop train</code> writes them).</p>'
    try:
        from meprop.report.accuracy import build_accuracy_section
    except ImportError:
        return (f'<p class="note">{len(train)} training record(s) present, but this build has no '
                "accuracy section (meprop.report.accuracy).</p>")
    try:
        return build_accuracy_section(train, out_dir)
    except Exception as error:  # one failing section must not take the whole report down
        problems.append(f"accuracy section failed: {type(error).__name__}: {error}")
        return f'<p class="note">The accuracy section could not be built: {html.escape(str(error))}</p>'


def _problems_html(problems: list[str], severe: bool) -> str:
    items = "".join(f"<li>{html.escape(p)}</li>" for p in problems)
    return f'<div class="problems{" severe" if severe else ""}"><ul>{items}</ul></div>'


def build_report(paths: Iterable[str | Path] | LoadedResults, out_dir: str | Path, *,
                 title: str | None = None) -> Report:
    """Load ``paths`` and write the report into ``out_dir``; returns what was written."""
    loaded = paths if isinstance(paths, LoadedResults) else load_results(paths)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ResultsError(f"cannot create the output folder {str(out_dir)!r}: {error}") from None
    frame, repeated = latest_per_case(bench_frame(loaded.records), loaded)
    train = train_frame(loaded.records)
    problems, severe = input_problems(loaded, frame)
    if repeated:
        problems.append(f"{repeated} case(s) were measured more than once on the same machine: "
                        "the latest outcome of each is shown")
    written: list[Path] = []
    env = env_frame(loaded.records)
    if not env.empty:
        written += write_table(env.reset_index(names="field"), out_dir, "environment").values()

    headline, head, matched = _headline(frame, out_dir, written)
    body = [
        ("environment", "Environment and method",
         (table_html(env.reset_index(names="field"), css_class="env", speedup_column=None)
          if not env.empty else '<p class="note">No environment record in the inputs.</p>')
         + _method(loaded, frame)),
        ("headline", "Headline", headline),
        ("tables", "Speedup tables", _tables(frame, out_dir, written)),
        ("figures", "Figures", _figures(frame, out_dir, written)),
        ("paper", "Paper side by side", _paper(frame, out_dir, written)),
        ("memory", "Peak memory", _memory(frame, out_dir, written)),
        ("accuracy", "Accuracy", _accuracy(train, out_dir, problems)),
    ]
    if problems:
        body.insert(0, ("problems", "What is missing in the inputs", _problems_html(problems, severe)))
    files = sorted({p.relative_to(out_dir).as_posix() for p in written})
    asv_page = out_dir.parent / "asv" / "index.html"  # scripts/asv_publish.sh writes reports/asv
    asv_link = ('<p>The asv dashboard published beside this report: <a href="../asv/index.html">'
                "../asv/index.html</a>.</p>" if asv_page.exists() else "")
    body.append(("files", "Files",
                 "<p>Inputs: " + html.escape("; ".join(loaded.sources)) + ".</p>" + asv_link + "<ul>"
                 + "".join(f'<li><a href="{html.escape(f)}">{html.escape(f)}</a></li>' for f in files)
                 + "</ul>"))
    page = render_page(title or DEFAULT_TITLE, _meta(loaded), body)
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return Report(index=index, problems=problems, headline=head, targets=matched, files=[index, *written])
