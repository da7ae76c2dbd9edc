"""Map asv results (``.asv/results/<machine>/<commit>-<env>.json``) to schema records.

Read with asv's own ``Results.load``. Parameter names come from ``benchmarks.json`` at
the results root, machine details from ``machine.json`` beside the file. The project's
suite (``benchmarks/``) reports ``track_dense`` / ``track_meprop`` (seconds, from the engine's
interleaved timer) per class, and ``track_dense_bytes`` / ``track_meprop_bytes`` (peak
memory); :data:`ASV_CLASSES` maps its classes to the case fields they fix (workload,
measurement, and e.g. ``adam="fused"`` for ``TrainStepFusedAdam``).
``track_relative_time`` (and ``track_speedup`` of older commits) is not read: the speedup
is recomputed from the two medians. ``time_*`` benchmarks are read too (median, IQR from
asv's ``q_25``/``q_75``). asv rows carry no spread for
``track_*`` values, so their noisy flag is unknown. The machine is labelled
``<asv machine> [asv]``, kept apart from ``meprop bench`` rows of the same machine. asv's
own date of a result is the *commit's* date: it goes to the environment's ``commit_date``;
the ``timestamp`` (when it was measured) is the latest start time asv recorded for the
file's benchmarks, where it has one.
"""

from __future__ import annotations

import ast
import itertools
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from meprop.lab.report.ingest.pairing import case_from, records_from_sides, side_and_mode
from meprop.lab.results.schema import env_record, timing
from meprop.lab.results.store import ResultsError

__all__ = ["ASV_CLASSES", "read_asv"]

#: asv class name -> the case fields it fixes, for the suite in benchmarks/.
ASV_CLASSES = {
    "Forward": {"workload": "linear", "measurement": "forward"},
    "LinearBackward": {"workload": "linear", "measurement": "linear_backward"},
    "OverallBackward": {"workload": "mlp", "measurement": "overall_backward"},
    "TrainStep": {"workload": "mlp", "measurement": "train_step"},
    "TrainStepFusedAdam": {"workload": "mlp", "measurement": "train_step", "adam": "fused"},
    "LstmStep": {"workload": "lstm", "measurement": "train_step"},
    "TransformerStep": {"workload": "transformer", "measurement": "train_step"},
    "PeakMemory": {"workload": "mlp", "measurement": "overall_backward"},
}


def _literal(value: Any) -> Any:
    """asv stores parameter values as their repr (``"'cpu'"``, ``"500"``)."""
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def read_asv(path: Path) -> tuple[list[dict], list[str]]:
    """(records, problems) for one asv results file."""
    try:
        from asv.results import Results
    except ImportError:
        raise ResultsError(f"{path} is an asv results file; reading it needs asv (pip install asv)") from None
    path = Path(path)
    try:
        results = Results.load(str(path))
    except Exception as error:  # asv raises its own UserError / KeyError types
        raise ResultsError(f"cannot read asv results file {str(path)!r}: {error}") from None
    benchmarks = _read_json(path.parent.parent / "benchmarks.json")
    benchmarks = benchmarks if isinstance(benchmarks, dict) else {}
    machine = _read_json(path.parent / "machine.json")
    machine = machine if isinstance(machine, dict) else {}
    machine_name = results.params.get("machine", path.parent.name)
    run_id = f"asv:{machine_name}:{results.commit_hash[:8]}:{results.env_name}"
    sides, problems, unused = [], [], 0
    for name in sorted(results.get_all_result_keys()):
        if name.split(".")[-1] == "track_relative_time":  # by design: recomputed from the two times
            continue
        if name.split(".")[-1] == "track_speedup":  # older commits: inverted labels, worth a note
            unused += 1
            continue
        sides += _sides_of(results, name, benchmarks, path, problems)
    if unused:
        problems.append(f"{path}: {unused} track_speedup benchmark(s) of an older suite not read; "
                        "speedups are recomputed from track_dense / track_meprop")
    records, pair_problems = records_from_sides(sides, run_id=run_id, source=str(path))
    if not records:
        return [], problems + pair_problems + [f"{path}: no meProp benchmarks found"]
    env = _env(results, machine, machine_name)
    return [{**env_record(run_id, env), "_source": str(path)}] + records, problems + pair_problems


def _sides_of(results, name: str, benchmarks: dict, path: Path, problems: list[str]) -> list[dict]:
    """The dense / meProp sides of one asv benchmark, one per parameter combination."""
    parts = name.split(".")
    method, cls = parts[-1], parts[-2] if len(parts) > 1 else ""
    params = results.get_result_params(name) or []
    names = (benchmarks.get(name) or {}).get("param_names") or []
    if len(names) != len(params):
        problems.append(f"{path}: {name}: parameter names unknown (no benchmarks.json beside the "
                        "machine folder), ignored")
        return []
    fixed = ASV_CLASSES.get(cls)
    try:
        values_list = results.get_result_value(name, params)
        stats_list = results.get_result_stats(name, params)
    except (TypeError, ValueError, KeyError, IndexError):  # e.g. a scalar where a list belongs
        values_list = stats_list = None
    if not isinstance(values_list, list) and values_list is not None:  # unparametrized: a scalar
        values_list = [values_list] if not params else None
    if values_list is None or (isinstance(stats_list, list) and len(stats_list) != len(values_list)):
        problems.append(f"{path}: {name}: a single value where one per parameter combination was "
                        "expected, ignored")
        return []
    if not isinstance(stats_list, list):
        stats_list = [None] * len(values_list)
    sides = []
    for combo, value, st in zip(itertools.product(*params), values_list, stats_list):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
            continue  # n/a in asv: impossible combination or failure
        values = {n: _literal(v) for n, v in zip(names, combo)}
        label = f"{name}({', '.join(f'{k}={v}' for k, v in values.items())})"
        side, mode = side_and_mode(values, method)
        if side is None or fixed is None:
            problems.append(f"{path}: {label}: not a dense/meProp benchmark of this suite, ignored")
            continue
        case = case_from(values, dict(fixed))
        if mode:
            case["mode"] = mode
        if method.endswith("_bytes"):
            sides.append({"case": case, "side": side, "name": label, "stats": None, "peak_bytes": value})
            continue
        st = st if isinstance(st, dict) else {}
        iqr = st["q_75"] - st["q_25"] if st.get("q_75") is not None and st.get("q_25") is not None else None
        sides.append({"case": case, "side": side, "name": label, "stats": timing(value, iqr, st.get("repeat"))})
    return sides


def _iso(milliseconds) -> str | None:
    if not isinstance(milliseconds, (int, float)) or isinstance(milliseconds, bool):
        return None
    return datetime.fromtimestamp(milliseconds / 1000, tz=timezone.utc).isoformat()


def _env(results, machine: dict, machine_name: str) -> dict:
    started = [v for v in (getattr(results, "started_at", None) or {}).values()
               if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return {
        "timestamp": _iso(max(started)) if started else None,  # when measured
        "commit_date": _iso(results.date) if _iso(results.date) else results.date,
        "machine": f"{machine_name} [asv]", "git_commit": results.commit_hash,
        "python_version": results.params.get("python"), "platform": machine.get("os"),
        "cpu_model": machine.get("cpu"), "cpu_cores_logical": _literal(machine.get("num_cpu")),
        "ram_bytes": _literal(machine.get("ram")), "profile": f"asv ({results.env_name})",
        "timing": "asv: track_* values from the engine's interleaved timer, one asv benchmark per side",
    }
