"""The paper's published numbers, as data: its timing tables (1, 2, 7, 8) and accuracies (Tables 1, 3, 4, 6).

Sun, Ren, Ma, Wang, "meProp: Sparsified Back Propagation for Accelerated Deep Learning
with Reduced Overfitting", ICML 2017 (numbers copied from ``../shared/PAPER.md``):

- Table 7 (GPU GTX 1080, synthetic matrix multiplication, h=8192, batch 1024, unified):
  linear-only backprop ms per k.
- Table 8 (GPU, MNIST MLP h=8192, unified): overall backprop speedup per k.
- Table 1 (CPU, hidden 500, AdaGrad/Adam): backprop seconds of whole training runs,
  their speedup, iterations and scores; Table 2 (CPU, Adam): overall forward / backward /
  total seconds.
- Tables 3, 4, 6 and the authors' release log: test accuracy of further settings.

Written once, here: the paper section (:mod:`meprop.lab.report.sections.paper`) and the
accuracy section (:mod:`meprop.lab.report.sections.accuracy`) both read them.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["TABLE7", "TABLE8", "TABLE1", "TABLE2", "PAPER_ACCURACY", "PAPER_TIMES"]

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


def _table1(task: str, optimizer: str) -> tuple[int, float, int, float]:
    """(dense iterations, dense score, meProp iterations, meProp score) of one Table 1 row."""
    row = TABLE1[(TABLE1["task"] == task) & (TABLE1["optimizer"] == optimizer)].iloc[0]
    return (int(row["dense iterations"]), float(row["dense score"]),
            int(row["meProp iterations"]), float(row["meProp score"]))


def _table2(task: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """((dense forward, backward, total), (meProp forward, backward, total)) seconds of one Table 2 row."""
    row = TABLE2[TABLE2["task"] == task].iloc[0]
    return (tuple(int(row[f"dense {c} s"]) for c in ("forward", "backward", "total")),
            tuple(int(row[f"meProp {c} s"]) for c in ("forward", "backward", "total")))


def _accuracy() -> dict:
    out = {}
    for preset, task, optimizer, k in (("mnist-adam", "MNIST MLP", "Adam", 20),
                                       ("mnist-adagrad", "MNIST MLP", "AdaGrad", 10),
                                       ("pos-adam", "POS LSTM", "Adam", 5)):
        dense_it, dense_score, meprop_it, meprop_score = _table1(task, optimizer)
        source = f"Table 1 ({optimizer})"
        out[(preset, "dense")] = (dense_it, dense_score, source)
        out[(preset, f"meProp k={k}")] = (meprop_it, meprop_score, source)
    dense_it, dense_score, meprop_it, meprop_score = _table1("MNIST MLP", "Adam")
    out[("mnist-table3", "meProp k=20 (h=500)")] = (None, meprop_score, "Table 3")
    out[("mnist-table3", "dense h=20")] = (None, 95.77, "Table 3")
    out[("mnist-dropout", "dense")] = (None, 98.09, "Table 4 (dropout 0.2)")
    out[("mnist-dropout", "meProp k=25")] = (None, 98.32, "Table 4 (dropout 0.2)")
    no_dropout = "Table 1 (Adam; paper without dropout)"
    out[("mnist-adam-release", "dense")] = (dense_it, dense_score, no_dropout)
    out[("mnist-adam-release", "meProp k=20")] = (meprop_it, meprop_score, no_dropout)
    out[("mnist-release-unified", "dense")] = (None, 97.97, "Table 6 (GPU, unified, batch 50)")
    out[("mnist-release-unified", "meProp unified k=30")] = (None, 98.08, "Table 6 (GPU, unified, batch 50)")
    # not in the paper: the log the authors ship in their PyTorch release (h=512, batch 32, dropout 0.1)
    out[("mnist-release", "dense")] = (19, 98.00, "authors' PyTorch release log")
    out[("mnist-release", "meProp k=30")] = (17, 98.28, "authors' PyTorch release log")
    return out


def _times() -> dict:
    out = {}
    for preset, task, k in (("mnist-adam", "MNIST", 20), ("pos-adam", "POS", 5)):
        dense, meprop = _table2(task)
        out[(preset, "dense")], out[(preset, f"meProp k={k}")] = dense, meprop
    return out


#: (preset, run label) -> (paper's iterations, paper's test score, source).
PAPER_ACCURACY: dict[tuple[str, str], tuple] = _accuracy()
#: (preset, run label) -> the paper's Table 2 seconds (overall forward, overall backward, total).
PAPER_TIMES: dict[tuple[str, str], tuple[int, int, int]] = _times()
