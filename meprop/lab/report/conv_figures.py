"""Figures of the report's "Does it pay off?" section (time to accuracy, ``convergence`` records).

- :func:`curve_figure`: the dev metric against cumulative training wall-clock, one line per
  variant (dense in black), the target as a dashed line and each variant's time to target
  marked;
- :func:`pareto_figure`: time to target against the final dev metric, one point per
  variant (filled: reached; hollow, at its whole training time: not reached), dense
  included, the meProp points labelled with their k;
- :func:`width_figure`: "Where does meProp pay off?", the time-to-target speedup (median
  over seeds, 95% interval as error bars) against the width, one line per batch and arm
  (its label without k), 1.0 marked.

Both go through :func:`meprop.lab.report.figures.save_figure` (PNG and SVG under
``figures/``). matplotlib is imported inside the functions.
"""

from __future__ import annotations

import re
from pathlib import Path

from meprop.lab.report.figures import FigureFile, save_figure

__all__ = ["curve_figure", "pareto_figure", "width_figure", "slug"]


def slug(text: str) -> str:
    """A file-name-safe form of ``text``."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "run"


def _figure(width: float = 7.0, height: float = 4.2):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot(1, 1, 1)


def curve_figure(name: str, title: str, rows: list[dict], outcomes: list, metric: str, out_dir: Path) -> FigureFile:
    """``rows``: the run's ``convergence`` records; ``outcomes``: its time-to-target outcomes."""
    fig, ax = _figure()
    for index, outcome in enumerate(outcomes):
        points = [(r["train_time_s"], r["dev_metric"]) for r in rows
                  if r["label"] == outcome.label and r.get("dev_metric") is not None]
        if not points:
            continue
        style = {"color": "black", "linewidth": 2.0} if outcome.method == "dense" else {"color": f"C{index}"}
        ax.plot(*zip(*points), marker=".", label=outcome.label, **style)
        if outcome.time_s is not None:
            ax.axvline(outcome.time_s, color=style["color"], linestyle=":", linewidth=1.0)
    threshold = next((o.threshold for o in outcomes if o.threshold is not None), None)
    if threshold is not None:
        ax.axhline(threshold, color="grey", linestyle="--", linewidth=1.0, label=f"target {threshold:.4g}")
    ax.set_xlabel("cumulative training wall-clock (s; evaluation and data preparation excluded)")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    caption = (f"{title}: {metric} against training time, dense and each meProp variant trained side by "
               "side from the same weights on the same data order; dotted lines: when each reached the target.")
    return save_figure(fig, out_dir, name, title, caption)


def pareto_figure(name: str, title: str, outcomes: list, metric: str, out_dir: Path) -> FigureFile:
    """Time to target (or the whole training time, hollow, when not reached) vs final metric."""
    fig, ax = _figure(6.0, 4.2)
    for outcome in outcomes:
        if outcome.final is None:
            continue
        reached = outcome.time_s is not None
        x = outcome.time_s if reached else outcome.total_time_s
        color = "black" if outcome.method == "dense" else ("C0" if outcome.optimizer_mode == "lazy" else "C1")
        ax.scatter([x], [outcome.final], s=40, color=color if reached else "none", edgecolors=color,
                   marker="s" if outcome.mode == "unified" else "o")
        ax.annotate("dense" if outcome.k is None else f"k={outcome.k}", (x, outcome.final), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("time to target (s); hollow: not reached, placed at its whole training time")
    ax.set_ylabel(f"final {metric}")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    caption = (f"{title}: the trade-off across k. Black: dense; blue: meProp with the lazy Adam; orange: the "
               "exact optimizer; squares: unified selection. Up and left is better.")
    return save_figure(fig, out_dir, name, title, caption)


def _finite_or(value, fallback: float) -> float:
    return fallback if value is None or value != value or value in (float("inf"), float("-inf")) else value


def _line_name(arm: str) -> str:
    """An arm's label without its k (k differs per width): ``top-k k=164 (lazy) +EF 1`` ->
    ``top-k (lazy) +EF 1``; one line of the width figure per such name and batch."""
    return re.sub(r" k=\d+", "", arm)


def _drawn_target(summary, target_index: int | None) -> int:
    """The index of the target a width figure draws for ``summary``: the middle one by default."""
    return summary.middle if target_index is None else target_index


def width_figure(name: str, summaries: list, out_dir: Path, target_index: int | None = None) -> FigureFile | None:
    """``summaries``: one :class:`meprop.lab.converge.study.StudySummary` per (width, batch) cell;
    ``target_index``: which of the fixed targets (default: the middle one). A cell where dense
    itself missed the target on most seeds has no speedup to draw and is left out; with no cell
    left, for a target other than the middle one, there is no figure (None)."""
    lines: dict = {}
    for summary in summaries:
        drawn = _drawn_target(summary, target_index)
        if drawn >= len(summary.targets):
            continue
        arms = summary.arms[drawn]
        if arms[0].status != "reached":
            continue
        for arm in arms[1:]:
            if arm.speedup and arm.speedup.get("median") is not None:
                key = (summary.settings.get("batch"), _line_name(arm.arm))
                lines.setdefault(key, []).append((summary.settings.get("hidden"), arm.speedup))
    if not lines and target_index is not None:
        return None
    fig, ax = _figure(7.0, 4.2)
    top = 1.0
    for index, ((batch, line), points) in enumerate(sorted(lines.items(), key=lambda kv: (kv[0][0] or 0, kv[0][1]))):
        points.sort(key=lambda p: p[0] or 0)
        xs = [p[0] for p in points]
        mid = [_finite_or(p[1]["median"], 0.0) for p in points]
        low = [_finite_or(p[1].get("low"), m) for p, m in zip(points, mid)]
        high = [_finite_or(p[1].get("high"), m) for p, m in zip(points, mid)]
        top = max([top, *high])
        ax.errorbar(xs, mid, yerr=[[m - lo for m, lo in zip(mid, low)], [hi - m for m, hi in zip(mid, high)]],
                    marker="s" if line.startswith("unified") else "o", capsize=3, color=f"C{index}",
                    label=f"batch {batch}, {line}")
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1.0, label="1.0: as fast as dense")
    ax.set_xscale("log", base=2)
    widths = sorted({p[0] for points in lines.values() for p in points if p[0]})
    ax.set_xticks(widths, [str(w) for w in widths])
    ax.minorticks_off()
    ax.set_ylim(0, top * 1.1)
    ax.set_xlabel("hidden width h (784-h-h-10 MLP)")
    ax.set_ylabel("time-to-target speedup over dense")
    target = summaries[0].targets[_drawn_target(summaries[0], target_index)].describe() if summaries else "?"
    title = f"Where does meProp pay off? (target {target})"
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    caption = (f"{title}: the median over seeds of the paired time-to-target speedup (dense time / meProp's) "
               "against the width, with its 95% bootstrap interval; k = 4% of h, lazy Adam; above the dashed "
               "line meProp gets there sooner. A point at 0: not reached on more than half the seeds. A cell "
               "where dense missed the target on more than half the seeds is left out.")
    return save_figure(fig, out_dir, name, title, caption)
