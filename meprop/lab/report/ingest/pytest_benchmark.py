"""Map pytest-benchmark ``--benchmark-json`` output to schema records (env + bench).

Each pytest-benchmark entry times one side of a case. The case is read from
``extra_info["case"]`` (a ``Case.to_dict()``; flat ``extra_info``/``params`` keys named like
the schema's case fields also work), the side from ``extra_info``/``params`` ``variant``
(``"dense"`` or ``"meprop"``; ``impl``/``side`` and mode names are accepted too), else from the
test name; ``extra_info["env"]`` (the engine's snapshot) fills the environment. Dense and
meProp are then paired by :mod:`meprop.lab.report.ingest.pairing`. pytest-benchmark times the two sides
in separate benchmarks, not interleaved: the report says so, and labels the machine
``<node> [pytest-benchmark]`` so these rows never share a line or a table group with
``meprop bench`` rows of the same machine. Where an entry's ``extra_info["interleaved"]``
holds the shape's same-run ``dense`` / ``meprop`` timings (the project's cases record them),
those are used instead: a ratio measured interleaved, with its samples for the interval.
"""

from __future__ import annotations

import json
from pathlib import Path

from meprop.lab.report.ingest.pairing import case_from, records_from_sides, side_and_mode
from meprop.lab.results.schema import env_record, timing
from meprop.lab.results.store import ResultsError
from meprop.lab.workloads import named_in
from meprop.lab.measurements import from_pytest_name

__all__ = ["read_pytest_benchmark"]


def read_pytest_benchmark(path: Path) -> tuple[list[dict], list[str]]:
    """(records, problems) for one pytest-benchmark JSON file."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    benchmarks = data.get("benchmarks")
    if benchmarks is None:
        return [], [f"{path}: pytest-benchmark file with no benchmarks (\"benchmarks\": null), ignored"]
    if not isinstance(benchmarks, list):
        raise ResultsError(f"{path}: 'benchmarks' must be a list in pytest-benchmark JSON, "
                           f"got {type(benchmarks).__name__}")
    machine = data.get("machine_info") if isinstance(data.get("machine_info"), dict) else {}
    run_id = f"pytest-benchmark:{machine.get('node', '?')}:{data.get('datetime', Path(path).name)}"
    sides, problems, extra_env = _sides(path, benchmarks)
    env = _env(data, machine, extra_env)
    records, pair_problems = records_from_sides(sides, run_id=run_id, source=str(path))
    if not records:
        return [], problems + pair_problems + [f"{path}: no meProp benchmarks found"]
    return [{**env_record(run_id, env), "_source": str(path)}] + records, problems + pair_problems


def _sides(path: Path, benchmarks: list) -> tuple[list[dict], list[str], dict]:
    """One side (dense or meProp timing of one case) per benchmark entry; (sides, problems, env)."""
    sides, problems, extra_env = [], [], {}
    for index, bench in enumerate(benchmarks):
        if not isinstance(bench, dict):
            problems.append(f"{path}: benchmarks[{index}] is not an object, ignored")
            continue
        name = str(bench.get("name", "?"))
        params = bench.get("params") if isinstance(bench.get("params"), dict) else {}
        extra = bench.get("extra_info") if isinstance(bench.get("extra_info"), dict) else {}
        values = {**params, **extra}
        if isinstance(values.get("env"), dict):
            extra_env.update(values["env"])
        side, mode = side_and_mode(values, name)
        if side is None:
            problems.append(f"{path}: {name}: cannot tell dense from meProp (no 'variant' in extra_info), ignored")
            continue
        case = case_from(values)
        if mode:
            case["mode"] = mode
        case.setdefault("measurement", from_pytest_name(f"{bench.get('group') or ''} {name}"))
        case.setdefault("workload", named_in(name))
        if case.get("hidden") is None or case.get("batch") is None or case.get("measurement") is None:
            problems.append(f"{path}: {name}: no hidden/batch/measurement in params or extra_info, ignored")
            continue
        sides.append({"case": case, "side": side, "name": name, "stats": _side_timing(bench, extra, side)})
    return sides, problems, extra_env


def _side_timing(bench: dict, extra: dict, side: str) -> dict | None:
    """The side's timing object: the same-run interleaved one when recorded, else pytest-benchmark's."""
    same_run = extra.get("interleaved") if isinstance(extra.get("interleaved"), dict) else {}
    own = same_run.get(side) if isinstance(same_run.get(side), dict) else None
    if own is not None:
        out = timing(own.get("median_s"), own.get("iqr_s"), own.get("n_samples"), own.get("min_s"),
                     own.get("mean_s"))
        if out is not None and isinstance(own.get("samples_s"), list):
            out["samples_s"] = own["samples_s"]
        return out
    s = bench.get("stats") if isinstance(bench.get("stats"), dict) else {}
    return timing(s.get("median"), s.get("iqr"), s.get("rounds"), s.get("min"), s.get("mean"))


def _env(data: dict, machine: dict, extra_env: dict) -> dict:
    commit = data.get("commit_info") if isinstance(data.get("commit_info"), dict) else {}
    cpu = machine.get("cpu") if isinstance(machine.get("cpu"), dict) else {}
    env = {
        "timestamp": data.get("datetime"), "machine": machine.get("node"), "git_commit": commit.get("id"),
        "python_version": machine.get("python_version"),
        "platform": " ".join(filter(None, (machine.get("system"), machine.get("release")))),
        "cpu_model": cpu.get("brand_raw"), "cpu_cores_logical": cpu.get("count"), "profile": "pytest-benchmark",
    }
    env.update({k: v for k, v in extra_env.items() if env.get(k) is None})
    env["machine"] = f"{env.get('machine') or '?'} [pytest-benchmark]"  # kept apart from interleaved runs
    env["timing"] = ("pytest-benchmark: dense and meProp timed as separate benchmarks (not interleaved), "
                     "except where a case recorded its same-run interleaved ratio (extra_info.interleaved)")
    return env
