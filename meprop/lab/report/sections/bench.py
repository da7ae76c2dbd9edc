"""The benchmark sections of the report: environment and method, headline, speedup tables, figures, memory.

Each function takes the bench frame (:func:`meprop.lab.report.frames.bench_frame`) and the
output folder and returns a :class:`~meprop.lab.report.sections.Section`: its HTML and the
tables (``tables/*.csv``, ``*.md``) and figures (``figures/*.png``, ``*.svg``) it wrote.
Long tables are written in full to CSV and Markdown; the page shows their first
:data:`PAGE_ROWS` rows and links the files, so the page stays small for any number of
records.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from meprop.lab.report import figures as figs
from meprop.lab.report.html import figure_html, table_html
from meprop.lab.report.sections import Section
from meprop.lab.report.tables import (
    MEASUREMENT_TITLES, MEASUREMENTS, break_even_table, headline_table, memory_table, speedup_table,
    step_phases_table,
    write_table,
)
from meprop.lab.report.headline import representative_table
from meprop.lab.results.stats import METHOD_NOTE
from meprop.lab.measurements import REGISTRY as MEASUREMENT_REGISTRY

__all__ = ["PAGE_ROWS", "environment", "headline", "tables", "figures", "memory", "long_table_html"]

#: Rows of one table shown on the page; the full table is in its CSV / Markdown file.
PAGE_ROWS = 200
_FIGURE_TITLES = {"step_vs_k": "Training step: speedup vs k/n, per workload (lazy meprop.optim)",
                  "speedup_vs_k": "Speedup vs k/n", "speedup_vs_hidden": "Speedup vs hidden size",
                  "time_breakdown": "Forward vs backprop time", "modes": "Selection modes side by side",
                  "devices": "CPU vs GPU"}


def long_table_html(table: pd.DataFrame, files: dict[str, Path], out_dir: Path, **kwargs) -> str:
    """``table`` on the page, or its first :data:`PAGE_ROWS` rows and links to the full files."""
    if len(table) <= PAGE_ROWS:
        return table_html(table, **kwargs)
    links = " · ".join(f'<a href="{html.escape(p.relative_to(out_dir).as_posix())}">{kind.upper()}</a>'
                       for kind, p in files.items())
    return (f'<p class="note">{len(table)} rows: the page shows the first {PAGE_ROWS}; the full table is '
            f"in {links}.</p><details><summary>First {PAGE_ROWS} rows</summary>"
            + table_html(table.head(PAGE_ROWS), **kwargs) + "</details>")


def method_html(timings: list[str], frame: pd.DataFrame) -> str:
    """How the numbers were measured: samples, spread, speedup, ideal, the measurements."""
    ok = frame[frame["status"] == "ok"] if not frame.empty else frame
    samples = ok["n_samples"].dropna() if not ok.empty else pd.Series(dtype=float)
    n = (f"{int(samples.min())}" if samples.min() == samples.max() else
         f"{int(samples.min())}–{int(samples.max())}") if not samples.empty else "an unrecorded number of"
    text = (f"Each time is the <b>median of {n} samples</b> after warm-up; the spread is the "
            "interquartile range (IQR) in % of the median, and a cell is flagged <b>noisy</b> when "
            "either side's IQR exceeds 10% of its median. <b>Speedup</b> = dense median / meProp median; "
            "for <code>meprop bench</code> runs dense and meProp are measured in the same run, "
            "interleaved. <b>Ideal</b> = n / k; <b>efficiency</b> = speedup / ideal. "
            "<b>Linear-only backprop</b> is the backward of the linear layer(s) alone for a fixed output "
            "gradient (the paper's \"backprop time\", Tables 1 and 7); <b>overall backprop</b> is the "
            "whole <code>loss.backward()</code> of a model (Tables 2 and 8).")
    text += " " + METHOD_NOTE + " <b>flag</b> says why a cell is no headline figure."
    if timings:
        text += " Other sources: " + html.escape("; ".join(timings)) + "."
    return f"<p>{text}</p>"


def environment(env: pd.DataFrame, timings: list[str], frame: pd.DataFrame, out_dir: Path) -> Section:
    """One column per run with its environment fields, then how the numbers were measured."""
    files: list[Path] = []
    if env.empty:
        body = '<p class="note">No environment record in the inputs.</p>'
    else:
        table = env.reset_index(names="field")
        files += write_table(table, out_dir, "environment").values()
        body = table_html(table, css_class="env", speedup_column=None)
    return Section("environment", "Environment and method", body + method_html(timings, frame), files)


def _interval(low: float, high: float) -> str:
    return f"{low:.2f}–{high:.2f}x" if np.isfinite(low) and np.isfinite(high) else "no interval"


def _card(row: pd.Series) -> str:
    """One card: the representative cell's speedup, interval and samples, or why it is not quoted."""
    title = f"{row['title']}, {row['workload']}" + (" vs fused Adam" if row.get("adam") == "fused" else "")
    where = " · ".join(html.escape(str(row[name])) for name in ("machine", "device", "mode"))
    samples = f"{int(row['samples'])} samples" if pd.notna(row["samples"]) else "samples unknown"
    if row["quotable"]:
        figure = (f'<div class="big">{row["speedup"]:.1f}x</div><div class="ci">95% CI '
                  f'{_interval(row["speedup low"], row["speedup high"])} · {samples}</div>')
    else:  # no figure from a flagged cell: the reason (and the interval, where that is the reason)
        interval = (f", 95% CI {_interval(row['speedup low'], row['speedup high'])}"
                    if "interval contains" in str(row["flag"]) else "")
        figure = (f'<div class="big muted">not quotable</div><div class="ci">{html.escape(str(row["flag"]))}'
                  f"{interval} · {samples} (see the tables)</div>")
    best = ""
    has_best = np.isfinite(row["best quotable speedup"])
    if (has_best and row["best quotable at"] != row["at"]) or not row["quotable"]:
        best = (f'<div class="small">best quotable cell: {row["best quotable speedup"]:.1f}x '
                f'({_interval(row["best quotable low"], row["best quotable high"])}) at '
                f'{html.escape(str(row["best quotable at"]))}</div>'
                if has_best else '<div class="small">no quotable cell in this group</div>')
    return (f'<div class="card"><div class="small"><b>{html.escape(title)}</b> · {where}</div>{figure}'
            f'<div class="small">at {html.escape(str(row["at"]))} (typical: {html.escape(str(row["typical"]))})'
            f"</div>{best}</div>")


def _cards(reps: pd.DataFrame) -> str:
    """Training step per workload first, then overall backprop, then linear-only (kernel-level)."""
    cards = [_card(row) for _, row in reps.iterrows()]
    return (f'<div class="headline">{"".join(cards)}</div>' if cards else
            '<p class="note">No speedups could be computed (see the problems above).</p>')


def headline(frame: pd.DataFrame, out_dir: Path) -> tuple[Section, pd.DataFrame]:
    """Representative speedups (cards), the best quotable cells (table) and the break-even k/n;
    also returns the best-quotable table."""
    head = headline_table(frame) if not frame.empty else pd.DataFrame()
    reps = representative_table(frame) if not frame.empty else pd.DataFrame()
    files: list[Path] = []
    if not reps.empty:
        files += write_table(reps, out_dir, "headline_cards").values()
    parts = [_cards(reps.head(PAGE_ROWS)),
             '<p class="note">Each card quotes one <b>representative</b> cell per workload: the measured '
             "shape nearest to the workload's typical one (the paper's setting where it has one), never "
             "the best of a grid, with its 95% interval and sample count. A cell flagged noisy, above "
             "the ideal n/k, or whose interval contains 1.0 is shown as not quotable, with the reason; "
             "\"best quotable cell\" is the unflagged cell with the highest interval lower bound. "
             "The training step is what a standard loop sees (zero_grad, forward, "
             'loss, backward, clip_grad_norm_, step; dense torch.optim.Adam vs meprop.optim.Adam, '
             'lazy). "vs fused Adam": both sides with fused=True, torch\'s fastest Adam and so the '
             'strongest dense baseline. Linear-only backprop is the kernel-level figure: the backward '
             "of the linear layers alone, which no training loop runs by itself.</p>"]
    if not head.empty:
        written = write_table(head, out_dir, "headline")
        files += written.values()
        parts.append("<h3>Best quotable speedups per machine, device and mode</h3>"
                     + long_table_html(head, written, out_dir, speedup_column=None))
    be = break_even_table(frame) if not frame.empty else pd.DataFrame()
    parts.append("<h3>Break-even k/n (linear-only backprop)</h3>")
    if be.empty:
        parts.append('<p class="note">No linear-only backprop speedups measured.</p>')
    else:
        written = write_table(be, out_dir, "break_even")
        files += written.values()
        parts.append('<p>The largest measured k/n at which meProp is still faster than dense (a win: '
                     "the 95% interval above 1.0 and the cell not flagged noisy or above the ideal n/k); "
                     'the true crossing lies between it and the next measured ratio ("first slower"). '
                     "Blank: no measured k/n is such a win.</p>"
                     + long_table_html(be, written, out_dir, speedup_column=None))
    return Section("headline", "Headline", "\n".join(parts), files), head


def tables(frame: pd.DataFrame, out_dir: Path) -> Section:
    """One speedup table per measurement (the forward judged against 5% slower than dense)."""
    parts, files = [], []
    for measurement in MEASUREMENTS:
        table = speedup_table(frame, measurement)
        if table.empty:
            continue
        written = write_table(table, out_dir, f"speedup_{measurement}")
        files += written.values()
        note, slow_below = "", 1.0
        kind = MEASUREMENT_REGISTRY[measurement]
        if kind.ceiling == "none":  # the forward is unchanged: within 5% of dense is the goal
            slow_below = 1 / 1.05
            note = ("<p>The forward pass is unchanged by meProp: red marks a meProp forward more than "
                    "5% slower than dense.</p>")
        parts.append(f"<h3>{MEASUREMENT_TITLES[measurement]} ({len(table)} cases)</h3>" + note
                     + long_table_html(table, written, out_dir, slow_below=slow_below))
        if kind.ceiling == "amdahl":
            parts += _step_phases(frame, out_dir, files)
    return Section("tables", "Speedup tables", "\n".join(parts) or '<p class="note">No benchmark rows.</p>', files)


def _step_phases(frame: pd.DataFrame, out_dir: Path, files: list[Path]) -> list[str]:
    phases = step_phases_table(frame)
    if phases.empty:
        return []
    written = write_table(phases, out_dir, "train_step_phases")
    files += written.values()
    return ["<h3>Training step: where the time goes (ms)</h3><p>Each side's step split into "
            "forward (zero_grad, forward, loss), backward and optimizer (clip_grad_norm_ and step), "
            "medians of steps probed after the timed samples. <b>Amdahl limit</b>: the step speedup "
            "meProp would reach if its backward cost nothing (dense step / meProp forward + "
            "optimizer).</p>" + long_table_html(phases, written, out_dir, speedup_column=None)]


def figures(frame: pd.DataFrame, out_dir: Path, embed_budget: int) -> Section:
    """Every figure, embedded in the page while ``embed_budget`` bytes of PNG last, then linked."""
    if frame.empty:
        return Section("figures", "Figures", '<p class="note">No benchmark rows to plot.</p>')
    parts, files = [], []
    for key, written in figs.all_figures(frame, out_dir).items():
        if not written:
            continue
        parts.append(f"<h3>{_FIGURE_TITLES[key]}</h3>")
        for f in written:
            files += [f.png, f.svg]
            size = f.png.stat().st_size
            embed = size <= embed_budget
            embed_budget -= size if embed else 0
            parts.append(figure_html(f.png, f.svg, f.title, f.caption, out_dir, embed=embed))
    body = "\n".join(parts) or ('<p class="note">Too few points to plot (a curve needs at least two k '
                                "ratios or hidden sizes of one case).</p>")
    return Section("figures", "Figures", body, files)


def memory(frame: pd.DataFrame, out_dir: Path) -> Section:
    """Peak memory per case, where the records carry a measured (non-zero) peak."""
    table, zero = memory_table(frame) if not frame.empty else (pd.DataFrame(), 0)
    zeros = (f" {zero} case(s) read 0 bytes on both sides (the allocator reused memory it already "
             "held, so nothing was measured) and are not listed." if zero else "")
    if table.empty:
        return Section("memory", "Peak memory", '<p class="note">No peak memory was measured in these '
                       f"results.{zeros}</p>")
    written = write_table(table, out_dir, "peak_memory")
    body = ("<p>Peak memory during the measurement: <code>cuda_max_allocated</code> is "
            "<code>torch.cuda.max_memory_allocated</code>; <code>cpu_rss_delta</code> the growth of the "
            f"process's resident set.{zeros}</p>" + long_table_html(table, written, out_dir, speedup_column=None))
    return Section("memory", "Peak memory", body, list(written.values()))
