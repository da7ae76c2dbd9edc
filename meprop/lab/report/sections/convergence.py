"""The report's first section, "Does it pay off?": time to accuracy from ``convergence`` records.

For each study (one preset setting over paired seeds: ``meprop converge``, docs/time_to_accuracy.md):

- a headline card: the best meProp arm's median time-to-target speedup at the middle target
  with its 95% interval over seeds ("no difference shown" where it contains 1; "not reached"
  with the censored count when the arm missed on more than half its seeds), and dense's
  optimizer implementation;
- the table: per arm, the lr it won with and its optimizer implementation, then for every
  target its own columns: seeds reached, median time to target and the speedup, each with its
  interval; and the split of the middle target's speedup (step-time factor x steps factor);
- the ranking: per study, the meProp arms (the remedies of ``mnist-remedies`` among them) by
  their median speedup at the middle target, with its interval, the censored count, the
  verdict and, for an arm slower than dense, the factor of the split that holds it back;
- a figure per study: dev metric against cumulative training wall-clock (its first seed);
- where the ``mnist-width`` preset ran: "Where does meProp pay off?", the speedup with its
  interval against the width, one line per (batch, mode), and a table of the split per cell.

The statistics are :mod:`meprop.lab.converge.study`'s (over seeds,
:mod:`meprop.lab.results.stats`), the figures :mod:`meprop.lab.report.conv_figures`'.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import pandas as pd

from meprop.lab.converge.run import interval_text, ratio_text
from meprop.lab.converge.study import held_back, ranked, summarize
from meprop.lab.converge.time_to_target import outcomes
from meprop.lab.report.conv_figures import curve_figure, slug, width_figure
from meprop.lab.report.html import figure_html, table_html
from meprop.lab.report.sections import Section
from meprop.lab.report.tables import write_table
from meprop.lab.results.stats import SEEDS_NOTE

__all__ = ["section", "outcome_table", "ranking_table", "width_table", "verdict", "BAR"]

#: The bar the suite aims for: the target reached this many times sooner than dense.
BAR = 1.5
_INTRO = (
    "<p>Does meProp get a model to its accuracy sooner? Dense and each meProp arm train side by "
    "side in one process, from the same initial weights and on the same data order, in alternating "
    "blocks of steps (so they share the machine's noise), with the suite's fair allocator setting; "
    "each seed changes the initialisation and the data order for all arms alike. Dense uses the "
    "fastest torch implementation of its optimizer on the device (named in the table). Each arm's lr "
    "is tuned on its median time to the middle target (same grid for every arm). The clock counts "
    "training steps only. <b>Time-to-target speedup</b> = dense time to target / the arm's, a paired "
    "ratio per seed; it splits into the <b>step-time factor</b> (dense mean step time / the arm's) "
    "times the <b>steps factor</b> (dense steps / the arm's: below 1, meProp needs more steps). "
    "Targets are fixed before training. Method: docs/time_to_accuracy.md.</p>")


def verdict(stats: dict | None, seeds: int | None = None) -> str:
    """What a speedup's interval allows one to say; ``seeds``: how many seeds the arm ran (a seed
    where both arms missed the target has no ratio, so fewer ratios than seeds can be left)."""
    if not stats or stats.get("median") is None:
        return "no pairs"
    low, high = stats.get("low"), stats.get("high")
    # An infinite bound is a bound (dense missed the target on a seed: a ratio of infinity), not
    # a missing interval; None or NaN is (fewer than two ratios).
    if not all(isinstance(v, (int, float)) and not math.isnan(v) for v in (low, high)):
        ratios = stats.get("n", 1)
        if seeds is not None and seeds > ratios:
            return f"no interval (a ratio on {ratios} of {seeds} seeds: both arms missed on the others)"
        return "no interval (one seed)"
    if low <= 1.0 <= high:
        return "no difference shown"
    return "meProp sooner" if low > 1 else "dense sooner"


def outcome_table(records: list[dict]) -> pd.DataFrame:
    """One row per (study, arm); every target its own columns."""
    rows = []
    for summary in summarize(records):
        for position, arm in enumerate(summary.arms[summary.middle]):
            row = {"run": summary.title(), "arm": arm.arm, "lr won": arm.lr, "optimizer": arm.optimizer_impl}
            for index, target in enumerate(summary.targets):
                at = summary.arms[index][position]
                name = target.describe()
                row[f"{name}: reached"] = f"{at.reached} of {at.seeds}" + (f" ({at.diverged} diverged)"
                                                                          if at.diverged else "")
                row[f"{name}: median time s"] = interval_text(at.time)
                row[f"{name}: speedup"] = ratio_text(at.speedup) if at.method != "dense" else "reference"
            row["middle: step-time factor"] = ratio_text(arm.step_factor)
            row["middle: steps factor"] = ratio_text(arm.steps_factor)
            row["middle: verdict"] = "reference" if arm.method == "dense" else verdict(arm.speedup, arm.seeds)
            row["median best"] = None if arm.best is None else round(arm.best, 2)
            row["study"] = summary.study
            rows.append(row)
    return pd.DataFrame(rows)


def ranking_table(summaries) -> pd.DataFrame:
    """Per study, the meProp arms best first at the middle target (:func:`ranked`): speedup with
    its interval, seeds reached and censored, verdict, the split and what holds the arm back."""
    rows = []
    for summary in summaries:
        for place, arm in enumerate(ranked(summary), 1):
            rows.append({"run": summary.title(), "rank": place, "arm": arm.arm,
                         "target": summary.targets[summary.middle].describe(),
                         "speedup": ratio_text(arm.speedup), "verdict": verdict(arm.speedup, arm.seeds),
                         "reached": f"{arm.reached} of {arm.seeds}",
                         "censored": arm.seeds - arm.reached,
                         "step-time factor": ratio_text(arm.step_factor),
                         "steps factor": ratio_text(arm.steps_factor),
                         "held back by": held_back(arm) or "-"})
    return pd.DataFrame(rows)


def width_table(summaries) -> pd.DataFrame:
    """The width map's cells: per (h, batch, arm) the middle target's speedup and its split."""
    rows = []
    for summary in summaries:
        for arm in summary.arms[summary.middle][1:]:
            rows.append({"h": summary.settings.get("hidden"), "batch": summary.settings.get("batch"),
                         "arm": arm.arm, "reached": arm.reached_text(), "speedup": ratio_text(arm.speedup),
                         "step-time factor": ratio_text(arm.step_factor),
                         "steps factor": ratio_text(arm.steps_factor), "verdict": verdict(arm.speedup, arm.seeds)})
    return pd.DataFrame(rows).sort_values(["batch", "h", "arm"]) if rows else pd.DataFrame(rows)


def _card(summary) -> str:
    arms = summary.arms[summary.middle]
    dense, others = arms[0], [a for a in arms[1:] if a.method != "dense"]
    target = summary.targets[summary.middle].describe()
    base = f"dense: {dense.optimizer_impl or '?'}, lr {dense.lr if dense.lr is not None else 'default'}"
    if dense.method != "dense" or dense.status != "reached":
        big, small = "dense did not reach", f"{dense.reached_text()}; {base}"
    elif not others:
        big, small = "no meProp arm", base
    else:
        best = max(others, key=lambda a: (a.speedup or {}).get("median") or 0.0)
        speed = best.speedup or {}
        if best.status != "reached":
            big = "not reached"
            small = f"{best.arm}: {best.reached_text()} (censored counted as never); {base}"
        else:
            big = f"{ratio_text(speed)}x"
            small = f"{best.arm}: {verdict(speed, best.seeds)}; {best.reached_text()}; {base}"
    return (f'<div class="card"><div class="small">time to {html.escape(target)} · '
            f'{html.escape(summary.title())}</div><div class="big">{html.escape(big)}</div>'
            f'<div class="small">{html.escape(small)}</div></div>')


def _figures(records, summaries, out_dir: Path, embed_budget: int) -> tuple[list, list]:
    from meprop.lab.converge.study import studies_of

    grouped, drawn = studies_of(records), []
    for summary in summaries:
        runs = grouped[summary.study]
        rows = next(iter(runs.values()))
        name = f"converge-{slug(summary.study.split('/', 1)[-1])}"
        drawn.append(curve_figure(name, f"{summary.title()}, seed {rows[0].get('seed', '?')}", rows,
                                  outcomes(rows, summary.targets[summary.middle]), rows[0].get("metric") or
                                  "dev metric", out_dir))
    width = [s for s in summaries if s.preset == "mnist-width"]
    if width:
        # the middle target first, then the others (each cell's targets are fixed in its preset)
        others = [i for i in range(len(width[0].targets)) if i != width[0].middle]
        extra = (width_figure(f"where-it-pays-off-{slug(width[0].targets[i].describe())}", width, out_dir, i)
                 for i in others)
        drawn[:0] = [width_figure("where-it-pays-off", width, out_dir), *(fig for fig in extra if fig)]
    html_parts, files, spent = [], [], 0
    for fig in drawn:
        files += [fig.png, fig.svg]
        size = fig.png.stat().st_size
        html_parts.append(figure_html(fig.png, fig.svg, fig.title, fig.caption, out_dir,
                                      embed=spent + size <= embed_budget))
        spent += size
    return html_parts, files


def section(records: list[dict], out_dir: Path, embed_budget: int = 4 * 2**20) -> Section:
    """The "Does it pay off?" section from ``convergence`` records (any number of studies)."""
    summaries = summarize(records)
    if not summaries:
        return Section("pays-off", "Does it pay off?", _INTRO + '<p class="note">No time-to-accuracy results in '
                       "the inputs (<code>meprop converge --preset mnist-adam --quick</code> writes them; "
                       "<code>make report</code> runs the quick presets).</p>")
    out_dir = Path(out_dir)
    table = outcome_table(records)
    files = list(write_table(table, out_dir, "time_to_target").values())
    figures, drawn = _figures(records, summaries, out_dir, embed_budget)
    files += drawn
    ranking = ranking_table(summaries)
    ranking_part = ""
    if not ranking.empty:
        files += list(write_table(ranking, out_dir, "ranking").values())
        ranking_part = ("<h3>Ranking: which variant pays off most?</h3><p>Each study's meProp arms, best median "
                        "time-to-target speedup at the middle target first; censored seeds (target missed) "
                        "count as never. <b>Held back by</b>: for an arm slower than dense, the factor of the "
                        "split below 1 (the steps factor when the target was missed on most seeds).</p>"
                        + table_html(ranking, speedup_column=None))
    width = width_table([s for s in summaries if s.preset == "mnist-width"])
    width_part = ""
    if not width.empty:
        files += list(write_table(width, out_dir, "where_it_pays_off").values())
        width_part = ("<h3>Where does meProp pay off?</h3>" + table_html(width, speedup_column=None))
    body = (_INTRO + f'<div class="headline">{"".join(_card(s) for s in summaries)}</div>'
            + table_html(table.drop(columns=["study"]), speedup_column=None)
            + f'<p class="note">{SEEDS_NOTE} "never": censored (the target was not reached within the '
              f'budget); "inf": a ratio with no bound (meProp reached the target on a seed where dense '
              f'did not). The bar: the target {BAR}x sooner than dense; where the interval contains 1 '
              '"no difference shown".</p>' + ranking_part + width_part + "".join(figures))
    return Section("pays-off", "Does it pay off?", body, files)
