"""Read benchmark results from every front door into one list of schema records.

The report reads three formats and turns each into records of the results schema
(``docs/results_schema.md``, ``meprop.results/1``: ``env``, ``bench`` and ``train``
records), so everything after this module sees one shape:

- our JSON lines (``meprop bench --out DIR`` writes ``DIR/results.jsonl``);
- pytest-benchmark's ``--benchmark-json`` output (one benchmark per side: the dense and
  the meProp timing of a case are paired here by their case fields);
- asv results (``.asv/results/<machine>/<commit>-<env>.json``), read with asv's own
  ``Results.load`` and mapped the same way.

A directory is searched recursively for ``*.jsonl`` and ``*.json`` files. Problems that
leave usable data (an empty file among several, a truncated last line from an interrupted
run, a record with missing fields) are collected in :attr:`LoadedResults.problems` and
shown in the report; input that leaves nothing usable, or a schema version this report
cannot read, raises :class:`ResultsError` with a message naming the file.
"""

from __future__ import annotations

import ast
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

__all__ = [
    "SCHEMA",
    "ResultsError",
    "LoadedResults",
    "load_results",
    "detect_format",
    "read_jsonl",
    "read_pytest_benchmark",
    "read_asv",
    "records_from_sides",
]

#: The schema this report reads; records of another major version are refused.
SCHEMA = "meprop.results/1"
_SCHEMA_PREFIX = "meprop.results/"
_RECORD_TYPES = ("env", "bench", "train")
#: Case fields of a ``bench`` record (``docs/results_schema.md``).
CASE_FIELDS = (
    "workload", "measurement", "hidden", "in_features", "layers", "k", "k_ratio",
    "batch", "device", "dtype", "mode", "threads",
)
_MEASUREMENTS = ("forward", "linear_backward", "overall_backward", "train_step")
_MODES = ("per_example", "unified", "random")
#: A side is noisy when its IQR / median exceeds this (the schema's 10%).
NOISY_THRESHOLD = 0.10


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
    _check_single_schema(loaded.records)
    return loaded


def _load_file(path: Path, kind: str, loaded: LoadedResults) -> int:
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
    """Read our JSON-lines results; returns (records, problems)."""
    try:
        from meprop.bench import results as engine_results  # the engine's contract, if present
    except ImportError:
        engine_results = None
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        return [], [f"{path}: empty results file (a run that measured nothing?)"]
    lines = text.splitlines()
    records, problems, bad = [], [], 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            bad += 1
            last = number == len(lines) and not text.endswith("\n")
            problems.append(
                f"{path}:{number}: "
                + ("truncated last line (interrupted write?), ignored" if last
                   else f"corrupt line ({error.msg}), ignored")
            )
            continue
        if not isinstance(record, dict):
            bad += 1
            problems.append(f"{path}:{number}: not a JSON object, ignored")
            continue
        _check_schema(record, f"{path}:{number}")
        record_type = record.get("type")
        if record_type not in _RECORD_TYPES:
            problems.append(f"{path}:{number}: unknown record type {record_type!r}, ignored")
            continue
        missing = _missing_fields(record)
        if missing:
            problems.append(f"{path}:{number}: {record_type} record lacks {missing}, ignored")
            continue
        record = dict(record, _source=str(path))
        records.append(record)
    if not records and bad:
        raise ResultsError(f"results file {str(path)!r} is corrupt: no line is a valid results record")
    del engine_results  # validation of our own fields stays here until the engine exposes one
    return records, problems


def _check_schema(record: dict, where: str) -> None:
    schema = record.get("schema")
    if not isinstance(schema, str) or not schema.startswith(_SCHEMA_PREFIX):
        raise ResultsError(
            f"{where}: not a meprop results record (schema {schema!r}; expected {SCHEMA!r})"
        )
    if schema.split("/", 1)[1].split(".")[0] != SCHEMA.split("/", 1)[1]:
        raise ResultsError(
            f"{where}: schema {schema!r} is not readable by this report, which reads {SCHEMA!r}; "
            "rebuild the report with a matching meprop version or re-run the benchmark"
        )


def _check_single_schema(records: list[dict]) -> None:
    versions = {r.get("schema") for r in records}
    if len(versions) > 1:
        where = {}
        for r in records:
            where.setdefault(r.get("schema"), r.get("_source"))
        raise ResultsError(
            "mixed schema versions in the inputs: "
            + ", ".join(f"{v!r} (e.g. {where[v]})" for v in sorted(versions, key=str))
            + "; build one report per schema version"
        )


def _missing_fields(record: dict) -> list[str]:
    need = {"env": ("run_id", "env"), "bench": ("run_id", "case", "status"), "train": ("run_id",)}
    missing = [name for name in need[record["type"]] if name not in record]
    if record["type"] == "bench" and isinstance(record.get("case"), dict):
        missing += [f"case.{name}" for name in ("measurement", "hidden", "k", "batch")
                    if name not in record["case"]]
    return missing


# ----------------------------------------------------------------------------- pairing sides
def _stats(median: float | None, iqr: float | None, n: int | None, minimum=None, mean=None) -> dict | None:
    if median is None or not math.isfinite(median):
        return None
    return {"median_s": median, "iqr_s": iqr, "n_samples": n, "min_s": minimum, "mean_s": mean}


def records_from_sides(sides: list[dict], *, run_id: str, source: str) -> tuple[list[dict], list[str]]:
    """Pair single-side timings into ``bench`` records.

    Each item of ``sides``: ``{"case": {...}, "side": "dense"|"meprop", "stats": {...}|None,
    "name": str}``. A meProp side is paired with the dense side whose non-null case fields
    all equal its own (dense timings usually carry no k or mode); a meProp side without one
    gives a record with ``dense: null`` (shown as "no dense baseline").
    """
    dense = [s for s in sides if s["side"] == "dense"]
    problems, records = [], []
    for item in (s for s in sides if s["side"] == "meprop"):
        case = item["case"]
        matches = [
            d for d in dense
            if all(case.get(f) == v for f, v in d["case"].items() if v is not None and f in case)
        ]
        # prefer the dense timing that agrees on the most fields
        best = max(matches, key=lambda d: sum(v is not None for v in d["case"].values()), default=None)
        if best is None:
            problems.append(f"{source}: {item['name']}: no dense timing of the same case")
        records.append(_bench_record(case, best["stats"] if best else None, item["stats"],
                                     run_id=run_id, source=source))
    if dense and not records:
        problems.append(f"{source}: only dense timings, no meProp timings to compare")
    return records, problems


def _bench_record(case: dict, dense: dict | None, meprop: dict | None, *, run_id: str, source: str) -> dict:
    case = {f: case.get(f) for f in CASE_FIELDS}
    if case["k_ratio"] is None and case["k"] and case["hidden"]:
        case["k_ratio"] = case["k"] / case["hidden"]
    if case["k"] is None and case["k_ratio"] and case["hidden"]:
        case["k"] = max(1, round(case["k_ratio"] * case["hidden"]))
    speedup = dense["median_s"] / meprop["median_s"] if dense and meprop else None
    ideal = case["hidden"] / case["k"] if case["hidden"] and case["k"] else None

    def spread(s):
        return None if not s or s.get("iqr_s") is None else s["iqr_s"] / s["median_s"]

    spreads = [x for x in (spread(dense), spread(meprop)) if x is not None]
    key = ",".join(f"{f}={case[f]}" for f in CASE_FIELDS)
    return {
        "schema": SCHEMA, "type": "bench", "run_id": run_id, "case": case, "key": key,
        "status": "ok" if meprop else "skipped",
        "reason": None if meprop else "no meProp timing",
        "dense": dense, "meprop": meprop, "speedup": speedup, "ideal": ideal,
        "efficiency": speedup / ideal if speedup and ideal else None,
        "noisy": any(x > NOISY_THRESHOLD for x in spreads) if spreads else None,
        "peak_memory": None, "_source": source,
    }


def _side_and_mode(values: dict, name: str) -> tuple[str | None, str | None]:
    """Which side a benchmark times, from an ``impl``-like field or its name."""
    for key in ("impl", "variant", "side", "method", "backend"):
        value = values.get(key)
        if isinstance(value, str):
            if value == "dense":
                return "dense", None
            if value == "meprop":
                return "meprop", values.get("mode")
            if value in _MODES:
                return "meprop", value
    lowered = name.lower()
    if "dense" in lowered:
        return "dense", None
    if "meprop" in lowered:
        return "meprop", values.get("mode")
    return None, None


def _case_from(values: dict, name: str) -> dict:
    aliases = {"n": "hidden", "hidden_size": "hidden", "batch_size": "batch", "ratio": "k_ratio",
               "kratio": "k_ratio", "m": "in_features"}
    case = {}
    nested = values.get("case")
    if isinstance(nested, dict):
        case.update(nested)
    for key, value in values.items():
        key = aliases.get(key, key)
        if key in CASE_FIELDS and key not in case:
            case[key] = value
    if case.get("measurement") is None:
        lowered = name.lower()
        for pattern, measurement in (("overall", "overall_backward"), ("train", "train_step"),
                                     ("backward", "linear_backward"), ("forward", "forward")):
            if pattern in lowered:
                case["measurement"] = measurement
                break
    if case.get("workload") is None:
        case["workload"] = "mlp" if "mlp" in name.lower() else "linear"
    case.setdefault("layers", 1)
    return case


# ----------------------------------------------------------------------------- pytest-benchmark
def read_pytest_benchmark(path: Path) -> tuple[list[dict], list[str]]:
    """Map pytest-benchmark ``--benchmark-json`` output to env + bench records.

    The case is read from ``extra_info["case"]`` (or flat ``extra_info`` / ``params`` keys
    named like the schema's case fields) and the side from ``extra_info``/``params``
    ``impl`` (``"dense"``, ``"meprop"`` or a mode name), else from the benchmark's name.
    """
    data = json.loads(path.read_text(encoding="utf-8"))
    machine, commit = data.get("machine_info", {}), data.get("commit_info", {})
    run_id = f"pytest-benchmark:{machine.get('node', '?')}:{data.get('datetime', path.name)}"
    sides, problems, extra_env = [], [], {}
    for bench in data.get("benchmarks", []):
        values = {**(bench.get("params") or {}), **(bench.get("extra_info") or {})}
        if isinstance(values.get("env"), dict):
            extra_env.update(values["env"])
        side, mode = _side_and_mode(values, bench.get("name", ""))
        if side is None:
            problems.append(f"{path}: {bench.get('name')}: cannot tell dense from meProp, ignored")
            continue
        case = _case_from(values, f"{bench.get('group') or ''} {bench.get('name', '')}")
        if side == "meprop" and mode:
            case["mode"] = mode
        if side == "dense" and "mode" not in (values.get("case") or {}):
            case["mode"] = None
        if case.get("hidden") is None or case.get("batch") is None:
            problems.append(f"{path}: {bench.get('name')}: no hidden/batch in params or extra_info, ignored")
            continue
        s = bench.get("stats") or {}
        sides.append({"case": case, "side": side, "name": bench.get("name", "?"),
                      "stats": _stats(s.get("median"), s.get("iqr"), s.get("rounds"),
                                      s.get("min"), s.get("mean"))})
    cpu = machine.get("cpu") or {}
    env = {
        "timestamp": data.get("datetime"), "machine": machine.get("node"),
        "git_commit": commit.get("id"), "python_version": machine.get("python_version"),
        "platform": " ".join(filter(None, (machine.get("system"), machine.get("release")))),
        "cpu_model": cpu.get("brand_raw"), "cpu_cores_logical": cpu.get("count"),
        "profile": "pytest-benchmark",
        "timing": "pytest-benchmark: dense and meProp timed as separate benchmarks (not interleaved)",
    }
    env.update({k: v for k, v in extra_env.items() if k not in env or env[k] is None})
    env_record = {"schema": SCHEMA, "type": "env", "run_id": run_id, "env": env, "_source": str(path)}
    records, pair_problems = records_from_sides(sides, run_id=run_id, source=str(path))
    if not records:
        problems.append(f"{path}: no meProp benchmarks found")
        return [], problems + pair_problems
    return [env_record] + records, problems + pair_problems


# ----------------------------------------------------------------------------- asv
def read_asv(path: Path) -> tuple[list[dict], list[str]]:
    """Map an asv results file to env + bench records, read with asv's ``Results.load``.

    Parameter names come from ``benchmarks.json`` at the results root (the folder above
    the machine folder); machine details from ``machine.json`` beside the file.
    ``time_*`` results are medians with ``q_25``/``q_75`` stats; ``track_*`` results are the
    values the suite returned (seconds from the engine's timer) without a spread.
    """
    try:
        from asv.results import Results
    except ImportError:
        raise ResultsError(
            f"{path} is an asv results file; reading it needs asv (pip install asv)"
        ) from None
    try:
        results = Results.load(str(path))
    except Exception as error:  # asv raises its own UserError/KeyError types
        raise ResultsError(f"cannot read asv results file {str(path)!r}: {error}") from None
    problems: list[str] = []
    param_names = _asv_param_names(path.parent.parent / "benchmarks.json")
    machine = _read_json(path.parent / "machine.json") or {}
    run_id = f"asv:{results.params.get('machine', path.parent.name)}:{results.commit_hash[:8]}:{results.env_name}"
    sides = []
    for name in sorted(results.get_all_result_keys()):
        params = results.get_result_params(name) or []
        values_list = results.get_result_value(name, params)
        stats_list = results.get_result_stats(name, params) or [None] * len(values_list)
        names = param_names.get(name)
        if names is None or len(names) != len(params):
            names = [f"param{i + 1}" for i in range(len(params))]
        for combo, value, stats in zip(itertools.product(*params), values_list, stats_list):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue  # n/a in asv: impossible combination or failure
            values = {n: _literal(v) for n, v in zip(names, combo)}
            label = f"{name}({', '.join(f'{k}={v}' for k, v in values.items())})"
            side, mode = _side_and_mode(values, name.rsplit(".", 1)[-1])
            if side is None:
                problems.append(f"{path}: {label}: cannot tell dense from meProp, ignored")
                continue
            case = _case_from(values, name)
            if side == "meprop" and mode:
                case["mode"] = mode
            if side == "dense":
                case["mode"] = values.get("mode")
            if case.get("hidden") is None or case.get("batch") is None:
                problems.append(f"{path}: {label}: no hidden/batch parameter, ignored")
                continue
            iqr = None
            if stats and stats.get("q_75") is not None and stats.get("q_25") is not None:
                iqr = stats["q_75"] - stats["q_25"]
            n = stats.get("repeat") if stats else None
            sides.append({"case": case, "side": side, "name": label, "stats": _stats(value, iqr, n)})
    env = {
        "timestamp": _asv_date(results.date), "machine": results.params.get("machine"),
        "git_commit": results.commit_hash, "python_version": results.params.get("python"),
        "platform": machine.get("os"), "cpu_model": machine.get("cpu"),
        "cpu_cores_logical": _literal(machine.get("num_cpu")), "ram_bytes": _literal(machine.get("ram")),
        "profile": f"asv ({results.env_name})",
        "timing": "asv: dense and meProp timed as separate benchmarks (not interleaved)",
    }
    env_record = {"schema": SCHEMA, "type": "env", "run_id": run_id, "env": env, "_source": str(path)}
    records, pair_problems = records_from_sides(sides, run_id=run_id, source=str(path))
    if not records:
        problems.append(f"{path}: no meProp benchmarks found")
        return [], problems + pair_problems
    return [env_record] + records, problems + pair_problems


def _asv_param_names(path: Path) -> dict[str, list[str]]:
    data = _read_json(path) or {}
    return {name: b.get("param_names", []) for name, b in data.items() if isinstance(b, dict)}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _asv_date(value: Any) -> str | None:
    if isinstance(value, (int, float)):  # asv stores milliseconds since the epoch
        from datetime import datetime, timezone

        return datetime.fromtimestamp(value / 1000, tz=timezone.utc).isoformat()
    return value


def _literal(value: Any) -> Any:
    """asv stores parameter values as their repr (``"'cpu'"``, ``"500"``)."""
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return re.sub(r"^['\"]|['\"]$", "", value)
