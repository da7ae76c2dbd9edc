"""The report's first section, "Does it pay off?": time to accuracy from ``convergence`` records.

For each time-to-accuracy run (one ``run_key``: ``meprop converge``, docs/time_to_accuracy.md):

- a headline card per run: the best meProp variant's time-to-target speedup over dense
  ("not reached" when no meProp variant reached the target, "dense did not reach" when the
  reference is missing);
- the time-to-target table: per variant, the status, the time and steps to target, the
  time-to-target speedup and its split into the step-time speedup and the steps speedup
  (``ratio = step x steps``), the factor that holds it back, final and best dev metric;
- a figure per run: dev metric against cumulative training wall-clock;
- a Pareto figure per run with more than one meProp k: time to target vs final metric.

The arithmetic is :mod:`meprop.lab.converge.time_to_target`'s, the figures
:mod:`meprop.lab.report.conv_figures`'.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from meprop.lab.converge.time_to_target import Target, outcomes, runs_of
from meprop.lab.report.conv_figures import curve_figure, pareto_figure, slug
from meprop.lab.report.html import figure_html, table_html
from meprop.lab.report.sections import Section
from meprop.lab.report.tables import write_table

__all__ = ["section", "outcome_table", "BAR"]

#: The bar the suite aims for: the target reached this many times sooner than dense.
BAR = 1.5
_INTRO = (
    "<p>Does meProp get a model to its accuracy sooner? Dense and each meProp variant train side by "
    "side in one process, from the same initial weights and on the same data order, in alternating "
    "blocks of steps (so they share the machine's noise), with the suite's fair allocator setting. The "
    "clock counts training steps only (evaluation and data preparation excluded). <b>Time-to-target "
    "speedup</b> = dense time to target / the variant's; it splits exactly into the <b>step-time "
    "speedup</b> (dense mean step time / the variant's, up to the target) times the <b>steps "
    "speedup</b> (dense steps to target / the variant's: below 1, meProp needs more steps). "
    "The target counts as reached at the first evaluation that shows it. Method: "
    "docs/time_to_accuracy.md.</p>")


def _run_title(rows: list[dict]) -> str:
    first, last_step = rows[0], max(r["step"] for r in rows)
    target = Target.from_dict(first["target"]).describe()
    return f"{first.get('preset', '?')} ({first.get('workload', '?')}, {last_step} steps, target {target})"


def _limited_by(outcome) -> str:
    if outcome.method == "dense":
        return "reference"
    if outcome.ratio is None and outcome.steps_ratio_bound is not None:
        return (f"steps (convergence): not reached in {outcome.total_steps} steps, dense needed "
                f"{round(outcome.total_steps * outcome.steps_ratio_bound)} (steps speedup < "
                f"{outcome.steps_ratio_bound:.2f})")
    if outcome.ratio is None:
        return {"reached": "dense did not reach"}.get(outcome.status, outcome.status)
    if outcome.ratio >= BAR:
        return f"meets the {BAR}x bar"
    return "steps (convergence)" if outcome.steps_ratio < outcome.step_ratio else "step time"


def outcome_table(records: list[dict]) -> pd.DataFrame:
    """One row per (run, variant) of the ``convergence`` records."""
    rows = []
    for key, run in runs_of(records).items():
        title = _run_title(run)
        for o in outcomes(run):
            rows.append({
                "run": title, "variant": o.label, "status": o.status,
                "time to target s": None if o.time_s is None else float(f"{o.time_s:.4g}"), "steps to target": o.steps,
                "time-to-target speedup": o.ratio, "step-time speedup": o.step_ratio,
                "steps speedup": o.steps_ratio, "limited by": _limited_by(o),
                "final": None if o.final is None else round(o.final, 2),
                "best": None if o.best is None else round(o.best, 2),
                "test at best dev": None if o.test_at_best is None else round(o.test_at_best, 2),
                "trained s": round(o.total_time_s, 2), "steps trained": o.total_steps,
                "note": o.reason or "", "run_key": key,
            })
    return pd.DataFrame(rows)


def _card(title: str, run_outcomes: list) -> str:
    dense = next((o for o in run_outcomes if o.method == "dense"), None)
    others = [o for o in run_outcomes if o.method != "dense"]
    reached = [o for o in others if o.ratio is not None]
    if dense is None or dense.time_s is None:
        big, small = "dense did not reach", "no reference time to target"
    elif reached:
        best = max(reached, key=lambda o: o.ratio)
        big = f"{best.ratio:.2f}x"
        small = (f"{best.label}: {best.time_s:.1f} s vs dense {dense.time_s:.1f} s "
                 f"(step {best.step_ratio:.2f}x × steps {best.steps_ratio:.2f}x)")
    else:
        best = max(others, key=lambda o: o.best if o.best is not None else float("-inf"), default=None)
        big = "not reached"
        small = ("no meProp variant reached the target" +
                 (f" (best: {best.label} at {best.best:.2f} vs {best.threshold:.4g}); dense in "
                  f"{dense.time_s:.1f} s" if best is not None and best.best is not None else ""))
    return (f'<div class="card"><div class="small">time to target · {html.escape(title)}</div>'
            f'<div class="big">{html.escape(big)}</div><div class="small">{html.escape(small)}</div></div>')


def section(records: list[dict], out_dir: Path, embed_budget: int = 4 * 2**20) -> Section:
    """The "Does it pay off?" section from ``convergence`` records (any number of runs)."""
    runs = runs_of(records)
    if not runs:
        return Section("pays-off", "Does it pay off?", _INTRO + '<p class="note">No time-to-accuracy results in '
                       "the inputs (<code>meprop converge --preset mnist-adam --quick</code> writes them; "
                       "<code>make report</code> runs the quick presets).</p>")
    out_dir = Path(out_dir)
    table = outcome_table(records)
    files = list(write_table(table, out_dir, "time_to_target").values())
    cards, figures, spent = [], [], 0
    for key, rows in runs.items():
        title = _run_title(rows)
        run_outcomes = outcomes(rows)
        cards.append(_card(title, run_outcomes))
        metric = rows[0].get("metric") or "dev metric"
        drawn = [curve_figure(f"converge-{slug(key.split('/', 1)[-1])}", title, rows, run_outcomes, metric, out_dir)]
        if len({o.k for o in run_outcomes if o.k is not None}) > 1:
            drawn.append(pareto_figure(f"pareto-{slug(key.split('/', 1)[-1])}", f"{title}: across k", run_outcomes, metric, out_dir))
        for fig in drawn:
            files += [fig.png, fig.svg]
            size = fig.png.stat().st_size
            figures.append(figure_html(fig.png, fig.svg, fig.title, fig.caption, out_dir,
                                       embed=spent + size <= embed_budget))
            spent += size
    shown = table.drop(columns=["run_key"])
    body = (_INTRO + f'<div class="headline">{"".join(cards)}</div>'
            + table_html(shown, speedup_column="time-to-target speedup")
            + f'<p class="note">The bar: the target {BAR}x sooner than dense. "limited by" names the factor '
              "that keeps a variant under it: the steps (meProp needed more steps to get there) or the "
              "step time.</p>" + "".join(figures))
    return Section("pays-off", "Does it pay off?", body, files)
