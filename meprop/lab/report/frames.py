"""Schema records -> pandas DataFrames, done once: :func:`bench_frame`, :func:`env_frame`, :func:`train_frame`.

:func:`bench_frame` is the one table of ``bench`` records everything downstream reads
(the report's tables, figures, targets and paper sections, and :func:`results_frame`
for a script that wants the raw numbers of some results files). Derived numbers are
taken from the records; a record that lacks them (pytest-benchmark/asv pairs written
before a field existed) gets them from :mod:`meprop.lab.results.schema`, which defines them.

Columns of :func:`bench_frame` (one row per ``bench`` record):
``machine, run_id, workload, measurement, hidden, in_features, layers, classes, k, k_ratio,
batch, device, dtype, mode, threads, status, reason, dense_ms, dense_iqr_ms, meprop_ms,
meprop_iqr_ms, n_samples, spread_pct, speedup, speedup_low, speedup_high, ci_method,
ideal, efficiency, noisy, flag, headline_ok, wall_s,
peak_dense_mb, peak_meprop_mb, peak_kind, key, source``, the raw timing statistics
``dense_median_s ... meprop_mean_s`` (seconds) and bytes ``peak_dense_bytes``,
``peak_meprop_bytes``, and the run's ``cpu_model, git_commit, timestamp, profile,
torch_version``.
"""

from __future__ import annotations

import os
from typing import Iterable

import numpy as np
import pandas as pd

from meprop.lab.results import schema
from meprop.lab.results.stats import is_headline_worthy, speedup_interval, straddles_one
from meprop.lab.results.store import ResultsError, load_records, results_paths
from meprop.lab.workloads import REGISTRY, Workload
from meprop.lab.measurements import REGISTRY as MEASUREMENT_REGISTRY

__all__ = ["workload_of", "bench_frame", "ok_rows", "flag_of", "env_frame", "train_frame", "results_frame", "envs_frame",
           "nominal_k_ratio"]

_MB = 1024 * 1024
_ENV_COLUMNS = ("cpu_model", "git_commit", "timestamp", "profile", "torch_version")
_RAW = tuple(f"{side}_{stat}" for side in ("dense", "meprop") for stat in schema.STAT_FIELDS)
_COLUMNS = ("machine", "run_id", *schema.CASE_FIELDS, "status", "reason", "dense_ms", "dense_iqr_ms",
            "meprop_ms", "meprop_iqr_ms", "n_samples", "spread_pct", "speedup", "speedup_low", "speedup_high",
            "ci_method", "ideal", "efficiency", "noisy", "above_ideal", "flag", "headline_ok", "amdahl_limit", *(f"{side}_{phase}_ms" for side in ("dense", "meprop")
                                                       for phase in ("forward", "backward", "optimizer")),
            "meprop_optimizer", "wall_s", "peak_dense_mb", "peak_meprop_mb", "peak_kind", "key", "source", *_RAW,
            "peak_dense_bytes", "peak_meprop_bytes", *_ENV_COLUMNS)



def _judged_against_ideal(name) -> bool:
    """A record's speedup has n / k as ceiling (so above it flags a broken baseline); an unknown
    measurement is judged against it too."""
    kind = MEASUREMENT_REGISTRY.get(name)
    return kind is None or kind.judged_against_ideal

def workload_of(name: str) -> Workload:
    """The workload of a frame's ``workload`` value (a user's model is named by its module:factory)."""
    return REGISTRY.get(name) or REGISTRY["model"]


def _number(value) -> float:
    return np.nan if value is None else float(value)


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _phase_columns(phases) -> dict:
    """``{side}_{phase}_ms`` of a training step's probed phase split (NaN where absent)."""
    out = {}
    for side in ("dense", "meprop"):
        split = (phases or {}).get(side) if isinstance(phases, dict) else None
        for phase in ("forward", "backward", "optimizer"):
            value = split.get(f"{phase}_s") if isinstance(split, dict) else None
            out[f"{side}_{phase}_ms"] = float(value) * 1e3 if _is_real(value) else np.nan
    return out


def _envs(records: Iterable[dict]) -> dict[str, dict]:
    """run_id -> environment of the ``env`` records."""
    return {r["run_id"]: (r.get("env") or {}) for r in records if r.get("type") == "env"}


def _bench_row(r: dict, envs: dict[str, dict]) -> dict:
    case, env = r.get("case") or {}, envs.get(r.get("run_id"))
    dense, meprop = r.get("dense") or {}, r.get("meprop") or {}
    machine = str(env.get("machine") or "unknown") if env is not None else f"unknown (run {r.get('run_id')})"
    row = {"machine": machine, "run_id": r.get("run_id"), **{f: case.get(f) for f in schema.CASE_FIELDS}}
    for name, default in schema.CASE_FIELD_DEFAULTS.items():  # older records lack the field
        if row[name] is None:
            row[name] = default
    if row.get("workload") in REGISTRY:  # a user's model is named by its module:factory
        row["workload"] = REGISTRY[row["workload"]].display_name(case)
    for side, stats in (("dense", dense), ("meprop", meprop)):
        row.update({f"{side}_{f}": stats.get(f) for f in schema.STAT_FIELDS})
    speedup = r.get("speedup")
    if speedup is None:
        speedup = schema.speedup_of(dense.get("median_s"), meprop.get("median_s"))
    ideal = r.get("ideal")
    if ideal is None:
        ideal = schema.ideal_of(case.get("hidden"), case.get("k"))
    efficiency = r.get("efficiency")
    if efficiency is None:
        efficiency = schema.efficiency_of(speedup, ideal)
    ci = r.get("speedup_ci") if isinstance(r.get("speedup_ci"), dict) else None
    if ci is None and speedup is not None:  # older and foreign records: the same interval, computed here
        ci = speedup_interval(dense, meprop)
    n = [s.get("n_samples") for s in (dense, meprop) if s.get("n_samples") is not None]
    spreads = [s for s in (schema.rel_spread(dense), schema.rel_spread(meprop)) if s is not None]
    peak = r.get("peak_memory") or {}
    row.update({
        "status": r.get("status"), "reason": r.get("reason"),
        "dense_ms": _number(dense.get("median_s")) * 1e3, "dense_iqr_ms": _number(dense.get("iqr_s")) * 1e3,
        "meprop_ms": _number(meprop.get("median_s")) * 1e3, "meprop_iqr_ms": _number(meprop.get("iqr_s")) * 1e3,
        "n_samples": min(n) if n else np.nan, "spread_pct": max(spreads) * 100 if spreads else np.nan,
        "speedup": _number(speedup), "ideal": _number(ideal), "efficiency": _number(efficiency),
        "speedup_low": _number((ci or {}).get("low")), "speedup_high": _number((ci or {}).get("high")),
        "ci_method": (ci or {}).get("method"),
        "noisy": r.get("noisy"), "wall_s": r.get("wall_s"),
        "above_ideal": schema.above_ideal_of(_number(speedup), _number(ideal))
        if _judged_against_ideal(case.get("measurement")) else False,
        "amdahl_limit": _number(r.get("amdahl_limit")) if _is_real(r.get("amdahl_limit")) else np.nan,
        **_phase_columns(r.get("phases")),
        "meprop_optimizer": (r.get("optimizers") or {}).get("meprop") if isinstance(r.get("optimizers"), dict) else None,
        "peak_dense_bytes": peak.get("dense_bytes"), "peak_meprop_bytes": peak.get("meprop_bytes"),
        "peak_dense_mb": _number(peak.get("dense_bytes")) / _MB,
        "peak_meprop_mb": _number(peak.get("meprop_bytes")) / _MB,
        "peak_kind": peak.get("kind"), "key": r.get("key"), "source": r.get("_source"),
        **{name: (env or {}).get(name) for name in _ENV_COLUMNS},
    })
    row["flag"] = flag_of(row)
    row["headline_ok"] = is_headline_worthy(noisy=row["noisy"], above_ideal=row["above_ideal"],
                                                  low=row["speedup_low"], high=row["speedup_high"])
    return row


def flag_of(row: dict) -> str:
    """Why a cell is no headline figure ("" when it could be one): noisy, above the ideal,
    its interval containing 1.0 (no win), or no interval known."""
    if row.get("speedup") is None or not np.isfinite(row.get("speedup", np.nan)):
        return ""
    reasons = []
    if row.get("noisy") is True or row.get("noisy") is np.True_:
        reasons.append("noisy")
    if row.get("above_ideal"):
        reasons.append("above ideal")
    straddles = straddles_one(row.get("speedup_low"), row.get("speedup_high"))
    if straddles is None:
        reasons.append("no interval")
    elif straddles:
        reasons.append("interval contains 1")
    return ", ".join(reasons)


def bench_frame(records: Iterable[dict]) -> pd.DataFrame:
    """One row per ``bench`` record (columns: see the module docstring); times in ms, spread in %."""
    records = list(records)
    envs = _envs(records)
    rows = [_bench_row(r, envs) for r in records if r.get("type") == "bench"]
    frame = pd.DataFrame(rows, columns=list(_COLUMNS))
    if frame.empty:
        return frame
    if frame["k_ratio"].isna().any():
        frame["k_ratio"] = frame["k_ratio"].fillna(frame["k"] / frame["hidden"])
    frame["mode"] = frame["mode"].fillna("dense only")
    frame["device"] = frame["device"].fillna("unknown device")  # a foreign file may not say
    return frame



def ok_rows(frame: pd.DataFrame, measurement: str | None = None) -> pd.DataFrame:
    """The rows of a bench frame with a speedup (status ok), of ``measurement`` if given."""
    ok = frame[(frame["status"] == "ok") & frame["speedup"].notna()]
    if measurement is not None:
        ok = ok[ok["measurement"] == measurement]
    return ok

def results_frame(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> pd.DataFrame:
    """:func:`bench_frame` of our results files (or run directories), read strictly.

    Every file must be a valid results file (:func:`meprop.lab.results.store.read_records`
    raises :class:`ResultsError` otherwise), and a ``bench`` record whose run has no
    ``env`` record before it in the same file is refused.
    """
    records = []
    for path in results_paths(paths):
        runs: set[str] = set()
        for record in load_records(path):
            if record["type"] == "env":
                runs.add(record["run_id"])
            elif record["type"] == "bench" and record["run_id"] not in runs:
                raise ResultsError(f"{path}: bench record {record['key']!r} belongs to run "
                                   f"{record['run_id']!r}, which has no env record before it")
            records.append(record)
    return bench_frame(records)


def envs_frame(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> pd.DataFrame:
    """One row per run of our results files: ``run_id``, ``source`` and the environment fields."""
    rows = [{"run_id": r["run_id"], "source": r["_source"], **r["env"]}
            for r in load_records(paths) if r["type"] == "env"]
    return pd.DataFrame(rows)


def env_frame(records: Iterable[dict]) -> pd.DataFrame:
    """For the page: one column per run (``machine / run_id``), one row per environment field."""
    columns = {}
    for r in records:
        if r.get("type") != "env":
            continue
        env = dict(r.get("env") or {})
        gpus = env.pop("gpus", None)
        if gpus:
            env["gpus"] = "; ".join(
                f"{g.get('name')} ({(g.get('memory_bytes') or 0) / 2**30:.0f} GiB, driver {g.get('driver')})"
                for g in gpus if isinstance(g, dict))
        elif gpus is not None:
            env["gpus"] = "none"
        if isinstance(env.get("ram_bytes"), (int, float)) and env["ram_bytes"]:
            env["ram_bytes"] = f"{env['ram_bytes'] / 2**30:.1f} GiB"
        if isinstance(env.get("argv"), list):
            env["argv"] = " ".join(map(str, env["argv"]))
        label = f"{env.get('machine') or 'unknown'} / {r.get('run_id')}"
        columns[label] = {k: ("" if v is None else str(v)) for k, v in env.items()}
    return pd.DataFrame(columns)


def train_frame(records: Iterable[dict]) -> pd.DataFrame:
    """``train`` records as a DataFrame (config flattened), for the accuracy section."""
    records = list(records)
    rows = [r for r in records if r.get("type") == "train"]
    if not rows:
        return pd.DataFrame()
    frame = pd.json_normalize([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    envs = _envs(records)
    frame.insert(0, "machine", [str((envs.get(r.get("run_id")) or {}).get("machine") or "unknown")
                                for r in rows])
    return frame


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
