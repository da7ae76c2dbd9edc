"""The headline's figures: one representative cell per workload, never the luckiest of a grid.

The best speedup of a grid is the cell that drew the most favourable noise, so the
headline quotes, per (machine, device, mode, measurement, workload, Adam implementation),
the measured cell **nearest to the workload's typical shape** (its registry entry's
:attr:`~meprop.lab.workloads.Workload.typical_shape`: the paper's setting where it has one;
a user's model or an unknown name gets the default), with its 95% interval and sample
count. A cell that is flagged (noisy, above the ideal n/k, or with an interval that
contains 1.0 or is unknown; :func:`meprop.lab.results.stats.is_headline_worthy`) is shown
as *not quotable*, with the reason, never as a figure. Beside it, the best *quotable* cell of the same group, ranked by
its interval's lower bound (the speedup one can sign for), not by its median.

Nearest: the smallest sum of |log| ratios of hidden size, batch and k/n to the typical
shape's (so one row per group, whatever the grid); training steps use the meProp side's
lazy optimizer when the group has it (what a user's loop runs by default).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from meprop.lab.report.frames import ok_rows, workload_of
from meprop.lab.measurements import HEADLINE_KINDS

__all__ = ["HEADLINE_MEASUREMENTS", "representative_table", "case_label"]

#: The headline's measurements, most telling first: what a user's loop sees, then the whole
#: backward, then the linear layers alone (the kernel-level figure).
#: (measurement, short label for table columns, title for cards).
HEADLINE_MEASUREMENTS = tuple((kind.name, *kind.headline) for kind in HEADLINE_KINDS)

_GROUP = ["machine", "device", "mode", "workload", "adam"]


def case_label(row: pd.Series) -> str:
    """``mlp n=500 x2, batch 10, k=20 (4.00%)``: the cell's shape."""
    shape = f"{row['workload']} n={row['hidden']}"
    if workload_of(row["workload"]).stacks_layers and pd.notna(row.get("layers")) and row.get("layers"):
        shape += f" x{int(row['layers'])}"
    return f"{shape}, batch {row['batch']}, k={row['k']} ({row['k_ratio']:.2%})"


def _distance(group: pd.DataFrame, shape: dict) -> pd.Series:
    out = pd.Series(0.0, index=group.index)
    for name in ("hidden", "batch", "k_ratio"):
        target = shape.get(name)
        values = pd.to_numeric(group[name], errors="coerce").astype(float)
        if target is None or not values.gt(0).all():
            continue
        out += np.abs(np.log(values / target))
    return out


def _nearest(group: pd.DataFrame, shape: dict) -> pd.Series:
    lazy = group[group["optimizer"] == "lazy"]
    pool = lazy if not lazy.empty else group
    distance = _distance(pool, shape)
    return pool.loc[distance.sort_values(kind="stable").index[0]]


def representative_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per group and headline measurement: the representative cell and the best quotable one.

    Columns: ``machine, device, mode, measurement, title, workload, adam, typical, at, speedup,
    speedup low, speedup high, samples, flag, quotable, best quotable speedup, best quotable
    low, best quotable high, best quotable at``.
    """
    out = []
    for measurement, _, title in HEADLINE_MEASUREMENTS:
        ok = ok_rows(frame, measurement) if not frame.empty else frame
        if ok.empty:
            continue
        for keys, group in ok.groupby(_GROUP, sort=True, dropna=False):
            shape = workload_of(keys[3]).typical_shape  # unknown names: a user model's default
            rep = _nearest(group, shape)
            quotable = group[group["headline_ok"] == True]  # noqa: E712
            best = quotable.loc[quotable["speedup_low"].idxmax()] if not quotable.empty else None
            out.append({
                **dict(zip(_GROUP, keys)), "measurement": measurement, "title": title,
                "typical": shape["source"], "at": case_label(rep), "speedup": rep["speedup"],
                "speedup low": rep["speedup_low"], "speedup high": rep["speedup_high"],
                "samples": rep["n_samples"], "flag": rep["flag"], "quotable": bool(rep["headline_ok"]),
                "best quotable speedup": np.nan if best is None else best["speedup"],
                "best quotable low": np.nan if best is None else best["speedup_low"],
                "best quotable high": np.nan if best is None else best["speedup_high"],
                "best quotable at": "" if best is None else case_label(best),
            })
    return pd.DataFrame(out)
