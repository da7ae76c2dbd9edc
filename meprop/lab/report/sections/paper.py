"""The paper side by side: our rows that have the paper's shapes, next to its numbers.

The paper's numbers are data in :mod:`meprop.lab.report.reference` (Tables 7 and 8: GPU;
Table 1: whole CPU training runs, matched only by shape: hidden 500, the paper's k and
batch). :func:`section` returns the page's "Paper side by side" section.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from meprop.lab.report.frames import workload_of
from meprop.lab.report.html import table_html
from meprop.lab.report.reference import TABLE1, TABLE2, TABLE7, TABLE8
from meprop.lab.report.sections import Section
from meprop.lab.report.tables import write_table
from meprop.lab.measurements import LINEAR_BACKWARD, OVERALL_BACKWARD

__all__ = ["paper_tables", "paper_comparison", "section"]


def paper_tables() -> dict[str, pd.DataFrame]:
    """The paper's Tables 7, 8, 1 and 2 as display tables."""
    t7 = pd.DataFrame({"k": list(TABLE7["meprop_ms"]),
                       "meProp ms": list(TABLE7["meprop_ms"].values()),
                       "speedup": list(TABLE7["speedup"].values())})
    t7.insert(1, "dense ms", TABLE7["dense_ms"])
    t8 = pd.DataFrame({"k": list(TABLE8["speedup"]), "speedup": list(TABLE8["speedup"].values())})
    return {"table7": t7, "table8": t8, "table1": TABLE1, "table2": TABLE2}


def paper_comparison(frame: pd.DataFrame) -> pd.DataFrame:
    """Our rows that have the paper's shapes, with the paper's figures beside them.

    Table 7: linear-only backprop, single layer, hidden 8192, batch 1024, k in 8..512.
    Table 8: overall backprop of an MLP with hidden 8192, k in 8..512 (any batch; the
    paper's MNIST batch is not stated for this table).
    Table 1 (MNIST rows): linear-only backprop at hidden 500, batch 10, k 10 and 20.
    """
    if frame.empty:
        return pd.DataFrame()
    ok = frame[frame["status"] == "ok"]
    parts = []
    reproduces = ok["workload"].map(lambda name: workload_of(name).paper_table)
    t7 = ok[(ok["measurement"] == LINEAR_BACKWARD.name) & (reproduces == "Table 7")
            & (ok["hidden"] == TABLE7["hidden"]) & (ok["batch"] == TABLE7["batch"])
            & ok["k"].isin(list(TABLE7["speedup"]))]
    for _, row in t7.iterrows():
        parts.append(_pair(row, "Table 7 (GPU, linear-only)", TABLE7["dense_ms"],
                           TABLE7["meprop_ms"][row["k"]], TABLE7["speedup"][row["k"]]))
    t8 = ok[(ok["measurement"] == OVERALL_BACKWARD.name) & (reproduces == "Table 8")
            & (ok["hidden"] == TABLE8["hidden"]) & ok["k"].isin(list(TABLE8["speedup"]))]
    for _, row in t8.iterrows():
        parts.append(_pair(row, "Table 8 (GPU, overall MLP)", TABLE8["dense_ms"], np.nan,
                           TABLE8["speedup"][row["k"]]))
    mnist = TABLE1[TABLE1["task"] == "MNIST MLP"]
    t1 = ok[(ok["measurement"] == LINEAR_BACKWARD.name) & (ok["hidden"] == 500)
            & (ok["batch"] == 10) & ok["k"].isin(mnist["k"])]
    for _, row in t1.iterrows():
        paper = mnist[mnist["k"] == row["k"]].iloc[0]
        parts.append(_pair(row, f"Table 1 (CPU, MNIST, {paper['optimizer']}, whole run)",
                           np.nan, np.nan, paper["speedup"]))
    return pd.DataFrame(parts)


def _pair(row: pd.Series, table: str, paper_dense: float, paper_meprop: float, paper_speedup: float) -> dict:
    return {
        "paper table": table, "machine": row["machine"], "device": row["device"], "mode": row["mode"],
        "hidden n": row["hidden"], "batch": row["batch"], "k": row["k"],
        "our dense ms": row["dense_ms"], "our meProp ms": row["meprop_ms"], "our speedup": row["speedup"],
        "our speedup low": row["speedup_low"], "our speedup high": row["speedup_high"], "our flag": row["flag"],
        "paper dense ms": paper_dense, "paper meProp ms": paper_meprop, "paper speedup": paper_speedup,
        "ours / paper": row["speedup"] / paper_speedup,
    }


def section(frame: pd.DataFrame, out_dir: Path) -> Section:
    """Our rows beside the paper's (when any has its shapes), then the paper's tables for reference."""
    comparison = paper_comparison(frame)
    files: list[Path] = []
    parts = []
    if comparison.empty:
        parts.append('<p class="note">These results contain none of the paper\'s measured shapes '
                     "(Table 7: linear-only, n=8192, batch 1024, k 8–512; Table 8: MLP n=8192; "
                     "Table 1: n=500, batch 10, k 10/20); <code>meprop bench --profile paper</code> "
                     "measures them. The paper's figures are listed below for reference.</p>")
    else:
        files += write_table(comparison, out_dir, "paper_comparison").values()
        parts.append("<p>The paper's speedups were measured on a GTX 1080 GPU (Tables 7, 8) or for whole "
                     "CPU training runs (Table 1); ours on the device named in each row.</p>"
                     + table_html(comparison, speedup_column=None))
    tables = paper_tables()
    parts.append("<h3>The paper's own tables</h3>"
                 "<h3>Table 7 (GPU, h=8192, batch 1024, linear-only backprop)</h3>" + table_html(tables["table7"])
                 + "<h3>Table 8 (GPU, MNIST MLP h=8192, overall backprop)</h3>" + table_html(tables["table8"])
                 + "<h3>Table 1 (CPU, hidden 500)</h3>" + table_html(tables["table1"])
                 + "<h3>Table 2 (CPU, Adam, overall)</h3>" + table_html(tables["table2"], speedup_column=None))
    return Section("paper", "Paper side by side", "\n".join(parts), files)
