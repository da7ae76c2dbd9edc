"""The paper's timing numbers as data, and side-by-side tables against our rows.

Sun, Ren, Ma, Wang, "meProp: Sparsified Back Propagation for Accelerated Deep Learning
with Reduced Overfitting", ICML 2017 (numbers copied from ``../shared/PAPER.md``):

- Table 7 (GPU GTX 1080, synthetic matrix multiplication, h=8192, batch 1024, unified):
  linear-only backprop ms per k.
- Table 8 (GPU, MNIST MLP h=8192, unified): overall backprop speedup per k.
- Table 1 (CPU, hidden 500, AdaGrad/Adam): backprop seconds of whole training runs and
  their speedup; Table 2 (CPU, Adam): overall forward / backward / total seconds.

Tables 1 and 2 are whole training runs on tasks (POS LSTM, parsing, MNIST), so they are
shown for reference and matched only by shape (hidden 500, the paper's k and batch).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["TABLE7", "TABLE8", "TABLE1", "TABLE2", "paper_tables", "paper_comparison"]

#: Table 7: k -> meProp backprop ms; dense 308.00 ms (h=8192, batch 1024, GPU, unified).
TABLE7 = {
    "hidden": 8192, "batch": 1024, "dense_ms": 308.00, "device": "GTX 1080 (GPU)",
    "meprop_ms": {8: 8.37, 16: 9.16, 32: 11.20, 64: 14.38, 128: 21.28, 256: 38.57, 512: 69.95},
    "speedup": {8: 36.8, 16: 33.6, 32: 27.5, 64: 21.4, 128: 14.5, 256: 8.0, 512: 4.4},
}
#: Table 8: k -> overall backprop speedup; dense 17,696.2 ms (MNIST MLP h=8192, GPU).
TABLE8 = {
    "hidden": 8192, "dense_ms": 17696.2, "device": "GTX 1080 (GPU)",
    "speedup": {8: 11.8, 16: 11.5, 32: 10.7, 64: 9.7, 128: 8.0, 256: 5.6, 512: 3.6},
}
#: Table 1 (CPU): (task, optimizer, k, batch, dense backprop s, meProp backprop s, speedup,
#: dense iterations, meProp iterations, dense score, meProp score).
TABLE1 = pd.DataFrame(
    [
        ("POS LSTM", "AdaGrad", 5, 1, 17534.4, 253.2, 69.2, 4, 4, 96.93, 97.25),
        ("Parsing MLP", "AdaGrad", 20, 10000, 8899.7, 492.3, 18.1, 11, 8, 88.92, 88.95),
        ("MNIST MLP", "AdaGrad", 10, 10, 171.0, 4.1, 41.7, 8, 16, 97.52, 98.00),
        ("POS LSTM", "Adam", 5, 1, 16167.3, 247.2, 65.4, 2, 5, 97.07, 97.12),
        ("Parsing MLP", "Adam", 20, 10000, 9077.7, 488.7, 18.6, 14, 6, 89.84, 90.01),
        ("MNIST MLP", "Adam", 20, 10, 169.5, 7.9, 21.4, 17, 15, 97.82, 98.01),
    ],
    columns=["task", "optimizer", "k", "batch", "dense backprop s", "meProp backprop s",
             "speedup", "dense iterations", "meProp iterations", "dense score", "meProp score"],
)
#: Table 2 (CPU, Adam): overall forward / backward / total seconds, dense vs meProp.
TABLE2 = pd.DataFrame(
    [
        ("POS", 7334, 16522, 23856, 7362, 540, 7903, 30.5),
        ("Parsing", 3906, 9114, 13020, 4002, 513, 4516, 17.7),
        ("MNIST", 69, 171, 240, 68, 9, 77, 18.4),
    ],
    columns=["task", "dense forward s", "dense backward s", "dense total s",
             "meProp forward s", "meProp backward s", "meProp total s", "backward speedup"],
)


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
    t7 = ok[(ok["measurement"] == "linear_backward") & (ok["workload"] == "linear")
            & (ok["hidden"] == TABLE7["hidden"]) & (ok["batch"] == TABLE7["batch"])
            & ok["k"].isin(list(TABLE7["speedup"]))]
    for _, row in t7.iterrows():
        parts.append(_pair(row, "Table 7 (GPU, linear-only)", TABLE7["dense_ms"],
                           TABLE7["meprop_ms"][row["k"]], TABLE7["speedup"][row["k"]]))
    t8 = ok[(ok["measurement"] == "overall_backward") & (ok["workload"] == "mlp")
            & (ok["hidden"] == TABLE8["hidden"]) & ok["k"].isin(list(TABLE8["speedup"]))]
    for _, row in t8.iterrows():
        parts.append(_pair(row, "Table 8 (GPU, overall MLP)", TABLE8["dense_ms"], np.nan,
                           TABLE8["speedup"][row["k"]]))
    mnist = TABLE1[TABLE1["task"] == "MNIST MLP"]
    t1 = ok[(ok["measurement"] == "linear_backward") & (ok["hidden"] == 500)
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
        "paper dense ms": paper_dense, "paper meProp ms": paper_meprop, "paper speedup": paper_speedup,
        "ours / paper": row["speedup"] / paper_speedup,
    }
