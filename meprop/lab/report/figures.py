"""Report figures (matplotlib + seaborn, imported lazily): speedup curves and time bars.

The views follow the paper (Sun et al. 2017): speedup against the kept ratio k/n
(Table 7's view, with the ideal n/k line), speedup against hidden size, and the
forward-vs-backprop time breakdown of Table 2. Every figure is written as PNG and SVG
under ``out_dir/figures`` and described by a :class:`FigureFile`. Figures are built on
``matplotlib.figure.Figure`` objects (no pyplot state, no GUI backend needed).

Rows of different machines, devices and modes are never drawn in one line: each figure is
one (machine, device, mode) group, except the side-by-side views, which exist to compare
modes (one machine and device) or devices (same mode).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from meprop.lab.report.frames import ok_rows, workload_of
from meprop.lab.measurements import FORWARD, REGISTRY as MEASUREMENT_REGISTRY

__all__ = ["FigureFile", "save_figure", "speedup_vs_k_ratio", "speedup_vs_hidden", "time_breakdown",
           "modes_side_by_side", "devices_side_by_side", "all_figures"]

_DPI = 110
#: Figures drawn of each kind, and panels along one axis of a figure: the report's figures
#: stay readable and its build time bounded for any number of records;
#: every row is still in the tables (CSV).
MAX_FIGURES_PER_KIND = 4
MAX_PANELS = 4
_PANEL_W, _PANEL_H = 3.8, 3.0  # inches per panel
_LEGEND_W = 1.5  # inches right of the panels for the figure legend


@dataclass(frozen=True)
class FigureFile:
    """A written figure: ``png`` and ``svg`` paths, a title and a caption for the page.

    ``figure`` is the matplotlib Figure itself (for tests and notebooks).
    """

    name: str
    title: str
    caption: str
    png: Path
    svg: Path
    figure: Any = field(default=None, compare=False, repr=False)


#: one figure per group: rows of different machines, devices, modes or workloads never share a line
_FIGURE_GROUP = ["machine", "device", "mode", "workload"]


#: How a workload is named in figure titles (an unknown one, e.g. a user's model, by its own name).
def _workload(group: pd.DataFrame) -> str:
    """``single linear layer``, ``MLP, 2 hidden layers``, ``LSTM tagger``...: a group's workload."""
    row = group.iloc[0]
    spec = workload_of(row["workload"])
    if not spec.stacks_layers:
        return spec.display_name({"model": row["workload"]}) if spec.needs_model_spec else spec.label
    layers = int(row["layers"]) if pd.notna(row["layers"]) else "?"
    return f"{spec.label}, {layers} hidden layers"


def _spread(values, n: int = MAX_PANELS) -> list:
    """At most ``n`` of the sorted ``values``, evenly spread, the smallest and largest kept."""
    values = sorted(values)
    if len(values) <= n:
        return values
    return [values[round(i * (len(values) - 1) / (n - 1))] for i in range(n)]


def _slug(*parts: object) -> str:
    text = "_".join(str(p) for p in parts if p is not None)
    return "".join(c if c.isalnum() or c in "-." else "_" for c in text).strip("_").lower()


def save_figure(fig, out_dir: Path, name: str, title: str, caption: str) -> FigureFile:
    """Write ``fig`` as ``figures/<name>.png`` and ``.svg`` under ``out_dir``; the page's description of it."""
    folder = Path(out_dir) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    png, svg = folder / f"{name}.png", folder / f"{name}.svg"
    fig.savefig(png, dpi=_DPI)
    fig.savefig(svg)
    return FigureFile(name, title, caption, png, svg, fig)


def _new_figure(nrows: int, ncols: int, *, sharey: bool = False):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(5.0, _PANEL_W * ncols) + _LEGEND_W, _PANEL_H * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey)
    return fig, axes


def _style():
    import seaborn as sns

    return sns.axes_style("whitegrid")


def _speedup_yaxis(ax) -> None:
    """Log y with ticks at 1, 2, 5 x 10^i labelled ``2x`` (no scientific minor labels)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}x"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _ratio_axes(ax, ratios) -> None:
    """Log x ticked at the measured k/n values (up to 8 of them), labelled plainly."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ratios = sorted(set(np.round(np.asarray(ratios, dtype=float), 6)))
    ax.xaxis.set_major_locator(FixedLocator(ratios) if len(ratios) <= 8
                               else LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:.2g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(axis="x", labelsize=8, labelrotation=45 if len(ratios) > 4 else 0)
    _speedup_yaxis(ax)


def _palette(values, name: str) -> dict[str, tuple]:
    """One colour per value for the whole figure, so a batch size keeps its colour in every panel."""
    import seaborn as sns

    order = sorted({str(v) for v in values}, key=_natural)
    return dict(zip(order, sns.color_palette(name, len(order))))


def _lines(ax, data: pd.DataFrame, x: str, hue: str, palette: dict[str, tuple]) -> None:
    """One line per ``hue`` value (median of repeated rows) with each cell's 95% interval as an
    error bar, noisy points ringed in red."""
    data = data.assign(**{hue: data[hue].astype(str)})
    present = set(data[hue])
    for value in (v for v in palette if v in present):
        part = data[data[hue] == value]
        curve = part.groupby(x)["speedup"].median().sort_index()
        ax.plot(curve.index.to_numpy(), curve.to_numpy(), marker="o", markersize=5, color=palette[value],
                label=value)
        bars = part[part["speedup_low"].notna() & part["speedup_high"].notna()] if "speedup_low" in part else part[:0]
        if not bars.empty:
            below = (bars["speedup"] - bars["speedup_low"]).clip(lower=0).to_numpy()
            above = (bars["speedup_high"] - bars["speedup"]).clip(lower=0).to_numpy()
            ax.errorbar(bars[x].to_numpy(), bars["speedup"].to_numpy(), yerr=[below, above], fmt="none",
                        ecolor=palette[value], elinewidth=1, capsize=2.5, alpha=0.8)
    noisy = data[data["noisy"] == True]  # noqa: E712 (None = unknown stays unflagged)
    if not noisy.empty:
        ax.scatter(noisy[x], noisy["speedup"], s=90, facecolors="none", edgecolors="red",
                   linewidths=1.2, label=_NOISY, zorder=5)
    if "above_ideal" in data:
        above = data[data["above_ideal"] == True]  # noqa: E712
        if not above.empty:
            ax.scatter(above[x], above["speedup"], s=140, marker="s", facecolors="none",
                       edgecolors="darkorange", linewidths=1.4, label=_ABOVE, zorder=6)


_NOISY, _IDEAL, _DENSE = "noisy (IQR > 10%)", "ideal n/k", "dense (1x)"
_ABOVE = "above ideal n/k: broken baseline"


def _figure_legend(fig, axes, title: str) -> None:
    """One legend for the whole figure, right of the panels: data lines, then reference marks."""
    entries = {}
    for ax in axes.flat:
        handles, labels = ax.get_legend_handles_labels()
        for handle, label in zip(handles, labels):
            entries.setdefault(label, handle)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    refs = (_IDEAL, _DENSE, _NOISY, _ABOVE)
    entries = {**{k: v for k, v in sorted(entries.items(), key=lambda kv: _natural(kv[0])) if k not in refs},
               **{k: entries[k] for k in refs if k in entries}}
    if entries:
        fig.legend(list(entries.values()), list(entries), title=title, loc="outside right upper",
                   fontsize=8, title_fontsize=9)


def _natural(value: str):
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)


def _reference_lines(ax, ratios: np.ndarray) -> None:
    ratios = np.sort(np.unique(ratios))
    ax.plot(ratios, 1 / ratios, "k--", linewidth=1, label=_IDEAL)
    ax.axhline(1.0, color="tab:red", linestyle=":", linewidth=1.2, label=_DENSE)


def speedup_vs_k_ratio(frame: pd.DataFrame, out_dir: Path, measurement: str = "linear_backward") -> list[FigureFile]:
    """Speedup vs k/n (log-log), one panel per hidden size, one line per batch size."""
    from meprop.lab.results.schema import MEASUREMENT_TITLES

    files = []
    ok = ok_rows(frame, measurement)
    for (machine, device, mode, workload), group in ok.groupby(_FIGURE_GROUP, sort=True):
        if len(files) >= MAX_FIGURES_PER_KIND:
            break
        if group["k_ratio"].nunique() < 2:
            continue
        hiddens = _spread(group["hidden"].unique())
        palette = _palette(group["batch"], "viridis")
        where = f"{_workload(group)} — {machine}, {device}, {mode}"
        with _style():
            fig, axes = _new_figure(1, len(hiddens), sharey=True)
            for ax, hidden in zip(axes[0], hiddens):
                part = group[group["hidden"] == hidden]
                _lines(ax, part, "k_ratio", "batch", palette)
                _reference_lines(ax, part["k_ratio"].to_numpy())
                _ratio_axes(ax, part["k_ratio"])
                ax.set_title(f"hidden n = {hidden}")
                ax.set_xlabel("k / n (kept ratio, log)")
                ax.set_ylabel("speedup vs dense (log)")
            _figure_legend(fig, axes, "batch")
            fig.suptitle(f"{MEASUREMENT_TITLES[measurement]}: speedup vs k/n\n{where}")
        name = _slug("speedup_vs_k", measurement, workload, machine, device, mode)
        files.append(save_figure(fig, out_dir, name, f"{MEASUREMENT_TITLES[measurement]} speedup vs k/n, {where}",
                           "Speedup = dense median / meProp median (same run); error bars: its 95% "
                           "interval. Dashed: ideal n/k; dotted red: break-even (1x). Red rings: noisy "
                           "cells."))
    return files


def speedup_vs_hidden(frame: pd.DataFrame, out_dir: Path, measurement: str = "linear_backward") -> list[FigureFile]:
    """Speedup vs hidden size at fixed k ratios, one panel per batch size."""
    from meprop.lab.report.frames import nominal_k_ratio
    from meprop.lab.results.schema import MEASUREMENT_TITLES

    files = []
    ok = ok_rows(frame, measurement)
    for (machine, device, mode, workload), group in ok.groupby(_FIGURE_GROUP, sort=True):
        if len(files) >= MAX_FIGURES_PER_KIND:
            break
        if group["hidden"].nunique() < 2:
            continue
        group = group.assign(ratio=nominal_k_ratio(group["k_ratio"]))
        batches = _spread(group["batch"].unique())
        palette = _palette(group["ratio"], "rocket")
        where = f"{_workload(group)} — {machine}, {device}, {mode}"
        with _style():
            fig, axes = _new_figure(1, len(batches), sharey=True)
            for ax, batch in zip(axes[0], batches):
                part = group[group["batch"] == batch]
                _lines(ax, part, "hidden", "ratio", palette)
                ax.axhline(1.0, color="tab:red", linestyle=":", linewidth=1.2, label=_DENSE)
                ax.set_xscale("log", base=2)
                _speedup_yaxis(ax)
                from matplotlib.ticker import NullFormatter

                ax.set_xticks(sorted(part["hidden"].unique()))
                ax.set_xticklabels([str(h) for h in sorted(part["hidden"].unique())])
                ax.xaxis.set_minor_formatter(NullFormatter())
                ax.set_title(f"batch = {batch}")
                ax.set_xlabel("hidden size n (log)")
                ax.set_ylabel("speedup vs dense (log)")
            _figure_legend(fig, axes, "k / n")
            fig.suptitle(f"{MEASUREMENT_TITLES[measurement]}: speedup vs hidden size\n{where}")
        name = _slug("speedup_vs_hidden", measurement, workload, machine, device, mode)
        files.append(save_figure(fig, out_dir, name, f"{MEASUREMENT_TITLES[measurement]} speedup vs hidden size, {where}",
                           "One line per kept ratio k/n; error bars: 95% intervals. Dotted red: "
                           "break-even (1x)."))
    return files


def time_breakdown(frame: pd.DataFrame, out_dir: Path) -> list[FigureFile]:
    """Forward vs backprop time, dense vs meProp (the paper's Table 2 view).

    For each (hidden, batch) with both a forward and a backprop row at the same k (the
    smallest measured k/n), two stacked bars: dense and meProp, each forward + backprop,
    in % of the dense total (the dense total in ms is written above the bars).
    """
    files = []
    ok = frame[frame["status"] == "ok"]
    for (machine, device, mode, workload), group in ok.groupby(["machine", "device", "mode", "workload"], sort=True):
        if len(files) >= MAX_FIGURES_PER_KIND:
            break
        spec = workload_of(workload)
        backward = spec.backward_measurement
        fwd = group[group["measurement"] == FORWARD.name]
        bwd = group[(group["measurement"] == backward) & group["speedup"].notna()]
        keys = ["hidden", "batch", "k", "layers"]
        both = fwd.merge(bwd, on=keys, suffixes=("_f", "_b")).dropna(
            subset=["dense_ms_f", "meprop_ms_f", "dense_ms_b", "meprop_ms_b"])
        if both.empty:
            continue
        both = both.sort_values("k").groupby(["hidden", "batch"], as_index=False).first()
        both = both.sort_values(["hidden", "batch"]).reset_index(drop=True)
        total = both["dense_ms_f"] + both["dense_ms_b"]
        with _style():
            from matplotlib.figure import Figure

            fig = Figure(figsize=(max(5.5, 1.1 * len(both) + 3.5), 4.4), layout="constrained")
            ax = fig.subplots()
            x = np.arange(len(both))
            width = 0.38
            for offset, side, color in ((-width / 2, "dense", "#4c72b0"), (width / 2, "meprop", "#dd8452")):
                f = both[f"{side}_ms_f"] / total * 100
                b = both[f"{side}_ms_b"] / total * 100
                label = "dense" if side == "dense" else "meProp"
                ax.bar(x + offset, f, width, color=color, alpha=0.45, edgecolor=color, label=f"{label} forward")
                ax.bar(x + offset, b, width, bottom=f, color=color, edgecolor=color, label=f"{label} backprop")
            for i, t in enumerate(total):
                ax.annotate(f"{t:.3g} ms", (x[i] - width / 2, 101), ha="center", fontsize=7)
            ax.set_xticks(x)
            ax.set_xticklabels([f"n={r.hidden}\nB={r.batch}\nk={r.k}" for r in both.itertuples()], fontsize=7)
            ax.set_ylabel("% of dense forward + backprop time")
            tallest = ((both["meprop_ms_f"] + both["meprop_ms_b"]) / total * 100).max()
            ax.set_ylim(0, max(112.0, tallest * 1.08))  # meProp can be slower than dense
            ax.set_xlim(-0.9, len(both) - 0.1)
            fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", fontsize=8)
            what = MEASUREMENT_REGISTRY[backward].title.lower()
            fig.suptitle(f"Forward vs {what}, dense vs meProp\n{_workload(group)} — {machine}, {device}, {mode}")
        name = _slug("time_breakdown", workload, machine, device, mode)
        files.append(save_figure(fig, out_dir, name, f"Time breakdown, {_workload(group)} ({machine}, {device}, {mode})",
                           "Pale: forward; solid: backprop. Bars in % of the dense total, which is written "
                           "above each pair; at the smallest measured k per (n, batch)."))
    return files


def _facet_compare(frame: pd.DataFrame, out_dir: Path, hue: str, groups: list[str], name_prefix: str,
                   title: str, measurement: str) -> list[FigureFile]:
    from meprop.lab.results.schema import MEASUREMENT_TITLES

    files = []
    ok = ok_rows(frame, measurement)
    for keys, group in ok.groupby(groups, sort=True):
        if len(files) >= MAX_FIGURES_PER_KIND:
            break
        keys = keys if isinstance(keys, tuple) else (keys,)
        if group[hue].nunique() < 2 or group["k_ratio"].nunique() < 2:
            continue
        hiddens, batches = _spread(group["hidden"].unique(), 3), _spread(group["batch"].unique(), 3)
        palette = _palette(group[hue], "Set1")
        with _style():
            fig, axes = _new_figure(len(batches), len(hiddens))
            for i, batch in enumerate(batches):
                for j, hidden in enumerate(hiddens):
                    ax = axes[i][j]
                    part = group[(group["batch"] == batch) & (group["hidden"] == hidden)]
                    if part.empty:
                        ax.set_visible(False)
                        continue
                    _lines(ax, part, "k_ratio", hue, palette)
                    _reference_lines(ax, part["k_ratio"].to_numpy())
                    _ratio_axes(ax, part["k_ratio"])
                    ax.set_title(f"n = {hidden}, batch = {batch}", fontsize=9)
                    ax.set_xlabel("k / n (log)")
                    ax.set_ylabel("speedup (log)")
            label = ", ".join(str(k) for k in keys)
            _figure_legend(fig, axes, hue)
            fig.suptitle(f"{MEASUREMENT_TITLES[measurement]}: {title}\n{label}")
        files.append(save_figure(fig, out_dir, _slug(name_prefix, measurement, *keys),
                           f"{MEASUREMENT_TITLES[measurement]}: {title} ({label})",
                           f"One line per {hue}; dashed: ideal n/k; dotted red: 1x."))
    return files


def modes_side_by_side(frame: pd.DataFrame, out_dir: Path, measurement: str = "linear_backward") -> list[FigureFile]:
    """Per-example vs unified vs random on the same cases (one machine and device)."""
    return _facet_compare(frame, out_dir, "mode", ["machine", "device", "workload"], "modes",
                          "selection modes side by side", measurement)


def devices_side_by_side(frame: pd.DataFrame, out_dir: Path, measurement: str = "linear_backward") -> list[FigureFile]:
    """CPU vs GPU (and machines) on the same cases, per mode; drawn when both device kinds exist."""
    ok = ok_rows(frame, measurement)
    if ok.empty:
        return []
    kinds = {str(device).split(":")[0] for device in ok["device"]}
    if not {"cpu", "cuda"} <= kinds:
        return []
    labelled = frame.assign(where=frame["machine"].astype(str) + " " + frame["device"].astype(str))
    return _facet_compare(labelled, out_dir, "where", ["mode", "workload"], "CPU vs GPU", "CPU vs GPU", measurement)


def all_figures(frame: pd.DataFrame, out_dir: Path) -> dict[str, list[FigureFile]]:
    """Every figure the report shows, by section (at most :data:`MAX_FIGURES_PER_KIND` per call)."""
    # the fast path in the user's default loop (the tables show the other optimizers)
    lazy = frame[(frame["optimizer"] == "lazy") & (frame["adam"] == "default")]
    out = {
        "step_vs_k": speedup_vs_k_ratio(lazy, out_dir, "train_step"),  # the fast path, per workload
        "speedup_vs_k": speedup_vs_k_ratio(frame, out_dir, "linear_backward")
        + speedup_vs_k_ratio(frame, out_dir, "overall_backward"),
        "speedup_vs_hidden": speedup_vs_hidden(frame, out_dir, "linear_backward"),
        "time_breakdown": time_breakdown(frame, out_dir),
        "modes": modes_side_by_side(frame, out_dir),
        "devices": devices_side_by_side(frame, out_dir),
    }
    return out
