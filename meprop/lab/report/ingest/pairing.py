"""Pair single-side timings (pytest-benchmark, asv) into ``bench`` records of the schema.

pytest-benchmark and asv store one number per benchmark: the dense timing and the meProp
timing of a case are separate entries. This module reads the case and the side from an
entry's parameters and names, completes the case with the engine's own defaults
(:class:`meprop.lab.plan.cases.Case`: ``in_features``, ``layers``, ``k`` from ``k_ratio``),
and joins the two sides into one record with :func:`meprop.lab.results.schema.bench_record`,
which derives speedup, ideal and efficiency exactly as for ``meprop bench`` records.
"""

from __future__ import annotations

from meprop.lab.results.schema import CASE_FIELDS, bench_record

__all__ = ["side_and_mode", "case_from", "records_from_sides"]

_MODES = ("per_example", "unified", "random")
_ALIASES = {"n": "hidden", "hidden_size": "hidden", "batch_size": "batch", "ratio": "k_ratio",
            "kratio": "k_ratio", "m": "in_features"}


def side_and_mode(values: dict, name: str) -> tuple[str | None, str | None]:
    """``("dense"|"meprop"|None, mode)`` from a ``variant``-like field or the benchmark's name."""
    for key in ("variant", "impl", "side", "method"):
        value = values.get(key)
        if isinstance(value, str):
            if value == "dense":
                return "dense", values.get("mode")
            if value == "meprop":
                return "meprop", values.get("mode")
            if value in _MODES:
                return "meprop", value
    lowered = name.lower()
    if "dense" in lowered:
        return "dense", values.get("mode")
    if "meprop" in lowered:
        return "meprop", values.get("mode")
    return None, None


def case_from(values: dict, defaults: dict | None = None) -> dict:
    """Case fields from ``values["case"]`` (a ``Case.to_dict()``), flat keys or aliases."""
    case = dict(defaults or {})
    nested = values.get("case")
    if isinstance(nested, dict):
        case.update({k: v for k, v in nested.items() if k in CASE_FIELDS})
    for key, value in values.items():
        key = _ALIASES.get(key, key)
        if key in CASE_FIELDS and not (isinstance(nested, dict) and key in nested):
            case[key] = value
    return case


def _complete(case: dict) -> dict:
    """Fill the engine's defaults in; a case the engine refuses is kept as given."""
    from meprop.checks import resolve_k
    from meprop.lab.plan.cases import Case
    from meprop.lab.workloads import REGISTRY, k_width

    case = dict(case)
    if case.get("k") is None and case.get("k_ratio") and case.get("hidden"):
        try:
            width = k_width(case["workload"], case["hidden"]) if case.get("workload") in REGISTRY \
                else case["hidden"]
            case["k"] = resolve_k(None, case["k_ratio"], width)
        except (TypeError, ValueError):
            pass  # kept as given; the record check names the bad field
    try:
        full = Case.from_dict({k: v for k, v in case.items() if v is not None and k != "k_ratio"}).to_dict()
    except (TypeError, ValueError):
        full = {f: case.get(f) for f in CASE_FIELDS}
        if full["k_ratio"] is None and isinstance(full["k"], int) and isinstance(full["hidden"], int) \
                and full["hidden"] > 0:
            full["k_ratio"] = full["k"] / full["hidden"]
    return full


def records_from_sides(sides: list[dict], *, run_id: str, source: str) -> tuple[list[dict], list[str]]:
    """Pair ``sides`` into ``bench`` records; returns (records, problems).

    Each side: ``{"case": {...}, "side": "dense"|"meprop", "stats": {...}|None, "name": str,
    "peak_bytes": int|None}``. A meProp side is paired with the dense side whose non-null
    case fields all equal its own (a dense timing may carry no k or mode), preferring the
    one that agrees on most fields; without one the record has ``dense: null``.
    """
    for item in sides:
        item["case"] = _complete(item["case"])
    sides = _merge_peaks(sides)
    dense = [s for s in sides if s["side"] == "dense"]
    problems, records = [], []
    for item in (s for s in sides if s["side"] == "meprop"):
        case = item["case"]
        matches = [d for d in dense
                   if all(case.get(f) == v for f, v in d["case"].items() if v is not None and f in case)]
        best = max(matches, key=lambda d: sum(v is not None for v in d["case"].values()), default=None)
        if best is None:
            problems.append(f"{source}: {item['name']}: no dense timing of the same case")
        records.append(_record(case, best, item, run_id=run_id, source=source))
    if dense and not records:
        problems.append(f"{source}: only dense timings, no meProp timings to compare")
    return records, problems


def _merge_peaks(sides: list[dict]) -> list[dict]:
    """Attach memory-only entries (no timing) to the timing entry of the same case and side."""
    def key(item: dict) -> tuple:
        return item["side"], repr(sorted(item["case"].items()))  # repr: values may be unhashable

    timed = {key(s): s for s in sides if s["stats"] is not None}
    out = []
    for item in sides:
        if item["stats"] is None and item.get("peak_bytes") is not None:
            target = timed.get(key(item))
            if target is not None:
                target["peak_bytes"] = item["peak_bytes"]
                continue
        out.append(item)
    return out


def _record(case: dict, dense_side: dict | None, meprop_side: dict, *, run_id: str, source: str) -> dict:
    dense = dense_side["stats"] if dense_side else None
    meprop = meprop_side["stats"]
    peaks = (dense_side or {}).get("peak_bytes"), meprop_side.get("peak_bytes")
    peak = None
    if any(p is not None for p in peaks):
        kind = "cpu_rss_delta" if str(case.get("device", "cpu")).startswith("cpu") else "cuda_max_allocated"
        peak = {"dense_bytes": peaks[0], "meprop_bytes": peaks[1], "kind": kind}
    key = "/".join(f"{f}={case.get(f)}" for f in CASE_FIELDS)
    record = bench_record(
        run_id, key=key, case=case, dense=dense, meprop=meprop,
        status="ok" if meprop or peak else "skipped",
        reason=None if meprop else ("peak memory only (no timing)" if peak else "no meProp timing"),
        peak_memory=peak,
    )
    return {**record, "_source": source}
