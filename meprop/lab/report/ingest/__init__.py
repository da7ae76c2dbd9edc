"""Read benchmark results from every front door into one list of schema records.

The report reads three formats and turns each into records of the results schema
(:mod:`meprop.lab.results.schema`: ``env``, ``bench`` and ``train`` records), so everything
after this package sees one shape:

- our JSON lines (``meprop bench --out DIR`` writes ``DIR/results.jsonl``): :mod:`.jsonl`;
- pytest-benchmark's ``--benchmark-json`` output: :mod:`.pytest_benchmark`;
- asv results (``.asv/results/<machine>/<commit>-<env>.json``): :mod:`.asv`;

the last two paired into ``bench`` records by :mod:`.pairing`.

A directory is searched recursively for ``*.jsonl`` and ``*.json`` files, skipping what
cannot hold results of a run: hidden folders (except ``.asv``), virtual environments,
``tests`` folders (the test fixtures of a checkout), published pages (a folder with an
``index.html``) and caches. Problems that leave usable data (an empty file among
several, a file in a folder that is not results, a truncated last line, a record with
wrong-typed fields) are collected in :attr:`LoadedResults.problems` and shown in the
report; input that leaves nothing usable, or a schema version this report cannot read,
raises :class:`~meprop.lab.results.store.ResultsError` with a message naming the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from meprop.lab.report.ingest.asv import read_asv
from meprop.lab.report.ingest.jsonl import looks_like_ours, read_jsonl
from meprop.lab.report.ingest.pytest_benchmark import read_pytest_benchmark
from meprop.lab.results.schema import SCHEMA_PREFIX, record_problem
from meprop.lab.results.store import ResultsError

__all__ = ["ResultsError", "LoadedResults", "load_results", "detect_format", "results_files"]

_READERS = {"jsonl": read_jsonl, "pytest-benchmark": read_pytest_benchmark, "asv": read_asv}
#: Folder names never searched below a given directory.
_SKIP_DIRS = {"tests", "__pycache__", "node_modules", "site-packages"}
#: asv's own files beside its results: not results.
_NOT_RESULTS = {"machine.json", "benchmarks.json"}


@dataclass
class LoadedResults:
    """Schema records from all inputs, plus what was wrong with the inputs."""

    records: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def of_type(self, record_type: str) -> list[dict]:
        return [r for r in self.records if r.get("type") == record_type]


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
            _load_directory(path, loaded)
        else:
            _load_file(path, detect_format(path, strict=True), loaded)
    if not loaded.records:
        raise ResultsError(
            "no results records in " + ", ".join(repr(str(p)) for p in paths)
            + (": " + "; ".join(loaded.problems) if loaded.problems else "")
        )
    return loaded


def _skipped_dir(folder: Path) -> bool:
    name = folder.name
    if name.startswith(".") and name != ".asv":
        return True
    return name in _SKIP_DIRS or (folder / "pyvenv.cfg").exists() or (folder / "index.html").exists()


def results_files(root: Path) -> list[Path]:
    """The ``*.jsonl`` / ``*.json`` (and archived ``*.jsonl.gz``) files below ``root`` that may hold results (see the module docstring)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not _skipped_dir(Path(folder) / d))
        found += [Path(folder) / f for f in files
                  if f.endswith((".jsonl", ".json", ".jsonl.gz")) and f not in _NOT_RESULTS]
    return sorted(found)


def _load_directory(path: Path, loaded: LoadedResults) -> None:
    files = results_files(path)
    if not files:
        raise ResultsError(
            f"results directory {str(path)!r} holds no *.jsonl or *.json files "
            "(expected meprop bench output, pytest-benchmark JSON or asv results)"
        )
    found = 0
    for file in files:
        kind = detect_format(file, strict=False)
        if kind == "jsonl" and not looks_like_ours(file):
            kind = None  # an unrelated JSON-lines file must not sink the directory
        if kind is None:
            loaded.problems.append(f"{file}: not a results file, ignored")
            continue
        found += _load_file(file, kind, loaded)
    if not found:
        raise ResultsError(f"results directory {str(path)!r} holds no usable results"
                           + (": " + "; ".join(loaded.problems) if loaded.problems else ""))


def _load_file(path: Path, kind: str, loaded: LoadedResults) -> int:
    records, problems = _READERS[kind](path)
    loaded.problems.extend(problems)
    kept = []
    for record in records:  # the jsonl reader checked its own; this checks the paired formats
        problem = None if "_line" in record else record_problem(record)
        if problem is not None:
            loaded.problems.append(f"{path}: {problem}; record skipped")
            continue
        kept.append(record)
    loaded.records.extend(kept)
    loaded.sources.append(f"{path} ({kind}, {len(kept)} records)")
    return len(kept)


def detect_format(path: Path, *, strict: bool = True) -> str | None:
    """Return ``"jsonl"``, ``"pytest-benchmark"`` or ``"asv"`` for the file at ``path``.

    With ``strict`` an unreadable, empty or unrecognised file raises :class:`ResultsError`;
    otherwise empty or unrecognised files give ``None``.
    """
    if path.name.endswith(".jsonl.gz"):
        return "jsonl"  # an archived results file (studies/): the jsonl reader decompresses it
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
        if SCHEMA_PREFIX in first:
            return "jsonl"  # JSON lines under another name
        if strict:
            raise ResultsError(f"results file {str(path)!r} is not valid JSON or JSON lines") from None
        return None
    if isinstance(data, dict):
        if str(data.get("schema", "")).startswith(SCHEMA_PREFIX):
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
