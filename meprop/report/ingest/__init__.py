"""Read benchmark results from every front door into one list of schema records.

The report reads three formats and turns each into records of the results schema
(``docs/results_schema.md``, ``meprop.results/1``: ``env``, ``bench`` and ``train``
records), so everything after this module sees one shape:

- our JSON lines (``meprop bench --out DIR`` writes ``DIR/results.jsonl``);
- pytest-benchmark's ``--benchmark-json`` output (:mod:`meprop.report.from_pytest_benchmark`);
- asv results (``.asv/results/<machine>/<commit>-<env>.json``, :mod:`meprop.report.from_asv`).

JSON lines are read with the engine's validating reader
(:func:`meprop.bench.results.read_records`); the other two are paired into the same
``bench`` records by :mod:`meprop.report.pairing`.

A directory is searched recursively for ``*.jsonl`` and ``*.json`` files. Problems that
leave usable data (an empty file among several, a truncated last line from an interrupted
run, a record with missing fields) are collected in :attr:`LoadedResults.problems` and
shown in the report; input that leaves nothing usable, or a schema version this report
cannot read, raises :class:`ResultsError` with a message naming the file.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

__all__ = [
    "SCHEMA",
    "ResultsError",
    "LoadedResults",
    "load_results",
    "detect_format",
    "read_jsonl",
]

#: The schema this report reads (minor versions 1.x too; other majors are refused).
SCHEMA = "meprop.results/1"
_SCHEMA_PREFIX = "meprop.results/"


class ResultsError(ValueError):
    """Results input the report cannot use (missing, empty, corrupt, foreign, wrong schema)."""


@dataclass
class LoadedResults:
    """Schema records from all inputs, plus what was wrong with the inputs."""

    records: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def of_type(self, record_type: str) -> list[dict]:
        return [r for r in self.records if r.get("type") == record_type]


# ----------------------------------------------------------------------------- entry point
def load_results(paths: Iterable[str | Path]) -> LoadedResults:
    """Load every results file named by ``paths`` (files or directories)."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ResultsError("no results given: pass one or more results files or directories")
    loaded = LoadedResults()
    for path in paths:
        if not path.exists():
            raise ResultsError(f"results path {str(path)!r} does not exist")
        if path.is_dir():
            files = sorted(
                p for p in path.rglob("*")
                if p.is_file() and p.suffix in (".jsonl", ".json")
                and p.name not in ("machine.json", "benchmarks.json")
            )
            if not files:
                raise ResultsError(
                    f"results directory {str(path)!r} holds no *.jsonl or *.json files "
                    "(expected meprop bench output, pytest-benchmark JSON or asv results)"
                )
            found = 0
            for file in files:
                kind = detect_format(file, strict=False)
                if kind is None:
                    loaded.problems.append(f"{file}: not a results file, ignored")
                    continue
                found += _load_file(file, kind, loaded)
            if not found:
                raise ResultsError(f"results directory {str(path)!r} holds no usable results")
        else:
            _load_file(path, detect_format(path, strict=True), loaded)
    if not loaded.records:
        raise ResultsError(
            "no results records in " + ", ".join(repr(str(p)) for p in paths)
            + (": " + "; ".join(loaded.problems) if loaded.problems else "")
        )
    return loaded


def _load_file(path: Path, kind: str, loaded: LoadedResults) -> int:
    from meprop.report.from_asv import read_asv
    from meprop.report.from_pytest_benchmark import read_pytest_benchmark

    readers = {"jsonl": read_jsonl, "pytest-benchmark": read_pytest_benchmark, "asv": read_asv}
    records, problems = readers[kind](path)
    loaded.problems.extend(problems)
    loaded.records.extend(records)
    loaded.sources.append(f"{path} ({kind}, {len(records)} records)")
    return len(records)


def detect_format(path: Path, *, strict: bool = True) -> str | None:
    """Return ``"jsonl"``, ``"pytest-benchmark"`` or ``"asv"`` for the file at ``path``.

    With ``strict`` an unreadable, empty or unrecognised file raises :class:`ResultsError`;
    otherwise empty or unrecognised files give ``None``.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ResultsError(f"cannot read results file {str(path)!r}: {error}") from None
    if not text.strip():
        if strict:
            raise ResultsError(f"results file {str(path)!r} is empty")
        return "jsonl" if path.suffix == ".jsonl" else None  # reported as empty by read_jsonl
    if path.suffix == ".jsonl":
        return "jsonl"
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        first = text.lstrip().splitlines()[0]
        if _SCHEMA_PREFIX in first:
            return "jsonl"  # JSON lines under another name
        if strict:
            raise ResultsError(f"results file {str(path)!r} is not valid JSON or JSON lines") from None
        return None
    if isinstance(data, dict):
        if data.get("schema", "").startswith(_SCHEMA_PREFIX):
            return "jsonl"  # a single record
        if "benchmarks" in data and "machine_info" in data:
            return "pytest-benchmark"
        if "result_columns" in data and "results" in data and "commit_hash" in data:
            return "asv"
    if strict:
        raise ResultsError(
            f"results file {str(path)!r} is JSON but none of the formats read here "
            "(meprop JSON lines, pytest-benchmark --benchmark-json, asv results)"
        )
    return None


# ----------------------------------------------------------------------------- JSON lines
def read_jsonl(path: Path) -> tuple[list[dict], list[str]]:
    """Read our JSON-lines results with the engine's validating reader; (records, problems).

    :func:`meprop.bench.results.read_records` refuses corrupt, foreign and other-major-schema
    files (its :class:`ResultsFormatError` becomes :class:`ResultsError` here) and skips a last
    line cut short by an interrupted run with a warning, which becomes a problem note.
    """
    from meprop.bench.results import ResultsFormatError, read_records

    if not path.read_text(encoding="utf-8").strip():
        return [], [f"{path}: empty results file (a run that measured nothing?)"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            records = read_records(path)
        except ResultsFormatError as error:
            raise ResultsError(str(error)) from None
    problems = [str(w.message) for w in caught]
    return [dict(r, _source=str(path)) for r in records], problems
