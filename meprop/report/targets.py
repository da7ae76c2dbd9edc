"""The performance targets of issue 5 as data, matched against measured rows.

Targets are for this project's 2-core CPU, float32, ratios of medians from one run with
dense and meProp interleaved (see ``docs/performance.md`` when present). Each target names
a case (workload, measurement, mode, hidden, batch, k or k ratio, MLP shape) and the
speedup it must reach; :func:`match_targets` finds the rows of a :func:`bench_frame
<meprop.report.tables.bench_frame>` that are that case and reports target vs achieved,
per machine and device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["Target", "TARGETS", "match_targets", "targets_display"]


@dataclass(frozen=True)
class Target:
    """One row of the target table.

    ``kind``: ``"speedup"`` (achieved = the matching row's speedup, met when >= ``minimum``),
    ``"break_even"`` (achieved = the smallest break-even k ratio over the matching
    (hidden, batch) groups, met when >= ``minimum``), ``"forward"`` (achieved = the worst
    forward speedup, met when >= ``minimum``) or ``"review"`` (not a timing: shown, not matched).
    """

    label: str
    minimum: float | None
    kind: str = "speedup"
    measurement: str = "linear_backward"
    workload: str = "linear"
    mode: str | None = None
    hidden: int | None = None
    min_hidden: int | None = None
    batch: int | None = None
    min_batch: int | None = None
    k: int | None = None
    k_ratio: float | None = None
    in_features: int | None = None
    layers: int | None = None
    note: str = ""

    def selects(self, frame: pd.DataFrame) -> pd.Series:
        """Boolean mask of the rows of ``frame`` that are this target's case."""
        mask = (frame["measurement"] == self.measurement) & (frame["workload"] == self.workload)
        for name in ("mode", "hidden", "batch", "in_features", "layers"):
            value = getattr(self, name)
            if value is not None:
                mask &= frame[name] == value
        if self.min_hidden is not None:
            mask &= frame["hidden"] >= self.min_hidden
        if self.min_batch is not None:
            mask &= frame["batch"] >= self.min_batch
        if self.k is not None:
            mask &= frame["k"] == self.k
        if self.k_ratio is not None:  # k = round(ratio * n), as resolve_k does
            expected_k = (frame["hidden"] * self.k_ratio).round().clip(lower=1)
            mask &= (frame["k"] == expected_k) | np.isclose(frame["k_ratio"], self.k_ratio, rtol=0.02)
        return mask


#: Issue 5's table (linear-only backprop: out = in = n; MLP rows: overall backprop).
TARGETS: tuple[Target, ...] = (
    Target("unified, n=8192, batch 1024, k=128 (1.6%)", 30, mode="unified", hidden=8192, batch=1024, k=128,
           note="paper on GPU: 14.5x; ideal 64x"),
    Target("unified, n=8192, batch 1024, k=512 (6.25%)", 11, mode="unified", hidden=8192, batch=1024, k=512,
           note="paper on GPU: 4.4x; ideal 16x"),
    Target("unified, n=4096, batch 1024, k=1%", 30, mode="unified", hidden=4096, batch=1024, k_ratio=0.01),
    Target("unified, n=4096, batch 64, k=10%", 6, mode="unified", hidden=4096, batch=64, k_ratio=0.10),
    Target("per-example, n=4096, batch 1, k=1%", 20, mode="per_example", hidden=4096, batch=1, k_ratio=0.01),
    Target("per-example, n=4096, batch 64, k=1%", 6, mode="per_example", hidden=4096, batch=64, k_ratio=0.01),
    Target("per-example break-even k ratio, n >= 1024, batch >= 64", 0.10, kind="break_even",
           mode="per_example", min_hidden=1024, min_batch=64),
    Target("masked-dense reference never on a fast path", None, kind="review",
           note="a property of the code, checked by review and tests, not by timing"),
    Target("MLP 784-4096-4096-10 overall backprop, k=1%, batch 1024, unified", 20,
           measurement="overall_backward", workload="mlp", mode="unified", hidden=4096, in_features=784,
           layers=2, batch=1024, k_ratio=0.01),
    Target("MLP 784-4096-4096-10 overall backprop, k=1%, batch 1024, per-example", 8,
           measurement="overall_backward", workload="mlp", mode="per_example", hidden=4096,
           in_features=784, layers=2, batch=1024, k_ratio=0.01),
    Target("MLP 784-500-500-10 overall backprop, k=20, batch 1024, unified", 3,
           measurement="overall_backward", workload="mlp", mode="unified", hidden=500, in_features=784,
           layers=2, batch=1024, k=20),
    Target("forward with meProp layers within 5% of dense (worst case)", 1 / 1.05, kind="forward",
           measurement="forward", workload="any", note="speedup >= 0.952 on every forward row"),
)


def match_targets(frame: pd.DataFrame, targets: tuple[Target, ...] = TARGETS) -> pd.DataFrame:
    """Target vs achieved for every machine and device in ``frame``.

    Columns: ``machine, device, target, kind, required, achieved, met, at, noisy, note``
    (``required``/``achieved``: a speedup, or a k ratio for ``kind == "break_even"``).
    ``met`` is ``"yes"``, ``"NO"``, ``"not measured"`` or ``"n/a"`` (review items).
    """
    ok = frame[(frame["status"] == "ok") & frame["speedup"].notna()] if not frame.empty else frame
    rows = []
    groups = list(ok.groupby(["machine", "device"], sort=True)) if not ok.empty else [(("-", "-"), ok)]
    for (machine, device), group in groups:
        for target in targets:
            row = {"machine": machine, "device": device, "target": target.label, "kind": target.kind,
                   "required": target.minimum, "achieved": np.nan, "met": "not measured",
                   "at": "", "noisy": "", "note": target.note}
            if target.kind == "review":
                row["met"] = "n/a"
                rows.append(row)
                continue
            if target.kind == "forward":
                sel = group[group["measurement"] == "forward"]
            else:
                sel = group[target.selects(group)]
            if not sel.empty:
                _achieve(row, target, sel)
            rows.append(row)
    return pd.DataFrame(rows)


def _achieve(row: dict, target: Target, sel: pd.DataFrame) -> None:
    if target.kind == "break_even":
        from meprop.report.tables import break_even_table

        be = break_even_table(sel, target.measurement)
        if be.empty:
            return
        worst = be.loc[be["break-even k/n"].fillna(0).idxmin()]
        row["achieved"] = 0.0 if pd.isna(worst["break-even k/n"]) else worst["break-even k/n"]
        row["at"] = f"worst of {len(be)}: n={worst['hidden n']}, batch {worst['batch']}"
        if pd.notna(worst["first slower k/n"]):
            row["at"] += f" (slower at k/n={worst['first slower k/n']:.3g})"
    else:
        pick = sel.loc[sel["speedup"].idxmin()] if target.kind == "forward" else _latest(sel)
        row["achieved"] = pick["speedup"]
        row["at"] = f"n={pick['hidden']}, batch {pick['batch']}, k={pick['k']}"
        if pd.notna(pick["threads"]):
            row["at"] += f", {int(pick['threads'])} threads"
        if target.kind == "forward":
            row["at"] = f"worst of {len(sel)}: {pick['workload']} {row['at']}, {pick['mode']}"
        row["noisy"] = "yes" if pick["noisy"] == True else ""  # noqa: E712 (None: unknown)
    row["met"] = "yes" if row["achieved"] >= target.minimum - 1e-12 else "NO"


def _latest(sel: pd.DataFrame) -> pd.Series:
    """Several rows of one case (re-runs): the last one read is the latest run."""
    return sel.iloc[-1]


def targets_display(matched: pd.DataFrame) -> pd.DataFrame:
    """``match_targets`` output for the page: required/achieved as text with their unit."""
    def text(value, kind, bound):
        if pd.isna(value):
            return "—"
        number = f"{value:.1%} k/n" if kind == "break_even" else f"{value:.2f}x"
        return f"≥ {number}" if bound else number

    out = matched.copy()
    out["required"] = [text(v, k, True) for v, k in zip(matched["required"], matched["kind"])]
    out["achieved"] = [text(v, k, False) for v, k in zip(matched["achieved"], matched["kind"])]
    return out.drop(columns=["kind"])
