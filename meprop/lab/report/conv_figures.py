"""Figures of the report's "Does it pay off?" section (time to accuracy, ``convergence`` records).

- :func:`curve_figure`: the dev metric against cumulative training wall-clock, one line per
  variant (dense in black), the target as a dashed line and each variant's time to target
  marked;
- :func:`pareto_figure`: time to target against the final dev metric, one point per
  variant (filled: reached; hollow, at its whole training time: not reached), dense
  included, the meProp points labelled with their k.

Both go through :func:`meprop.lab.report.figures.save_figure` (PNG and SVG under
``figures/``). matplotlib is imported inside the functions.
"""

from __future__ import annotations

import re
from pathlib import Path

from meprop.lab.report.figures import FigureFile, save_figure

__all__ = ["curve_figure", "pareto_figure", "slug"]


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
