"""The JSON-lines results store: the writer, the validating reader and :class:`ResultsError`.

Records follow :mod:`meprop.results.schema` (docs/results_schema.md). A run appends one
``env`` record, then one record per case (``bench``) or epoch (``train``), each written
and flushed (and fsynced) as soon as it is complete, so an interrupted run keeps
everything it finished. ``--resume`` reads the keys already present and skips them; a
resumed run is a new run (new ``run_id``, its own ``env`` record) appended to the same
file. Nothing is ever overwritten.

:func:`read_records` reads one file and refuses corrupt or foreign files with a
:class:`ResultsError` that names the file and the line. A final line cut short by an
interrupted write (no trailing newline, not valid JSON) is ignored with a warning.
Tables of records (pandas) are built by :mod:`meprop.report.frames`.
"""

from __future__ import annotations

import json
import os
import secrets
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from meprop.results.schema import SCHEMA, schema_problem

__all__ = [
    "RESULTS_FILENAME",
    "ResultsError",
    "new_run_id",
    "ResultsWriter",
    "read_lines",
    "read_records",
    "load_records",
    "results_path",
    "results_paths",
]

RESULTS_FILENAME = "results.jsonl"


class ResultsError(ValueError):
    """Results input that cannot be used: missing, empty, corrupt, foreign or of another schema version."""


def new_run_id() -> str:
    """``20261121T051200Z-ab12cd``: UTC time and 6 random hex digits."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


def results_path(path: str | os.PathLike) -> Path:
    """``path`` itself if it is a file, ``path/results.jsonl`` if it is a directory."""
    path = Path(path)
    return path / RESULTS_FILENAME if path.is_dir() else path


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
            records, good_bytes = read_lines(self.path, tolerate_truncated_tail=True)
            self.done = {r["key"] for _, r in records if r["type"] == "bench"}
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


def read_lines(path: Path, *, tolerate_truncated_tail: bool = True) -> tuple[list[tuple[int, dict]], int]:
    """Parse and validate every line of one file: ``[(line number, record)]`` and the byte length that parsed."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ResultsError(f"{path}: cannot read results file: {error.strerror}") from None
    records: list[tuple[int, dict]] = []
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
            raise ResultsError(
                f"{path}:{lineno}: not a JSON object on this line ({error}); "
                f"is this a meprop results file (JSON lines, schema {SCHEMA!r})?"
            ) from None
        problem = schema_problem(record)
        if problem is not None:
            raise ResultsError(f"{path}:{lineno}: {problem}")
        records.append((lineno, record))
        offset += len(raw) + (0 if is_last else 1)
    return records, offset


def read_records(path: str | os.PathLike) -> list[dict]:
    """All records of one results file (or run directory), validated."""
    return [record for _, record in read_lines(results_path(path))[0]]


def results_paths(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """The results files named by ``paths`` (files, or run directories holding results.jsonl)."""
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
    """The records of several files, each tagged with its ``_source`` path (not part of the schema)."""
    return [{**record, "_source": str(path)} for path in results_paths(paths) for record in read_records(path)]
