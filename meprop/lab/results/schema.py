"""The results format, defined once: record types, case fields and derived numbers.

Every record meprop writes or reads is a JSON object of schema ``meprop.results/1``
(docs/results_schema.md): an ``env`` record per run (the environment snapshot), then
``bench`` records (one per case: dense and meProp timings of one measurement) or
``train`` records (one per epoch of a paper experiment). The schema string, the record
types, the case fields, the measurements, the noise threshold and the derived numbers
(docs/design.md, "What the numbers mean") live here and nowhere else:

- **speedup** = dense median / meProp median (both from the same run);
- **ideal** = n / k (hidden size over kept entries): linear-only backprop's ceiling;
- **efficiency** = speedup / ideal;
- a timing is **noisy** when its IQR exceeds :data:`NOISE_THRESHOLD` of its median;
- **speedup_ci**: the speedup's confidence interval (:mod:`meprop.lab.results.stats`, a seeded
  bootstrap over both sides' ``samples_s``).

The record builders (:func:`env_record`, :func:`bench_record`, :func:`train_record`) are
used by every writer (``meprop bench``, ``meprop train``) and by the report's readers of
foreign formats (pytest-benchmark, asv), so all records have one shape.
:func:`record_problem` checks a record's shape and field types.
"""

from __future__ import annotations

import math
import numbers

from meprop.lab.results.stats import speedup_interval
from meprop.lab.workloads import REGISTRY, k_width
from meprop.lab.measurements import MEASUREMENT_NAMES, REGISTRY as MEASUREMENT_REGISTRY

__all__ = [
    "SCHEMA",
    "SCHEMA_PREFIX",
    "RECORD_TYPES",
    "REQUIRED_FIELDS",
    "CASE_FIELDS",
    "CASE_FIELD_DEFAULTS",
    "MEASUREMENTS",
    "MEASUREMENT_TITLES",
    "STAT_FIELDS",
    "STATUSES",
    "NOISE_THRESHOLD",
    "speedup_of",
    "ideal_of",
    "efficiency_of",
    "rel_spread",
    "noisy_of",
    "above_ideal_of",
    "amdahl_limit_of",
    "ABOVE_IDEAL_NOTE",
    "timing",
    "env_record",
    "bench_record",
    "train_record",
    "convergence_record",
    "CONVERGENCE_STATUSES",
    "schema_problem",
    "record_problem",
]

#: The schema name and version written into every record (readers accept minor versions 1.x).
SCHEMA = "meprop.results/1"
#: ``"meprop.results/"``: what every version of this format starts with.
SCHEMA_PREFIX = SCHEMA.rsplit("/", 1)[0] + "/"
_MAJOR = SCHEMA.rsplit("/", 1)[1]
RECORD_TYPES = ("env", "bench", "train", "convergence")
#: Fields each record type must have (besides ``schema``, ``type`` and ``run_id``).
REQUIRED_FIELDS = {"env": ("env",), "bench": ("key", "case", "status"), "train": (),
                   "convergence": ("key", "run_key", "label", "step", "status")}
#: ``status`` of a ``convergence`` record: an evaluation, or the variant stopped on a
#: non-finite loss / evaluation (``diverged``) or a failing model (``failed``).
CONVERGENCE_STATUSES = ("ok", "diverged", "failed")
#: The ``case`` object of a ``bench`` record.
CASE_FIELDS = ("workload", "measurement", "hidden", "in_features", "layers", "classes", "k",
               "k_ratio", "batch", "device", "dtype", "mode", "threads", "optimizer", "model",
               "adam", "world_size")
#: What a ``case`` lacking one of these fields ran: they were added after the format's first
#: version (the meProp side's optimizer mode; torch's Adam implementation on both sides;
#: the number of processes, 1 except for ``ddp_step``).
CASE_FIELD_DEFAULTS = {"optimizer": "lazy", "adam": "default", "world_size": 1}
#: forward pass; backward of the linear layer(s) alone for a fixed output gradient;
#: the whole ``loss.backward()``; forward + backward + optimizer step; that step under
#: DistributedDataParallel on ``world_size`` local processes (:mod:`meprop.lab.engine.ddp`).
MEASUREMENTS = MEASUREMENT_NAMES
MEASUREMENT_TITLES = {name: kind.title for name, kind in MEASUREMENT_REGISTRY.items()}
#: The statistics of a timing object (``dense`` / ``meprop``), seconds per call (a timing
#: may also carry ``samples_s``, the per-call seconds of each sample, for the interval).
STAT_FIELDS = ("median_s", "iqr_s", "n_samples", "min_s", "mean_s")
STATUSES = ("ok", "skipped")
#: What a speedup above n / k means, for tables and figures.
ABOVE_IDEAL_NOTE = "above the ideal n/k: the dense baseline is broken (e.g. page faults), not meProp magic"
#: A timing whose IQR / median exceeds this is flagged ``noisy``.
NOISE_THRESHOLD = 0.10

_INT_CASE_FIELDS = ("hidden", "in_features", "layers", "classes", "k", "batch", "threads", "world_size")
_STR_CASE_FIELDS = ("workload", "measurement", "device", "dtype", "mode", "optimizer", "model", "adam")
_NUMBER_FIELDS = ("speedup", "ideal", "efficiency", "wall_s")


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


# ----------------------------------------------------------------------------- derived numbers
def speedup_of(dense_median_s: float | None, meprop_median_s: float | None) -> float | None:
    """dense / meProp median; None when either is missing or the meProp median is not > 0."""
    if not (_is_number(dense_median_s) and _is_number(meprop_median_s)):
        return None
    if not meprop_median_s > 0 or not math.isfinite(dense_median_s):
        return None
    return float(dense_median_s) / float(meprop_median_s)


def ideal_of(hidden: int | None, k: int | None) -> float | None:
    """n / k: the ideal linear-only backprop speedup; None without a positive k."""
    if not (_is_number(hidden) and _is_number(k)) or not k > 0 or not hidden > 0:
        return None
    return hidden / k


def efficiency_of(speedup: float | None, ideal: float | None) -> float | None:
    """speedup / ideal; None when either is missing."""
    if speedup is None or not ideal:
        return None
    return speedup / ideal


def above_ideal_of(speedup: float | None, ideal: float | None) -> bool:
    """True when ``speedup`` beats the ideal n/k: meProp cannot do that, so the dense
    baseline is broken (e.g. it page-faults a fresh buffer on every call)."""
    return speedup is not None and bool(ideal) and speedup > ideal


def rel_spread(stats: dict | None) -> float | None:
    """IQR / median of a timing object (inf for a median of 0); None without an IQR."""
    if not isinstance(stats, dict) or not _is_number(stats.get("iqr_s")):
        return None
    median = stats.get("median_s")
    if not _is_number(median) or not median > 0:
        return math.inf
    return stats["iqr_s"] / median


def noisy_of(*stats: dict | None) -> bool | None:
    """True when any timing's spread exceeds :data:`NOISE_THRESHOLD`; None when none has an IQR."""
    spreads = [s for s in map(rel_spread, stats) if s is not None]
    return any(s > NOISE_THRESHOLD for s in spreads) if spreads else None


def timing(median, iqr=None, n=None, minimum=None, mean=None, number=None) -> dict | None:
    """A timing object (seconds per call), or None when there is no finite median."""
    if not _is_number(median) or not math.isfinite(median):
        return None
    out = {"median_s": float(median), "iqr_s": iqr, "n_samples": n, "min_s": minimum, "mean_s": mean}
    if number is not None:
        out["number"] = number
    return out


# ----------------------------------------------------------------------------- record builders
def env_record(run_id: str, env: dict) -> dict:
    """The record opening a run: its environment snapshot."""
    return {"schema": SCHEMA, "type": "env", "run_id": run_id, "env": env}


def bench_record(run_id: str, *, key: str, case: dict, dense: dict | None = None,
                 meprop: dict | None = None, status: str = "ok", reason: str | None = None,
                 peak_memory: dict | None = None, wall_s: float | None = None,
                 noisy: bool | None = None, formulations: dict | None = None,
                 tuning: dict | None = None, optimizers: dict | None = None, phases: dict | None = None,
                 ddp: dict | None = None) -> dict:
    """A ``bench`` record; speedup, its interval, ideal and efficiency are derived here from the timings.

    ``case`` is the case object (:data:`CASE_FIELDS`), ``dense`` / ``meprop`` timing
    objects (:func:`timing`) or None (skipped). ``noisy`` None: derived from the timings.
    ``formulations``: how many meProp linear backwards each formulation ran while the case
    was timed (:func:`meprop.kernels.formulation_counts`; None when none ran). ``tuning``:
    where those backwards' formulation choices came from, counted by source (``measured``
    here, ``cached`` from this machine's tuning cache, ``model``: the cost model, tuning off).
    Training steps also carry ``optimizers`` (``{"dense": name, "meprop": name}``) and
    ``phases`` (``{"dense"|"meprop": {"forward_s", "backward_s", "optimizer_s"}}``, medians of
    separately probed steps), from which ``amdahl_limit`` is derived (:func:`amdahl_limit_of`).
    ``ddp_step`` records also carry ``ddp``: the three sides' timings and bytes sent per rank
    (:mod:`meprop.lab.engine.ddp`; docs/results_schema.md).
    """
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    speedup = speedup_of((dense or {}).get("median_s"), (meprop or {}).get("median_s"))
    width = case.get("hidden")
    if width is not None and case.get("workload") in REGISTRY:
        width = k_width(case["workload"], width)  # the LSTM's k counts among its 4·hidden gate entries
    ideal = ideal_of(width, case.get("k"))
    return {
        "schema": SCHEMA, "type": "bench", "run_id": run_id, "key": key, "case": case,
        "status": status, "reason": reason, "dense": dense, "meprop": meprop,
        "speedup": speedup, "ideal": ideal, "efficiency": efficiency_of(speedup, ideal),
        "speedup_ci": speedup_interval(dense, meprop) if speedup is not None else None,
        "noisy": noisy_of(dense, meprop) if noisy is None else noisy,
        "peak_memory": peak_memory, "wall_s": wall_s, "formulations": formulations,
        **({"tuning": tuning} if tuning is not None else {}),
        **({"optimizers": optimizers} if optimizers is not None else {}),
        **({"phases": phases, "amdahl_limit": amdahl_limit_of(dense, phases)}
           if phases is not None else {}),
        **({"ddp": ddp} if ddp is not None else {}),
    }


def amdahl_limit_of(dense: dict | None, phases: dict | None) -> float | None:
    """The step speedup meProp would reach with a free backward: the dense step's median over
    meProp's forward + optimizer phases (zero_grad, forward, loss; clip and step)."""
    meprop = (phases or {}).get("meprop") or {}
    rest = [meprop.get(name) for name in ("forward_s", "optimizer_s")]
    if (dense or {}).get("median_s") is None or any(not _is_number(v) for v in rest) or not sum(rest):
        return None
    return dense["median_s"] / sum(rest)


def train_record(run_id: str, **fields) -> dict:
    """A ``train`` record (one epoch of a paper experiment); ``fields`` as docs/results_schema.md."""
    return {"schema": SCHEMA, "type": "train", "run_id": run_id, **fields}


def convergence_record(run_id: str, **fields) -> dict:
    """A ``convergence`` record (one evaluation of one variant of a time-to-accuracy run);
    ``fields`` as docs/results_schema.md."""
    status = fields.get("status")
    if status not in CONVERGENCE_STATUSES:
        raise ValueError(f"status must be one of {CONVERGENCE_STATUSES}, got {status!r}")
    return {"schema": SCHEMA, "type": "convergence", "run_id": run_id, **fields}


# ----------------------------------------------------------------------------- checks
def schema_problem(record: object) -> str | None:
    """Why ``record`` is not a readable record of this schema (None: it is).

    Checks the envelope: a JSON object, a ``schema`` of this major version, a known
    ``type``, a ``run_id`` string and the type's required fields.
    """
    if not isinstance(record, dict) or "schema" not in record:
        return f"not a meprop results record (no 'schema' field); expected {SCHEMA!r}"
    schema = record["schema"]
    if not isinstance(schema, str) or not schema.startswith(SCHEMA_PREFIX):
        return f"foreign schema {schema!r}; expected {SCHEMA!r}"
    if schema[len(SCHEMA_PREFIX):].split(".")[0] != _MAJOR:
        return f"unsupported schema version {schema!r}; this meprop reads {SCHEMA!r}"
    kind = record.get("type")
    if kind not in RECORD_TYPES:
        return f"unknown record type {kind!r}; expected one of {RECORD_TYPES}"
    if not isinstance(record.get("run_id"), str):
        return "record has no 'run_id' string"
    missing = [name for name in REQUIRED_FIELDS[kind] if name not in record]
    if missing:
        return f"{kind} record lacks field(s) {missing}"
    return None


def record_problem(record: dict) -> str | None:
    """Why the fields of a well-formed record have the wrong types (None: they are fine).

    ``env``: ``env`` is an object. ``bench``: ``case`` is an object whose sizes are
    ints, ``k_ratio`` a number and names strings; ``status`` is known; the timings are
    objects of numbers; speedup/ideal/efficiency are numbers or null.
    """
    kind = record.get("type")
    if kind == "env":
        return None if isinstance(record.get("env"), dict) else "field 'env' must be an object"
    if kind == "train":
        return None
    if kind == "convergence":
        return _convergence_problem(record)
    case = record.get("case")
    if not isinstance(case, dict):
        return f"field 'case' must be an object, got {type(case).__name__} {case!r:.60}"
    for name in _INT_CASE_FIELDS:
        value = case.get(name)
        if value is not None and (not _is_number(value) or value != int(value)):
            return f"case field {name!r} must be an integer, got {value!r:.60}"
    for name in _STR_CASE_FIELDS:
        if case.get(name) is not None and not isinstance(case[name], str):
            return f"case field {name!r} must be a string, got {case[name]!r:.60}"
    if case.get("k_ratio") is not None and not _is_number(case["k_ratio"]):
        return f"case field 'k_ratio' must be a number, got {case['k_ratio']!r:.60}"
    if record.get("status") not in STATUSES:
        return f"field 'status' must be one of {STATUSES}, got {record.get('status')!r:.60}"
    for name in _NUMBER_FIELDS:
        if record.get(name) is not None and not _is_number(record[name]):
            return f"field {name!r} must be a number or null, got {record[name]!r:.60}"
    for side in ("dense", "meprop", "peak_memory"):
        value = record.get(side)
        if value is not None and not isinstance(value, dict):
            return f"field {side!r} must be an object or null, got {value!r:.60}"
        for stat in STAT_FIELDS if side != "peak_memory" else ("dense_bytes", "meprop_bytes"):
            if value and value.get(stat) is not None and not _is_number(value[stat]):
                return f"field {side}.{stat} must be a number, got {value[stat]!r:.60}"
    return None


def _convergence_problem(record: dict) -> str | None:
    if record.get("status") not in CONVERGENCE_STATUSES:
        return f"field 'status' must be one of {CONVERGENCE_STATUSES}, got {record.get('status')!r:.60}"
    step = record.get("step")
    if not _is_number(step) or step != int(step) or step < 0:
        return f"field 'step' must be a non-negative integer, got {step!r:.60}"
    for name in ("train_time_s", "dev_metric", "train_loss", "examples"):
        if record.get(name) is not None and not _is_number(record[name]):
            return f"field {name!r} must be a number or null, got {record[name]!r:.60}"
    return None
