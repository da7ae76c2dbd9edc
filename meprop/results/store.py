"""The results store: JSON-lines records (schema ``meprop.results/1``) and their loader.

Follows docs/results_schema.md. A run appends one ``env`` record, then one ``bench``
record per case x measurement, each written and flushed (and fsynced) as soon as it
is complete, so an interrupted run keeps everything it finished. ``--resume`` reads
the keys already present and skips them; a resumed run is a new run (new ``run_id``,
its own ``env`` record) appended to the same file. Nothing is ever overwritten.

:func:`load_results` reads one or more files (or run directories) from any number of
machines into one pandas DataFrame, one row per ``bench`` record, with the run's
environment columns joined on; it refuses corrupt or foreign files with an error that
names the file and the line. A final line cut short by an interrupted write (no
trailing newline, not valid JSON) is ignored with a warning.
"""

from __future__ import annotations

import json
import os
import secrets
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

__all__ = [
    "SCHEMA",
    "RESULTS_FILENAME",
    "ResultsFormatError",
    "new_run_id",
    "bench_record",
    "env_record",
    "ResultsWriter",
    "read_records",
    "load_records",
    "load_results",
    "load_envs",
    "results_path",
]

SCHEMA = "meprop.results/1"
_MAJOR = "1"  # readers accept meprop.results/1 and /1.x
RESULTS_FILENAME = "results.jsonl"
_TYPES = ("env", "bench", "train")


class ResultsFormatError(ValueError):
    """A results file that is corrupt, foreign or of an unsupported schema version."""


def new_run_id() -> str:
    """``20261121T051200Z-ab12cd``: UTC time and 6 random hex digits."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


def results_path(path: str | os.PathLike) -> Path:
    """``path`` itself if it is a file, ``path/results.jsonl`` if it is a directory."""
    path = Path(path)
    return path / RESULTS_FILENAME if path.is_dir() else path


def env_record(run_id: str, env: dict) -> dict:
    return {"schema": SCHEMA, "type": "env", "run_id": run_id, "env": env}


def bench_record(
    run_id: str,
    case,
    *,
    dense=None,
    meprop=None,
    status: str = "ok",
    reason: str | None = None,
    peak_memory: dict | None = None,
    wall_s: float | None = None,
) -> dict:
    """A ``bench`` record for ``case`` (a resolved :class:`~meprop.bench.cases.Case`).

    ``dense`` / ``meprop`` are :class:`~meprop.bench.timer.Measurement` or None
    (skipped cases). ``wall_s``: wall time the case took in all (build, warm-up, probes).
    """
    if status not in ("ok", "skipped"):
        raise ValueError(f"status must be 'ok' or 'skipped', got {status!r}")
    speedup = efficiency = None
    if dense is not None and meprop is not None and meprop.median > 0:
        speedup = dense.median / meprop.median
        efficiency = speedup / case.ideal
    return {
        "schema": SCHEMA,
        "type": "bench",
        "run_id": run_id,
        "key": case.key,
        "case": case.to_dict(),
        "status": status,
        "reason": reason,
        "dense": None if dense is None else dense.to_dict(),
        "meprop": None if meprop is None else meprop.to_dict(),
        "speedup": speedup,
        "ideal": case.ideal,
        "efficiency": efficiency,
        "noisy": bool((dense is not None and dense.noisy) or (meprop is not None and meprop.noisy)),
        "peak_memory": peak_memory,
        "wall_s": wall_s,
    }


class ResultsWriter:
    """Appends records to one JSON-lines file, flushing each one.

    ``resume=False`` refuses an existing non-empty file (never lose earlier results);
    ``resume=True`` appends to it and exposes the keys already there as ``done``.
    The parent directory is created; an unwritable location raises ``ValueError``
    naming it.
    """

    def __init__(self, path: str | os.PathLike, *, resume: bool = False):
        self.path = Path(path)
        self.done: set[str] = set()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(
                f"cannot create the output folder {str(self.path.parent)!r}: {error.strerror}"
            ) from None
        exists = self.path.exists() and self.path.stat().st_size > 0
        if exists and not resume:
            raise FileExistsError(
                f"{self.path} already holds results; pass --resume to add to it "
                f"(finished cases are skipped) or choose another output folder"
            )
        if exists:
            records, good_bytes = _read(self.path, tolerate_truncated_tail=True)
            self.done = {r["key"] for r in records if r["type"] == "bench"}
            if good_bytes < self.path.stat().st_size:  # drop a line cut short by a crash
                with open(self.path, "r+b") as fh:
                    fh.truncate(good_bytes)
        try:
            self._fh = open(self.path, "a", encoding="utf-8")
        except OSError as error:
            raise ValueError(
                f"cannot write results to {str(self.path)!r}: {error.strerror}"
            ) from None

    def write(self, record: dict) -> None:
        line = json.dumps(record, allow_nan=False, separators=(",", ":"))
        self._fh.write(line + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        if record.get("type") == "bench":
            self.done.add(record["key"])

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "ResultsWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _read(path: Path, *, tolerate_truncated_tail: bool) -> tuple[list[dict], int]:
    """Parse and validate every line; returns the records and the byte length that parsed."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ResultsFormatError(f"{path}: cannot read results file: {error.strerror}") from None
    records: list[dict] = []
    offset = 0
    lines = data.split(b"\n")
    for lineno, raw in enumerate(lines, start=1):
        is_last = lineno == len(lines)
        if not raw.strip():
            offset += len(raw) + (0 if is_last else 1)
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            if is_last and tolerate_truncated_tail:  # no newline after it: cut short
                warnings.warn(f"{path}:{lineno}: ignoring an incomplete last line ({error})")
                break
            raise ResultsFormatError(
                f"{path}:{lineno}: not a JSON object on this line ({error}); "
                f"is this a meprop results file (JSON lines, schema {SCHEMA!r})?"
            ) from None
        _validate(record, path, lineno)
        records.append(record)
        offset += len(raw) + (0 if is_last else 1)
    return records, offset


def _validate(record: object, path: Path, lineno: int) -> None:
    where = f"{path}:{lineno}"
    if not isinstance(record, dict) or "schema" not in record:
        raise ResultsFormatError(
            f"{where}: not a meprop results record (no 'schema' field); expected {SCHEMA!r}"
        )
    schema = record["schema"]
    if not isinstance(schema, str) or not schema.startswith("meprop.results/"):
        raise ResultsFormatError(f"{where}: foreign schema {schema!r}; expected {SCHEMA!r}")
    if schema.split("/", 1)[1].split(".")[0] != _MAJOR:
        raise ResultsFormatError(
            f"{where}: unsupported schema version {schema!r}; this meprop reads {SCHEMA!r}"
        )
    kind = record.get("type")
    if kind not in _TYPES:
        raise ResultsFormatError(f"{where}: unknown record type {kind!r}; expected one of {_TYPES}")
    if not isinstance(record.get("run_id"), str):
        raise ResultsFormatError(f"{where}: record has no 'run_id' string")
    required = {"env": ("env",), "bench": ("key", "case", "status"), "train": ()}[kind]
    missing = [name for name in required if name not in record]
    if missing:
        raise ResultsFormatError(f"{where}: {kind} record lacks field(s) {missing}")


def read_records(path: str | os.PathLike) -> list[dict]:
    """All records of one results file (or run directory), validated."""
    return _read(results_path(path), tolerate_truncated_tail=True)[0]


def _paths(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    resolved = [results_path(p) for p in paths]
    if not resolved:
        raise ValueError("paths must name at least one results file or run directory, got none")
    for p in resolved:
        if not p.exists():
            raise FileNotFoundError(f"results file not found: {p}")
    return resolved


def load_records(paths) -> list[dict]:
    """The records of several files, each tagged with its ``source`` path."""
    out = []
    for path in _paths(paths):
        for record in read_records(path):
            out.append({**record, "source": str(path)})
    return out


def load_envs(paths):
    """One row per run: ``run_id``, ``source`` and the environment fields."""
    import pandas as pd

    rows = [
        {"run_id": r["run_id"], "source": r["source"], **r["env"]}
        for r in load_records(paths) if r["type"] == "env"
    ]
    return pd.DataFrame(rows)


_STAT_FIELDS = ("median_s", "iqr_s", "n_samples", "min_s", "mean_s")


def load_results(paths):
    """One row per ``bench`` record of all ``paths``, with its run's environment.

    Columns: ``run_id``, ``source``, ``key``, ``status``, ``reason``, the case fields
    (``workload`` ... ``threads``), ``dense_median_s`` ... ``meprop_mean_s``,
    ``speedup``, ``ideal``, ``efficiency``, ``noisy``, ``peak_dense_bytes``,
    ``peak_meprop_bytes``, ``peak_kind``, and ``machine``, ``cpu_model``,
    ``git_commit``, ``timestamp``, ``profile``, ``torch_version`` of the run.
    A bench record whose run has no ``env`` record in the same file is refused.
    """
    import pandas as pd

    rows = []
    for path in _paths(paths):
        envs: dict[str, dict] = {}
        for lineno, record in enumerate(read_records(path), start=1):
            if record["type"] == "env":
                envs[record["run_id"]] = record["env"]
            elif record["type"] == "bench":
                env = envs.get(record["run_id"])
                if env is None:
                    raise ResultsFormatError(
                        f"{path}: bench record {record['key']!r} belongs to run "
                        f"{record['run_id']!r}, which has no env record before it"
                    )
                rows.append(_flatten(record, env, str(path)))
    columns = _COLUMNS
    return pd.DataFrame(rows, columns=columns)


_ENV_COLUMNS = ("machine", "cpu_model", "git_commit", "timestamp", "profile", "torch_version")
_CASE_COLUMNS = ("workload", "measurement", "hidden", "in_features", "layers", "classes", "k",
                 "k_ratio", "batch", "device", "dtype", "mode", "threads")
_COLUMNS = (
    ["run_id", "source", "key", "status", "reason", *_CASE_COLUMNS]
    + [f"{side}_{f}" for side in ("dense", "meprop") for f in _STAT_FIELDS]
    + ["speedup", "ideal", "efficiency", "noisy", "wall_s", "peak_dense_bytes", "peak_meprop_bytes",
       "peak_kind", *_ENV_COLUMNS]
)


def _flatten(record: dict, env: dict, source: str) -> dict:
    row = {"run_id": record["run_id"], "source": source, "key": record["key"],
           "status": record["status"], "reason": record.get("reason")}
    case = record["case"]
    for name in _CASE_COLUMNS:
        row[name] = case.get(name)
    for side in ("dense", "meprop"):
        stats = record.get(side) or {}
        for f in _STAT_FIELDS:
            row[f"{side}_{f}"] = stats.get(f)
    for name in ("speedup", "ideal", "efficiency", "noisy", "wall_s"):
        row[name] = record.get(name)
    peak = record.get("peak_memory") or {}
    row["peak_dense_bytes"] = peak.get("dense_bytes")
    row["peak_meprop_bytes"] = peak.get("meprop_bytes")
    row["peak_kind"] = peak.get("kind")
    for name in _ENV_COLUMNS:
        row[name] = env.get(name)
    return row
