"""Targets as data: read a targets file (TOML, docs/targets.md) into :class:`~meprop.lab.plan.targets.Target` rows.

A file is a ``[case_defaults]`` table (``threads``, ``dtype`` of the cases the ``perf``
profile runs when a target leaves them out) and ``[[target]]`` rows. A row's keys are the
fields of :class:`Target` (``label``, ``minimum``, ``kind``, ``measurement``, ``workload``,
``mode``, ``hidden`` / ``min_hidden``, ``batch`` / ``min_batch``, ``k`` / ``k_ratio``, ...),
``workload = "any"`` matching every workload, plus how its cases are built:

- nothing: the row's own fields name one case (a single-row target);
- ``[target.grid]``: lists of case fields, their Cartesian product (``k_rounding = "ceil"``
  turns ``k_ratio`` into ``ceil(ratio * n)`` instead of ``round``);
- ``[[target.cases]]``: each case's fields over the row's own;
- ``also_adam = ["fused"]``: each case again with that Adam implementation.

``meprop bench --targets FILE`` and ``meprop report --targets FILE`` read one; without it
both read :data:`DEFAULT_TARGETS_FILE` from the current directory (the repository's own).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import sys
from pathlib import Path

from meprop.lab.plan.cases import Case
from meprop.lab.plan.targets import PERF_DTYPE, PERF_THREADS, Target, perf_case

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["DEFAULT_TARGETS_FILE", "TargetsFileError", "load_targets", "default_targets"]

#: The project's own targets, relative to the repository root (the current directory).
DEFAULT_TARGETS_FILE = Path("benchmarks") / "targets.toml"
_TARGET_FIELDS = {f.name for f in dataclasses.fields(Target)} - {"perf_cases"}
_BUILD_KEYS = {"grid", "cases", "also_adam"}
#: the case fields a grid or a case entry may set (besides k / k_ratio)
_CASE_KEYS = ("workload", "measurement", "hidden", "batch", "mode", "k", "k_ratio", "in_features",
              "layers", "threads", "classes", "optimizer", "adam", "dtype")


_POSITIVE_INT = ("hidden", "min_hidden", "batch", "min_batch", "k", "in_features", "layers", "threads", "classes")
_TEXT = ("label", "kind", "measurement", "workload", "mode", "optimizer", "adam", "note", "dtype", "k_rounding")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


#: what each field of a file accepts: (test, words for the message)
_ACCEPTS = {
    **{name: (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "a positive integer")
       for name in _POSITIVE_INT},
    **{name: (lambda v: isinstance(v, str), "a string") for name in _TEXT},
    "minimum": (lambda v: _number(v) and math.isfinite(v) and v > 0, "a finite number > 0"),
    "k_ratio": (lambda v: _number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "grid": (lambda v: isinstance(v, dict), "a [target.grid] table"),
    "cases": (lambda v: isinstance(v, list) and all(isinstance(e, dict) for e in v), "[[target.cases]] tables"),
    "also_adam": (lambda v: isinstance(v, list) and all(isinstance(e, str) for e in v), "a list of strings"),
}


def check_field(name: str, value):
    """``value`` when field ``name`` (``grid.hidden``: a grid axis' value) accepts it, else a
    one-line ValueError naming the field, the value and what is accepted."""
    accepts, words = _ACCEPTS.get(name.rsplit(".", 1)[-1], (lambda v: True, ""))
    if not accepts(value):
        raise ValueError(f"field {name!r} = {value!r}: accepted: {words}")
    return value


class TargetsFileError(ValueError):
    """A targets file that cannot be read or holds a row that is not a target."""


def load_targets(path: str | Path) -> tuple[Target, ...]:
    """The targets of the file at ``path``, in file order."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise TargetsFileError(f"targets file {str(path)!r} cannot be read: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise TargetsFileError(f"targets file {str(path)!r} is not valid TOML: {error}") from None
    unknown = set(data) - {"case_defaults", "target"}
    if unknown:
        raise TargetsFileError(f"targets file {str(path)!r}: unknown table(s) {sorted(unknown)}; "
                               "accepted: [case_defaults] and [[target]]")
    where = f"targets file {str(path)!r}"
    defaults = {"threads": PERF_THREADS, "dtype": PERF_DTYPE, **_case_defaults(data.get("case_defaults", {}), where)}
    rows = _rows(data.get("target", []), where)
    targets = []
    for number, row in enumerate(rows, 1):
        label = row.get("label") if isinstance(row, dict) else None
        named = f"{where}, target {label!r} (row {number})" if isinstance(label, str) else f"{where}, row {number}"
        try:
            if not isinstance(row, dict):
                raise ValueError(f"a row must be a table of fields, got {row!r}")
            targets.append(_target(row, defaults))
        except (TypeError, ValueError) as error:
            raise TargetsFileError(f"{named}: {error}") from None
    return tuple(targets)


def _rows(rows, where: str) -> list:
    if isinstance(rows, dict):
        raise TargetsFileError(f"{where}: [target] is one table; write each row as [[target]] (an array of tables)")
    if not isinstance(rows, list):
        raise TargetsFileError(f"{where}: target = {rows!r} is not a row; accepted: [[target]] tables")
    if not rows:
        raise TargetsFileError(f"{where} has no [[target]] rows")
    return rows


def _case_defaults(table, where: str) -> dict:
    if not isinstance(table, dict):
        raise TargetsFileError(f"{where}: case_defaults = {table!r} is not a table; accepted: a "
                               "[case_defaults] table with threads and dtype")
    unknown = set(table) - {"threads", "dtype"}
    if unknown:
        raise TargetsFileError(f"{where}, [case_defaults]: unknown key(s) {sorted(unknown)}; accepted: "
                               "['dtype', 'threads']")
    try:
        return {key: check_field(key, value) for key, value in table.items()}
    except ValueError as error:
        raise TargetsFileError(f"{where}, [case_defaults]: {error}") from None


def default_targets() -> tuple[Target, ...]:
    """The targets of :data:`DEFAULT_TARGETS_FILE`; a clear error when it is not here."""
    if not DEFAULT_TARGETS_FILE.is_file():
        raise TargetsFileError(f"no targets file given and {str(DEFAULT_TARGETS_FILE)!r} is not in the "
                               "current directory: pass --targets FILE (format: docs/targets.md)")
    return load_targets(DEFAULT_TARGETS_FILE)


def _target(row: dict, defaults: dict) -> Target:
    unknown = set(row) - _TARGET_FIELDS - _BUILD_KEYS
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)}; accepted: {sorted(_TARGET_FIELDS | _BUILD_KEYS)}")
    fields = {key: check_field(key, value) for key, value in row.items() if key in _TARGET_FIELDS}
    for key in _BUILD_KEYS & set(row):
        check_field(key, row[key])
    if fields.get("workload") == "any":
        fields["workload"] = None
    fields.setdefault("minimum", None)
    target = Target(**fields)
    cases = _built_cases(target, row, defaults)
    return dataclasses.replace(target, perf_cases=cases) if cases else target


def _built_cases(target: Target, row: dict, defaults: dict) -> tuple[Case, ...]:
    own = {key: getattr(target, key) for key in _CASE_KEYS if hasattr(target, key) and getattr(target, key) is not None}
    if "grid" in row:
        entries = _grid_entries(row["grid"])
    elif "cases" in row:
        entries = [dict(entry) for entry in row["cases"]]
    elif target.names_one_case:
        entries = [{}]
    else:
        return ()
    cases = []
    for entry in entries:
        bad = set(entry) - set(_CASE_KEYS) - {"k_rounding"}
        if bad:
            raise ValueError(f"unknown case field(s) {sorted(bad)}; accepted: {list(_CASE_KEYS)}")
        for key, value in entry.items():
            check_field(key, value)
        merged = {**defaults, **own}
        if "k" in entry or "k_ratio" in entry:  # an entry's own k or ratio replaces the row's
            merged.pop("k", None)
            merged.pop("k_ratio", None)
        cases.append(_case({**merged, **entry}))
    for adam in row.get("also_adam", ()):
        cases += [case.replace(adam=adam) for case in list(cases)]
    return tuple(cases)


def _grid_entries(grid: dict) -> list[dict]:
    for key, value in grid.items():
        if key in _CASE_KEYS:
            for item in value if isinstance(value, list) else [value]:
                check_field(f"grid.{key}", item)
    rounding = grid.get("k_rounding", "round")
    axes = {key: (value if isinstance(value, list) else [value])
            for key, value in grid.items() if key != "k_rounding"}
    entries = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
    if rounding == "ceil":
        for entry in entries:
            if "k_ratio" in entry:
                entry["k"] = math.ceil(entry.pop("k_ratio") * entry["hidden"])
    elif rounding != "round":
        raise ValueError(f"k_rounding must be 'round' or 'ceil', got {rounding!r}")
    return entries


def _case(fields: dict) -> Case:
    fields.pop("k_rounding", None)
    case = perf_case(fields.pop("workload", "linear"), fields.pop("measurement", "linear_backward"),
                     fields.pop("hidden"), fields.pop("batch"), fields.pop("mode"),
                     k=fields.pop("k", None), k_ratio=fields.pop("k_ratio", None),
                     in_features=fields.pop("in_features", None), layers=fields.pop("layers", 2),
                     threads=fields.pop("threads"), classes=fields.pop("classes", 10))
    return case.replace(**fields) if fields else case
