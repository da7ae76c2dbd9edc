"""Results records -> pandas tables: speedups, headline, break-even k, peak memory.

Follows the paper's quantities (Sun et al. 2017, Sections 4-5; ``docs/results_schema.md``):
**speedup** = dense median / meProp median from the same run, **ideal** = n / k,
**efficiency** = speedup / ideal. The report never times anything; every number here is
read from the records (a speedup is recomputed from the medians only when a record lacks
one, e.g. for pytest-benchmark/asv inputs, which :mod:`meprop.report.loaders` pairs).

Column names of :func:`bench_frame` (one row per ``bench`` record):
``machine, run_id, workload, measurement, hidden, in_features, layers, k, k_ratio, batch,
device, dtype, mode, threads, status, reason, dense_ms, dense_iqr_ms, meprop_ms,
meprop_iqr_ms, n_samples, spread_pct, speedup, ideal, efficiency, noisy,
peak_dense_mb, peak_meprop_mb, peak_kind, key, source``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

__all__ = [
    "MEASUREMENTS",
    "MEASUREMENT_TITLES",
    "bench_frame",
    "env_frame",
    "train_frame",
    "speedup_table",
    "headline_table",
    "break_even_table",
    "memory_table",
    "write_table",
    "nominal_k_ratio",
]

MEASUREMENTS = ("forward", "linear_backward", "overall_backward", "train_step")
MEASUREMENT_TITLES = {
    "forward": "Forward",
    "linear_backward": "Linear-only backprop",
    "overall_backward": "Overall backprop",
    "train_step": "Training step",
}
_MB = 1024 * 1024
_CASE = ("workload", "measurement", "hidden", "in_features", "layers", "k", "k_ratio",
         "batch", "device", "dtype", "mode", "threads")
_GROUP = ["machine", "device", "mode"]  # rows of different machines/devices/modes never mix


def _side(record: dict, side: str, field: str) -> float:
    value = (record.get(side) or {}).get(field)
    return np.nan if value is None else float(value)


def _machines(records: Iterable[dict]) -> dict[str, str]:
    """run_id -> machine label from the ``env`` records."""
    return {r["run_id"]: str((r.get("env") or {}).get("machine") or "unknown")
            for r in records if r.get("type") == "env"}


def bench_frame(records: Iterable[dict]) -> pd.DataFrame:
    """One row per ``bench`` record, times in ms, spread in % of the median."""
    records = list(records)
    machines = _machines(records)
    rows = []
    for r in records:
        if r.get("type") != "bench":
            continue
        case = r.get("case") or {}
        row = {"machine": machines.get(r.get("run_id"), f"unknown (run {r.get('run_id')})"),
               "run_id": r.get("run_id")}
        row.update({f: case.get(f) for f in _CASE})
        dense_med, meprop_med = _side(r, "dense", "median_s"), _side(r, "meprop", "median_s")
        dense_iqr, meprop_iqr = _side(r, "dense", "iqr_s"), _side(r, "meprop", "iqr_s")
        speedup = r.get("speedup")
        if speedup is None and np.isfinite(dense_med) and np.isfinite(meprop_med) and meprop_med > 0:
            speedup = dense_med / meprop_med
        ideal = r.get("ideal")
        if ideal is None and case.get("hidden") and case.get("k"):
            ideal = case["hidden"] / case["k"]
        efficiency = r.get("efficiency")
        if efficiency is None and speedup is not None and ideal:
            efficiency = speedup / ideal
        n = [(r.get(s) or {}).get("n_samples") for s in ("dense", "meprop")]
        n = [x for x in n if x is not None]
        peak = r.get("peak_memory") or {}
        row.update({
            "status": r.get("status"), "reason": r.get("reason"),
            "dense_ms": dense_med * 1e3, "dense_iqr_ms": dense_iqr * 1e3,
            "meprop_ms": meprop_med * 1e3, "meprop_iqr_ms": meprop_iqr * 1e3,
            "n_samples": min(n) if n else np.nan,
            "spread_pct": np.nanmax([dense_iqr / dense_med, meprop_iqr / meprop_med]) * 100
            if np.isfinite([dense_iqr, meprop_iqr]).any() else np.nan,
            "speedup": np.nan if speedup is None else float(speedup),
            "ideal": np.nan if ideal is None else float(ideal),
            "efficiency": np.nan if efficiency is None else float(efficiency),
            "noisy": r.get("noisy"),
            "peak_dense_mb": np.nan if peak.get("dense_bytes") is None else peak["dense_bytes"] / _MB,
            "peak_meprop_mb": np.nan if peak.get("meprop_bytes") is None else peak["meprop_bytes"] / _MB,
            "peak_kind": peak.get("kind"),
            "key": r.get("key"), "source": r.get("_source"),
        })
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(_columns()))
    if frame.empty:
        return frame
    if frame["k_ratio"].isna().any():
        filled = frame["k"] / frame["hidden"]
        frame["k_ratio"] = frame["k_ratio"].fillna(filled)
    frame["mode"] = frame["mode"].fillna("dense only")
    return frame


def _columns():
    return ("machine", "run_id", *_CASE, "status", "reason", "dense_ms", "dense_iqr_ms",
            "meprop_ms", "meprop_iqr_ms", "n_samples", "spread_pct", "speedup", "ideal",
            "efficiency", "noisy", "peak_dense_mb", "peak_meprop_mb", "peak_kind", "key", "source")


def nominal_k_ratio(ratios: pd.Series, tolerance: float = 0.1) -> pd.Series:
    """Group k/n values that are one requested ratio rounded to different k (0.00977, 0.01).

    ``k = round(ratio * n)`` makes k/n differ slightly between hidden sizes; values within
    ``tolerance`` (relative) of the smallest value of their cluster share one label: the
    shortest 2-significant-digit spelling among them (``"0.01"``, ``"0.1"``).
    """
    values = sorted(ratios.dropna().unique())
    label, cluster = {}, []

    def close():
        name = min((f"{v:.2g}" for v in cluster), key=len)
        label.update({v: name for v in cluster})

    for value in values:
        if cluster and value > cluster[0] * (1 + tolerance):
            close()
            cluster = []
        cluster.append(value)
    if cluster:
        close()
    return ratios.map(label)


def env_frame(records: Iterable[dict]) -> pd.DataFrame:
    """One column per run (``machine / run_id``), one row per environment field."""
    columns = {}
    for r in records:
        if r.get("type") != "env":
            continue
        env = dict(r.get("env") or {})
        gpus = env.pop("gpus", None)
        if gpus:
            env["gpus"] = "; ".join(
                f"{g.get('name')} ({(g.get('memory_bytes') or 0) / 2**30:.0f} GiB, driver {g.get('driver')})"
                for g in gpus)
        elif gpus is not None:
            env["gpus"] = "none"
        if env.get("ram_bytes"):
            env["ram_bytes"] = f"{env['ram_bytes'] / 2**30:.1f} GiB"
        if isinstance(env.get("argv"), list):
            env["argv"] = " ".join(map(str, env["argv"]))
        label = f"{env.get('machine') or 'unknown'} / {r.get('run_id')}"
        columns[label] = {k: ("" if v is None else str(v)) for k, v in env.items()}
    return pd.DataFrame(columns)


def train_frame(records: Iterable[dict]) -> pd.DataFrame:
    """``train`` records as a DataFrame (config flattened), for the accuracy section."""
    rows = [r for r in records if r.get("type") == "train"]
    if not rows:
        return pd.DataFrame()
    frame = pd.json_normalize([{k: v for k, v in r.items() if k != "_source"} for r in rows])
    machines = _machines(records)
    frame.insert(0, "machine", [machines.get(r.get("run_id"), "unknown") for r in rows])
    return frame


def _ok(frame: pd.DataFrame, measurement: str | None = None) -> pd.DataFrame:
    ok = frame[(frame["status"] == "ok") & frame["speedup"].notna()]
    if measurement is not None:
        ok = ok[ok["measurement"] == measurement]
    return ok


def speedup_table(frame: pd.DataFrame, measurement: str) -> pd.DataFrame:
    """The report's table for one measurement: one row per case, sorted; skipped cases kept."""
    rows = frame[frame["measurement"] == measurement]
    if rows.empty:
        return pd.DataFrame()
    cols = {
        "machine": "machine", "device": "device", "mode": "mode", "workload": "workload",
        "layers": "layers", "hidden": "hidden n", "batch": "batch", "k": "k", "k_ratio": "k/n",
        "dense_ms": "dense ms", "meprop_ms": "meProp ms", "spread_pct": "spread %",
        "n_samples": "samples", "speedup": "speedup", "ideal": "ideal n/k",
        "efficiency": "efficiency", "noisy": "noisy", "status": "status", "reason": "note",
    }
    table = rows.sort_values(["machine", "device", "mode", "workload", "hidden", "batch", "k"])
    table = table[list(cols)].rename(columns=cols).reset_index(drop=True)
    table["note"] = [
        note if isinstance(note, str) and note else
        ("no dense baseline" if pd.isna(d) and status == "ok" else "")
        for note, d, status in zip(table["note"], table["dense ms"], table["status"])
    ]
    if (table["workload"] == "linear").all():
        table = table.drop(columns=["layers"])
    if measurement == "forward":  # n/k is no reference for the (unchanged) forward pass
        table = table.drop(columns=["ideal n/k", "efficiency"])
    if (table["status"] == "ok").all():
        table = table.drop(columns=["status"])
    if (table["note"] == "").all():
        table = table.drop(columns=["note"])
    return table


def headline_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Best linear-only and overall backprop speedups per machine, device and mode."""
    out = []
    for keys, group in frame.groupby(_GROUP, sort=True):
        row = dict(zip(_GROUP, keys))
        for measurement, label in (("linear_backward", "linear-only"), ("overall_backward", "overall")):
            ok = _ok(group, measurement)
            if ok.empty:
                row[f"best {label} speedup"], row[f"{label} at"] = np.nan, "not measured"
                continue
            best = ok.loc[ok["speedup"].idxmax()]
            row[f"best {label} speedup"] = best["speedup"]
            row[f"{label} at"] = _case_label(best)
        if any(isinstance(v, float) and np.isfinite(v) for v in row.values()):
            out.append(row)
    return pd.DataFrame(out)


def _case_label(row: pd.Series) -> str:
    shape = f"{row['workload']} n={row['hidden']}"
    if row["workload"] == "mlp" and row.get("layers"):
        shape += f" x{row['layers']}"
    return f"{shape}, batch {row['batch']}, k={row['k']} ({row['k_ratio']:.2%})"


def break_even_table(frame: pd.DataFrame, measurement: str = "linear_backward") -> pd.DataFrame:
    """The largest measured k/n at which meProp still beats dense, per hidden and batch.

    ``break-even k/n`` is the largest measured k ratio with speedup > 1 (NaN when meProp
    is slower at every measured k); ``first slower k/n`` is the smallest measured ratio
    above it where meProp is not faster (NaN when it is faster at every larger ratio), so
    the true crossing lies between the two columns.
    """
    ok = _ok(frame, measurement)
    out = []
    for keys, group in ok.groupby([*_GROUP, "workload", "hidden", "batch"], sort=True):
        group = group.sort_values("k_ratio")
        faster = group[group["speedup"] > 1]
        be = faster["k_ratio"].max() if not faster.empty else np.nan
        slower = group[(group["speedup"] <= 1) & (group["k_ratio"] > (be if np.isfinite(be) else -1))]
        row = dict(zip([*_GROUP, "workload", "hidden n", "batch"], keys))
        row.update({
            "break-even k/n": be,
            "first slower k/n": slower["k_ratio"].min() if not slower.empty else np.nan,
            "measured k/n": ", ".join(f"{x:.3g}" for x in group["k_ratio"]),
            "speedup at break-even": faster.loc[faster["k_ratio"].idxmax(), "speedup"] if not faster.empty else np.nan,
        })
        out.append(row)
    return pd.DataFrame(out)


def memory_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Peak memory per case where the records carry it (dense MiB, meProp MiB, ratio)."""
    rows = frame[frame["peak_dense_mb"].notna() | frame["peak_meprop_mb"].notna()]
    if rows.empty:
        return pd.DataFrame()
    table = rows.sort_values(["machine", "device", "mode", "measurement", "hidden", "batch", "k"])[
        ["machine", "device", "mode", "measurement", "workload", "hidden", "batch", "k",
         "peak_dense_mb", "peak_meprop_mb", "peak_kind"]
    ].rename(columns={"hidden": "hidden n", "peak_dense_mb": "dense MiB",
                      "peak_meprop_mb": "meProp MiB", "peak_kind": "kind"})
    ratio = table["meProp MiB"] / table["dense MiB"].where(table["dense MiB"] > 0)  # 0 bytes: no ratio
    table.insert(len(table.columns) - 1, "meProp / dense", ratio)
    return table.reset_index(drop=True)


def write_table(table: pd.DataFrame, out_dir: Path, name: str) -> dict[str, Path]:
    """Write ``table`` as ``<name>.csv`` and ``<name>.md`` under ``out_dir/tables``."""
    folder = Path(out_dir) / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = folder / f"{name}.csv", folder / f"{name}.md"
    table.to_csv(csv_path, index=False)
    md_path.write_text(table.to_markdown(index=False, floatfmt=".4g") + "\n", encoding="utf-8")
    return {"csv": csv_path, "md": md_path}
