"""The "Training step across torch optimizers" section: the step a user gets with the optimizer they keep.

Rows are the training-step records whose case names a torch optimizer on both sides
(``optimizer="torch:<name>:<impl>"``, the ``optimizers`` profile), beside meProp's lazy Adam
against dense Adam measured with them. Every such record is a row, whatever its outcome: an
optimizer meProp cannot make fast shows as a speedup below 1, and a case that failed or was
skipped shows its reason. Three ratios per row, all dense median / meProp median:

- ``vs dense, same optimizer``: the record's own speedup (dense measured in the same run with
  the same optimizer and implementation), with its 95% interval;
- ``vs fastest dense, same optimizer``: against the fastest dense implementation of the same
  algorithm in the group (Adam's for meProp's lazy Adam);
- ``vs fastest dense``: against the fastest dense step of any optimizer in the group.

A group is one machine, device, workload, width, batch, k, selection mode, dtype and thread
count. The report never times anything.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from meprop.lab.measurements import TRAIN_STEP
from meprop.lab.report.sections import Section
from meprop.lab.report.sections.bench import long_table_html
from meprop.lab.report.tables import write_table
from meprop.lab.plan.optimizers import torch_optimizer

__all__ = ["optimizer_step_table", "section"]

_GROUP = ["machine", "device", "workload", "hidden", "batch", "k", "mode", "dtype", "threads"]


def _arm(optimizer: str, adam: str) -> tuple[str, str, str, str]:
    """(algorithm family, the row's optimizer name, implementation, the dense side's optimizer)
    of a case's optimizer fields."""
    spec = torch_optimizer(optimizer)
    if spec is None:
        return "adam", f"meprop.optim.Adam({optimizer}) vs torch Adam", adam, f"Adam {adam}"
    cls, kwargs, name, impl = spec
    label = cls + (" momentum" if kwargs.get("momentum") else "")
    return name, label, impl, f"{label} {impl}"


def optimizer_step_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per training-step case of a group holding a torch optimizer arm; empty without one."""
    steps = frame[frame["measurement"] == TRAIN_STEP.name] if not frame.empty else frame
    if steps.empty or not steps["optimizer"].astype(str).str.startswith("torch:").any():
        return pd.DataFrame()
    out = []
    for keys, group in steps.groupby(_GROUP, sort=True, dropna=False):
        if not group["optimizer"].astype(str).str.startswith("torch:").any():
            continue
        arms = [_arm(str(o), str(a)) for o, a in zip(group["optimizer"], group["adam"])]
        dense = group["dense_ms"].to_numpy(dtype=float)
        fastest = int(np.nanargmin(dense)) if np.isfinite(dense).any() else None
        for i, (_, row) in enumerate(group.iterrows()):
            family = [j for j, arm in enumerate(arms) if arm[0] == arms[i][0] and np.isfinite(dense[j])]
            same = min(family, key=lambda j: dense[j]) if family else None
            meprop_ms = row["meprop_ms"]
            out.append({
                **dict(zip(["machine", "device", "workload", "hidden n", "batch", "k", "mode", "dtype", "threads"],
                           keys)),
                "optimizer": arms[i][1], "implementation": arms[i][2],
                "dense ms": row["dense_ms"], "meProp ms": meprop_ms,
                "vs dense, same optimizer": row["speedup"], "low": row["speedup_low"], "high": row["speedup_high"],
                "vs fastest dense, same optimizer": dense[same] / meprop_ms if same is not None else np.nan,
                "fastest dense of it": arms[same][2] if same is not None else "",
                "vs fastest dense": dense[fastest] / meprop_ms if fastest is not None else np.nan,
                "fastest dense": arms[fastest][3] if fastest is not None else "",
                "flag": row.get("flag") if isinstance(row.get("flag"), str) else "",
                "status": row["status"], "note": row["reason"] if isinstance(row["reason"], str) else "",
            })
    return pd.DataFrame(out)


def section(frame: pd.DataFrame, out_dir: Path) -> Section:
    """The table (all rows, colour: slower than dense with the same optimizer), or a note."""
    title = "Training step across torch optimizers"
    table = optimizer_step_table(frame)
    if table.empty:
        return Section("optimizers", title, '<p class="note">No training step with a torch optimizer on both '
                       "sides was measured (<code>meprop bench --profile optimizers</code>).</p>")
    written = write_table(table, out_dir, "train_step_optimizers")
    slower = table[pd.to_numeric(table["vs dense, same optimizer"], errors="coerce") < 1]
    body = ("<p>The training step (zero_grad, forward, loss, backward, clip_grad_norm_, step) of a converted "
            "model with the torch optimizer its user keeps, on both sides, beside meProp's lazy Adam against "
            "dense Adam. Ratios are dense median / meProp median: against dense with the same optimizer "
            "(measured interleaved in the same run, 95% interval), against the fastest dense implementation "
            "of the same optimizer, and against the fastest dense step of any optimizer in the group. "
            f"{len(slower)} of {len(table)} rows are slower than dense with the same optimizer (red).</p>"
            + long_table_html(table, written, out_dir, speedup_column="vs dense, same optimizer"))
    return Section("optimizers", title, body, list(written.values()))
