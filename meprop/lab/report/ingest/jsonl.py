"""Read our JSON-lines results (``meprop bench`` / ``meprop train`` output) for the report.

The store's validating reader (:func:`meprop.lab.results.store.read_lines`) refuses corrupt,
foreign and other-major-schema files with a :class:`~meprop.lab.results.store.ResultsError`
naming the file and line, and skips a last line cut short by an interrupted run with a
warning, which becomes a problem note here. Records whose fields have the wrong types
(:func:`meprop.lab.results.schema.record_problem`: a speedup of ``"fast"``, a case given as
a list) are skipped, each with a problem note naming its file and line.
"""

from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

from meprop.lab.results.schema import SCHEMA_PREFIX, record_problem
from meprop.lab.results.store import ARCHIVE_SUFFIX, read_lines

__all__ = ["read_jsonl", "looks_like_ours"]


def looks_like_ours(path: Path) -> bool:
    """Whether the first non-empty line of ``path`` is a JSON object of the ``meprop.results/`` schema."""
    opener = gzip.open if Path(path).suffix == ARCHIVE_SUFFIX else open  # reads up to the first line only
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    record = json.loads(line)
                    return isinstance(record, dict) and str(record.get("schema", "")).startswith(SCHEMA_PREFIX)
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return True  # empty: ours, reported as empty by read_jsonl


def read_jsonl(path: Path) -> tuple[list[dict], list[str]]:
    """(records, problems) for one JSON-lines file; records are tagged ``_source`` and ``_line``."""
    path = Path(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lines, _ = read_lines(path)
    problems = [str(w.message) for w in caught]
    if not lines and not problems:  # nothing but blank lines
        return [], [f"{path}: empty results file (a run that measured nothing?)"]
    records = []
    for lineno, record in lines:
        problem = record_problem(record)
        if problem is not None:
            problems.append(f"{path}:{lineno}: {problem}; record skipped")
            continue
        records.append(dict(record, _source=str(path), _line=lineno))
    return records, problems
