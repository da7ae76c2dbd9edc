"""Report tables from the bench frame: speedups, headline, break-even k, peak memory; CSV/Markdown files.

Follows the paper's quantities (Sun et al. 2017, Sections 4-5; ``docs/results_schema.md``):
**speedup** = dense median / meProp median from the same run, **ideal** = n / k,
**efficiency** = speedup / ideal, all defined in :mod:`meprop.lab.results.schema` and read
from the records by :func:`meprop.lab.report.frames.bench_frame`. The report never times
anything.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from meprop.lab.report.frames import ok_rows, workload_of
from meprop.lab.report.headline import HEADLINE_MEASUREMENTS, case_label
from meprop.lab.results.schema import ABOVE_IDEAL_NOTE, MEASUREMENT_TITLES, MEASUREMENTS
from meprop.lab.measurements import REGISTRY as MEASUREMENT_REGISTRY, TRAIN_STEP

__all__ = [
    "MEASUREMENTS",
    "MEASUREMENT_TITLES",
    "speedup_table",
    "headline_table",
    "step_phases_table",
    "HEADLINE_MEASUREMENTS",
    "break_even_table",
    "memory_table",
    "write_table",
]

_GROUP = ["machine", "device", "mode"]  # rows of different machines/devices/modes never mix


def speedup_table(frame: pd.DataFrame, measurement: str) -> pd.DataFrame:
    """The report's table for one measurement: one row per case, sorted; skipped cases kept."""
    rows = frame[frame["measurement"] == measurement]
    if rows.empty:
        return pd.DataFrame()
    cols = {
        "machine": "machine", "device": "device", "mode": "mode", "workload": "workload",
        "layers": "layers", "hidden": "hidden n", "batch": "batch", "k": "k", "k_ratio": "k/n",
        "dense_ms": "dense ms", "meprop_ms": "meProp ms", "spread_pct": "spread %",
        "n_samples": "samples", "speedup": "speedup", "speedup_low": "speedup low",
        "speedup_high": "speedup high", "ideal": "ideal n/k",
        "efficiency": "efficiency", "noisy": "noisy", "flag": "flag", "status": "status", "reason": "note",
    }
    table = rows.sort_values(["machine", "device", "mode", "workload", "hidden", "batch", "k"])
    above = table["above_ideal"].fillna(False).astype(bool).to_numpy()
    table = table[list(cols)].rename(columns=cols).reset_index(drop=True)
    table["note"] = [
        note if isinstance(note, str) and note else
        ("no dense baseline" if pd.isna(d) and status == "ok" else "")
        for note, d, status in zip(table["note"], table["dense ms"], table["status"])
    ]
    table["note"] = [f"{note}; {ABOVE_IDEAL_NOTE}" if flag and note else (ABOVE_IDEAL_NOTE if flag else note)
                     for note, flag in zip(table["note"], above)]
    if not any(workload_of(name).stacks_layers for name in table["workload"]):
        table = table.drop(columns=["layers"])
    ceiling = MEASUREMENT_REGISTRY[measurement].ceiling
    if ceiling == "none":  # n/k is no reference for the (unchanged) forward pass
        table = table.drop(columns=["ideal n/k", "efficiency"])
    if ceiling == "amdahl":  # the step's ceiling is Amdahl's, not n/k
        table = table.drop(columns=["ideal n/k", "efficiency"])
        table.insert(table.columns.get_loc("speedup") + 1, "Amdahl limit",
                     rows.sort_values(["machine", "device", "mode", "workload", "hidden", "batch", "k"])
                     ["amdahl_limit"].round(2).to_numpy())
        ordered = rows.sort_values(["machine", "device", "mode", "workload", "hidden", "batch", "k"])
        table.insert(table.columns.get_loc("mode") + 1, "meProp optimizer", ordered["optimizer"].to_numpy())
        table.insert(table.columns.get_loc("meProp optimizer") + 1, "Adam", ordered["adam"].to_numpy())
    if (table["status"] == "ok").all():
        table = table.drop(columns=["status"])
    if (table["note"] == "").all():
        table = table.drop(columns=["note"])
    return table


def step_phases_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Where each training step's time goes, both sides: forward (zero_grad, forward, loss),
    backward, optimizer (clip and step), in ms, with the Amdahl limit (a free meProp backward)."""
    ok = ok_rows(frame, TRAIN_STEP.name)
    phases = [f"{side}_{phase}_ms" for side in ("dense", "meprop") for phase in ("forward", "backward", "optimizer")]
    if ok.empty or ok[phases].isna().all().all():
        return pd.DataFrame()
    cols = {"machine": "machine", "device": "device", "workload": "workload", "hidden": "hidden n",
            "batch": "batch", "k": "k", "mode": "mode", "optimizer": "meProp optimizer", "adam": "Adam",
            **{name: name.replace("_ms", " ms").replace("_", " ").replace("meprop", "meProp")
               for name in phases},
            "speedup": "speedup", "amdahl_limit": "Amdahl limit"}
    table = ok.sort_values(["machine", "device", "workload", "hidden", "batch", "k", "mode"])
    table = table[list(cols)].rename(columns=cols).reset_index(drop=True)
    return table.round({name: 3 for name in table.columns if name.endswith(" ms")} | {"Amdahl limit": 2})


def headline_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The best *quotable* training-step, overall and linear-only backprop speedups per machine,
    device and mode: cells flagged noisy, above the ideal or with an interval containing 1.0
    never count (:func:`meprop.lab.results.stats.is_headline_worthy`); best by the interval's
    lower bound, the figure one can sign for. The cards quote representative cells
    (:func:`meprop.lab.report.headline.representative_table`); this is the table beside them."""
    out = []
    for keys, group in frame.groupby(_GROUP, sort=True):
        row = dict(zip(_GROUP, keys))
        for measurement, label, _ in HEADLINE_MEASUREMENTS:
            measured = ok_rows(group, measurement)
            ok = measured[measured["headline_ok"] == True]  # noqa: E712
            if ok.empty:
                row[f"best {label} speedup"] = np.nan
                row[f"{label} at"] = "no quotable cell" if not measured.empty else "not measured"
                row[f"{label} speedup low"] = row[f"{label} speedup high"] = np.nan
                continue
            best = ok.loc[ok["speedup_low"].idxmax()]
            row[f"best {label} speedup"] = best["speedup"]
            row[f"{label} speedup low"], row[f"{label} speedup high"] = best["speedup_low"], best["speedup_high"]
            row[f"{label} at"] = f"{case_label(best)}, {int(best['n_samples'])} samples" \
                if pd.notna(best["n_samples"]) else case_label(best)
        if any(isinstance(v, float) and np.isfinite(v) for v in row.values()):
            out.append(row)
    return pd.DataFrame(out)


def break_even_table(frame: pd.DataFrame, measurement: str = "linear_backward") -> pd.DataFrame:
    """The largest measured k/n at which meProp still beats dense, per hidden and batch.

    ``break-even k/n`` is the largest measured k ratio that is a win: its speedup's 95%
    interval lies wholly above 1 and the cell is not flagged noisy or above the ideal n/k
    (a broken dense baseline), the headline's rule
    (:func:`meprop.lab.results.stats.is_headline_worthy`); NaN when no measured k is such a
    win. ``first slower k/n`` is the smallest measured ratio above it that is no such win
    (NaN when every larger ratio is one), so the true crossing lies between the two columns.
    """
    ok = ok_rows(frame, measurement)
    ok = ok[ok["k_ratio"].notna()]  # a foreign record without k has no place on the k/n axis
    out = []
    for keys, group in ok.groupby([*_GROUP, "workload", "hidden", "batch"], sort=True):
        group = group.sort_values("k_ratio")
        win = group["headline_ok"] == True  # noqa: E712  (the whole interval above 1, no flag)
        faster = group[win]
        be = faster["k_ratio"].max() if not faster.empty else np.nan
        slower = group[~win & (group["k_ratio"] > (be if np.isfinite(be) else -1))]
        row = dict(zip([*_GROUP, "workload", "hidden n", "batch"], keys))
        row.update({
            "break-even k/n": be,
            "first slower k/n": slower["k_ratio"].min() if not slower.empty else np.nan,
            "measured k/n": ", ".join(f"{x:.3g}" for x in group["k_ratio"]),
            **{f"speedup at break-even{suffix}": faster.loc[faster["k_ratio"].idxmax(), column]
               if not faster.empty else np.nan
               for suffix, column in (("", "speedup"), (" low", "speedup_low"), (" high", "speedup_high"))},
        })
        out.append(row)
    return pd.DataFrame(out)


def memory_table(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Peak memory per case where a side grew by more than 0 bytes; and how many cases read 0 on both.

    Columns: the case fields that tell rows apart (``meProp optimizer`` and ``Adam`` where a
    training step was measured, ``layers`` for models), dense MiB, meProp MiB, their ratio and
    the kind of measurement. A case whose two sides both read 0 bytes measured nothing (the
    allocator reused memory it already held): it is counted, not listed.
    """
    rows = frame[frame["peak_dense_mb"].notna() | frame["peak_meprop_mb"].notna()]
    nothing = (rows["peak_dense_mb"].fillna(0) <= 0) & (rows["peak_meprop_mb"].fillna(0) <= 0)
    rows = rows[~nothing]
    if rows.empty:
        return pd.DataFrame(), int(nothing.sum())
    columns = ["machine", "device", "mode", "measurement", "workload", "layers", "hidden", "batch", "k",
               "optimizer", "adam", "peak_dense_mb", "peak_meprop_mb", "peak_kind"]
    table = rows.sort_values(["machine", "device", "mode", "measurement", "workload", "hidden", "batch", "k",
                              "optimizer", "adam"])[columns]
    table = table.rename(columns={"hidden": "hidden n", "peak_dense_mb": "dense MiB", "optimizer": "meProp optimizer",
                                  "adam": "Adam", "peak_meprop_mb": "meProp MiB", "peak_kind": "kind"})
    if not (rows["measurement"] == TRAIN_STEP.name).any():  # the optimizer runs only in a training step
        table = table.drop(columns=["meProp optimizer", "Adam"])
    if not any(workload_of(name).stacks_layers for name in rows["workload"]):
        table = table.drop(columns=["layers"])
    ratio = table["meProp MiB"] / table["dense MiB"].where(table["dense MiB"] > 0)  # 0 bytes: no ratio
    table.insert(len(table.columns) - 1, "meProp / dense", ratio)
    return table.reset_index(drop=True), int(nothing.sum())


#: Longer tables are written as CSV only.
MARKDOWN_ROWS = 2000


def write_table(table: pd.DataFrame, out_dir: Path, name: str) -> dict[str, Path]:
    """Write ``table`` as ``<name>.csv`` and (up to :data:`MARKDOWN_ROWS` rows) ``<name>.md`` under ``out_dir/tables``."""
    folder = Path(out_dir) / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = folder / f"{name}.csv", folder / f"{name}.md"
    table.to_csv(csv_path, index=False)
    if len(table) > MARKDOWN_ROWS:  # a Markdown table this long is read by nobody: CSV only
        md_path.unlink(missing_ok=True)
        return {"csv": csv_path}
    md_path.write_text(table.to_markdown(index=False, floatfmt=".4g") + "\n", encoding="utf-8")
    return {"csv": csv_path, "md": md_path}
