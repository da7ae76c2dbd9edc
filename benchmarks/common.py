"""Shared plumbing of the asv suite: the parameter grid and a thin layer over the lab's engine.

The suite measures what ``meprop bench`` measures (docs/design.md, "What the numbers mean"),
with the same code: :func:`meprop.lab.ops.build.build` makes the operation and
:func:`meprop.lab.engine.timer.time_pair` times dense and meProp interleaved in one process.
asv_runner >= 0.3 re-runs ``setup`` before every timed call, so the suite does not use
asv's own ``time_`` benchmarks; each class measures its whole grid once in
``setup_cache`` and reports ``track_`` values (seconds, and meProp's time relative to
dense: a ratio that, like every asv value, is better when lower).

The grid (asv ``params``) is read once at import from environment variables, so it is
the same for every commit of one ``asv run``:

- ``MEPROP_ASV_GRID``: ``quick`` (default: a few minutes on 2 CPU cores) or ``wide``
  (the ``meprop bench --profile quick`` axes, both top-k modes; much longer).
- ``MEPROP_ASV_HIDDEN``, ``MEPROP_ASV_K_RATIO``, ``MEPROP_ASV_BATCH``, ``MEPROP_ASV_MODE``,
  ``MEPROP_ASV_DEVICE``: comma-separated values replacing one axis of the grid.
- ``MEPROP_ASV_THREADS``: torch threads while timing (default 1: on a shared machine
  several threads per process stall at OpenMP barriers whenever other load runs, and
  the ratios swing by 2x and more; ``all`` uses torch's own count, = cores).
- ``MEPROP_ASV_BUDGET``: seconds of sampling per case and round, dense and meProp
  together (0.3).
- ``MEPROP_ASV_CLOCK``: ``cpu`` (default): single-threaded CPU cases are timed in the
  process's CPU seconds, which other load does not stretch (two runs of identical code
  on a loaded 2-core machine moved wall-clock medians by 2-4x); ``wall``: wall seconds.
- ``MEPROP_ASV_ROUNDS``: rounds over the whole grid (5), each in a fresh process; each
  case is timed once per round and a tracked value is the median over the rounds, so
  one burst of load, or one process's unlucky memory layout, moves one round, not the value.

Tracked values are rounded to :data:`SIGNIFICANT` significant digits: what the
measurement can tell apart, so ``asv compare`` prints ``0.103`` rather than
``0.10276941...``.

Impossible combinations (``cuda`` without a GPU, a case too large for memory) raise
``NotImplementedError`` in ``setup``, so asv shows them as n/a. Nothing here touches
CUDA at import time. Names in this module start with ``_`` or avoid asv's benchmark
prefixes (``time_``, ``track_``, ``mem_``, ``peakmem_``) so discovery ignores them.
"""

from __future__ import annotations

import abc
import importlib
import itertools
import os

from meprop.selection import MODES


def _first_module(*names: str):
    """The first of ``names`` that imports: asv installs older commits, whose modules had other paths."""
    for name in names:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError:
            continue
    raise ModuleNotFoundError(f"none of {names} can be imported")


#: where a commit keeps the engine's modules: the lab's floors (spec, ops, engine) today;
#: ``meprop.lab.bench`` before them; ``meprop.bench`` before the library/lab split
_LAYOUTS = ("meprop.lab.{new}", "meprop.lab.bench.{old}", "meprop.bench.{old}")


def _engine_module(new: str, old: str):
    return _first_module(*(layout.format(new=new, old=old) for layout in _LAYOUTS))


_checks = _first_module("meprop.checks", "meprop._checks")
check_k_ratio = _checks.check_k_ratio
_cases = _engine_module("spec.cases", "cases")
_timer = _engine_module("engine.timer", "timer")
_workloads = _engine_module("ops.build", "workloads")

__all__ = [
    "GRIDS",
    "PARAM_NAMES",
    "PARAMS",
    "THREADS",
    "BUDGET_S",
    "ROUNDS",
    "CLOCK",
    "SIGNIFICANT",
    "SETUP_CACHE_TIMEOUT",
    "read_grid",
    "make_case",
    "check_possible",
    "measure_grid",
    "measure_round",
    "build_pair",
    "peak_bytes",
    "release_large_blocks",
    "lookup",
    "PairSuite",
]

PARAM_NAMES = ["hidden", "k_ratio", "batch", "mode", "device"]

#: Named grids: one list of values per entry of PARAM_NAMES.
GRIDS: dict[str, dict[str, list]] = {
    "quick": {
        "hidden": [1024, 4096],
        "k_ratio": [0.01, 0.1],
        "batch": [64],
        "mode": ["unified"],
        "device": ["cpu", "cuda"],
    },
    "wide": {
        "hidden": [500, 1024, 4096],
        "k_ratio": [0.01, 0.04, 0.1, 0.5],
        "batch": [1, 64, 1024],
        "mode": ["unified", "per_example"],
        "device": ["cpu", "cuda"],
    },
}

_ENV = {name: f"MEPROP_ASV_{name.upper()}" for name in PARAM_NAMES}


def _split(env_name: str, raw: str, convert) -> list:
    values = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            values.append(convert(item))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{env_name}: bad value {item!r} in {raw!r}: {exc}") from None
    if not values:
        raise ValueError(f"{env_name} must list at least one value, got {raw!r}")
    return values


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be a positive int, got {value}")
    return value


def _mode(text: str) -> str:
    if text not in MODES:
        raise ValueError(f"must be one of {list(MODES)}")
    return text


def read_grid(environ: dict | None = None) -> dict[str, list]:
    """The grid named by ``MEPROP_ASV_GRID`` with the per-axis overrides applied."""
    environ = os.environ if environ is None else environ
    name = environ.get("MEPROP_ASV_GRID", "quick")
    if name not in GRIDS:
        raise ValueError(f"MEPROP_ASV_GRID must be one of {sorted(GRIDS)}, got {name!r}")
    grid = {axis: list(values) for axis, values in GRIDS[name].items()}
    converters = {
        "hidden": _positive_int,
        "k_ratio": lambda s: check_k_ratio(float(s), "k_ratio"),
        "batch": _positive_int,
        "mode": _mode,
        "device": _cases.check_device,
    }
    for axis, env_name in _ENV.items():
        if env_name in environ:
            grid[axis] = _split(env_name, environ[env_name], converters[axis])
    return grid


def _read_threads(environ) -> int | None:
    raw = environ.get("MEPROP_ASV_THREADS", "1")
    if raw == "all":
        return None
    try:
        return _positive_int(raw)
    except ValueError:
        raise ValueError(f"MEPROP_ASV_THREADS must be a positive int or 'all', got {raw!r}") from None


def _read_clock(environ) -> str:
    raw = environ.get("MEPROP_ASV_CLOCK", "cpu")
    if raw not in ("cpu", "wall"):
        raise ValueError(f"MEPROP_ASV_CLOCK must be 'cpu' or 'wall', got {raw!r}")
    return raw


def _read_rounds(environ) -> int:
    raw = environ.get("MEPROP_ASV_ROUNDS", "5")
    try:
        return _positive_int(raw)
    except ValueError:
        raise ValueError(f"MEPROP_ASV_ROUNDS must be a positive int, got {raw!r}") from None


def _read_budget(environ) -> float:
    raw = environ.get("MEPROP_ASV_BUDGET", "0.3")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"MEPROP_ASV_BUDGET must be a positive number of seconds, got {raw!r}")
    return value


_GRID = read_grid()
PARAMS: list[list] = [_GRID[name] for name in PARAM_NAMES]
THREADS: int | None = _read_threads(os.environ)
BUDGET_S: float = _read_budget(os.environ)
ROUNDS: int = _read_rounds(os.environ)
CLOCK: str = _read_clock(os.environ)
#: Significant digits of a tracked value.
SIGNIFICANT = 3
#: asv's limit for one class's setup_cache (the whole grid of one measurement).
SETUP_CACHE_TIMEOUT = 3600


def make_case(workload: str, measurement: str, hidden: int, k_ratio: float, batch: int,
              mode: str, device: str, **fields) -> _cases.Case:
    """The engine's Case for one asv parameter combination (k = round(k_ratio * width), the
    width being hidden, or the LSTM's 4 * hidden gate entries). ``fields``: further Case
    fields (a suite's ``case_fields``); NotImplementedError (asv: n/a) on a commit whose
    Case lacks one."""
    try:
        (case,) = _cases.grid(workload=(workload,), measurement=(measurement,), hidden=(hidden,),
                              k_ratio=(k_ratio,), batch=(batch,), device=(device,), mode=(mode,),
                              threads=THREADS)  # grid() resolves k against the workload's width
        return case.replace(**fields) if fields else case
    except TypeError as exc:  # an older commit: its Case has no such field
        raise NotImplementedError(f"this commit's cases have no field among {sorted(fields)}: {exc}") from exc


def check_possible(case: _cases.Case) -> None:
    """Raise NotImplementedError (asv: n/a) when ``case`` cannot run here.

    Only asks the cheap questions (is the device there?); the engine's own memory
    check runs when the workload is built.
    """
    if case.device.startswith("cuda"):
        import torch  # already imported by meprop; CUDA is first touched here, not at import

        if not torch.cuda.is_available():
            raise NotImplementedError(f"{case.device}: cuda not available")


def _measure(case: _cases.Case) -> dict:
    """Dense and meProp timed interleaved: a dict of floats, or ``{"skipped": reason}``.

    Uses the engine's per-case step (:func:`meprop.lab.engine.runner.run_case`), so a case is
    built, timed, skipped (no CUDA, too large, out of memory) and freed exactly as
    ``meprop bench`` does it. Imported here: the suite still imports on a commit without it.
    """
    try:
        check_possible(case)
    except NotImplementedError as exc:
        return {"skipped": str(exc)}
    runner = _engine_module("engine.runner", "runner")

    _fair_allocator()
    fields = runner.run_case(case, _options(runner, case), measure_memory=False)
    if fields.get("status") == "skipped":
        return {"skipped": fields["reason"]}
    dense, meprop = fields["dense"], fields["meprop"]  # timer.Measurement, per call
    return {
        "dense": dense.median,
        "meprop": meprop.median,
        "relative_time": meprop.median / dense.median,
        "dense_rel_iqr": dense.rel_iqr,
        "meprop_rel_iqr": meprop.rel_iqr,
        "ideal": case.ideal,
    }


def _rounded(value: float, digits: int = SIGNIFICANT) -> float:
    """``value`` to ``digits`` significant digits (``0.10276941`` -> ``0.103``)."""
    return float(f"{value:.{digits}g}")


def _combine(rounds: list[dict]) -> dict:
    """One entry from a case's rounds: the median of each value over the rounds, rounded.

    The relative time is the median of the per-round ratios (each measured interleaved),
    not a ratio of medians taken in different rounds. A case skipped in any round is skipped.
    """
    import statistics

    skipped = [r for r in rounds if "skipped" in r]
    if skipped:
        return skipped[0]
    out = {name: statistics.median(r[name] for r in rounds) for name in rounds[0] if name != "ideal"}
    out = {name: _rounded(value) for name, value in out.items()}
    out["speedup"] = _rounded(1 / out["relative_time"]) if out["relative_time"] > 0 else float("inf")
    out.update(ideal=rounds[0]["ideal"], rounds=len(rounds))
    return out


def _options(runner, case: _cases.Case):
    """The engine's timing options: on :data:`CLOCK` ``cpu``, a single-threaded CPU case is timed
    in the process's CPU seconds (``time.process_time``), which other processes' load on a
    shared machine does not stretch the way it stretches wall time; commits whose engine
    has no clock option time in wall seconds."""
    import time

    if CLOCK == "cpu" and case.device == "cpu" and case.threads == 1:
        try:
            return runner.TimingOptions(budget_s=BUDGET_S, clock=time.process_time)
        except TypeError:  # an older engine
            pass
    return runner.TimingOptions(budget_s=BUDGET_S)


def _fair_allocator() -> None:
    """The suite's default allocator setting (``meprop bench --malloc``), where the commit has it."""
    try:
        apply = _engine_module("engine.allocator", "allocator").apply
    except (ImportError, AttributeError):  # a commit before the setting existed
        return
    apply()


def release_large_blocks() -> None:
    """The memory probes' allocator setting (:func:`meprop.lab.engine.allocator.release_large_blocks`)."""
    try:
        release = _engine_module("engine.allocator", "allocator").release_large_blocks
    except (ImportError, AttributeError):  # a commit before the setting existed
        return
    release()


def measure_grid(workload: str, measurement: str, params: list[list] | None = None,
                 rounds: int | None = None, **fields) -> dict:
    """Measure every combination of ``params`` (default :data:`PARAMS`) for one measurement.

    Returns ``{param tuple: result dict}`` (see :func:`lookup`); called from each class's
    ``setup_cache``, so each case is measured once per commit and environment: in
    ``rounds`` (default :data:`ROUNDS`) passes over the whole grid, combined by
    :func:`_combine`. Each round runs in a fresh Python process (:func:`measure_round`
    there), as asv's own ``processes`` does for ``time_`` benchmarks: a process's heap
    layout, page placement and allocator state move all its timings together, so rounds
    in one process would share that luck. ``fields``: further Case fields for every
    combination (a suite's ``case_fields``).
    """
    params = PARAMS if params is None else params
    rounds = ROUNDS if rounds is None else rounds
    combos = list(itertools.product(*params))
    measured: dict[tuple, list] = {combo: [] for combo in combos}
    for _ in range(rounds):  # round-robin: a burst of load hits one round of a case, not all
        for combo, entry in zip(combos, _round_in_fresh_process(workload, measurement, combos, fields)):
            measured[combo].append(entry)
    return {combo: _combine(entries) for combo, entries in measured.items()}


def measure_round(workload: str, measurement: str, combos: list[tuple], fields: dict) -> list[dict]:
    """One pass over ``combos`` in this process: a :func:`_measure` entry for each."""
    out = []
    for combo in combos:
        try:
            case = make_case(workload, measurement, *combo, **fields)
        except NotImplementedError as exc:
            out.append({"skipped": str(exc)})
            continue
        out.append(_measure(case))
    return out


#: Run in the child: measure_round on the spec file's grid, the entries to the result file.
_CHILD = (
    "import json, sys; sys.path.insert(0, sys.argv[1]); from benchmarks import common; "
    "spec = json.load(open(sys.argv[2])); common.BUDGET_S = spec['budget_s']; "
    "entries = common.measure_round(spec['workload'], spec['measurement'], "
    "[tuple(c) for c in spec['combos']], spec['fields']); "
    "json.dump(entries, open(sys.argv[3], 'w'))"
)


def _round_in_fresh_process(workload: str, measurement: str, combos: list[tuple], fields: dict) -> list[dict]:
    """:func:`measure_round` in a new interpreter (same executable, environment and budget)."""
    import json
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])  # the folder holding the benchmarks package
    with tempfile.TemporaryDirectory(prefix="meprop-asv-") as tmp:
        spec, result = Path(tmp, "spec.json"), Path(tmp, "result.json")
        spec.write_text(json.dumps({"workload": workload, "measurement": measurement,
                                    "combos": [list(c) for c in combos], "fields": fields,
                                    "budget_s": BUDGET_S}))
        proc = subprocess.run([sys.executable, "-c", _CHILD, root, str(spec), str(result)],
                              capture_output=True, text=True, timeout=SETUP_CACHE_TIMEOUT)
        if proc.returncode != 0 or not result.exists():
            raise RuntimeError(f"measuring {workload}/{measurement} in a child process failed "
                               f"(exit {proc.returncode}): {proc.stderr[-3000:]}")
        return json.loads(result.read_text())


def build_pair(case: _cases.Case) -> dict:
    """``{"dense": fn, "meprop": fn}`` for ``case``; NotImplementedError (asv: n/a) if impossible."""
    check_possible(case)
    return {variant: _workloads.build(case, variant) for variant in _workloads.VARIANTS}


def peak_bytes(fn, case: _cases.Case) -> int:
    """Extra bytes one ``fn()`` needs beyond what is allocated before it (after a warm-up call).

    The engine's :func:`meprop.lab.engine.runner.peak_memory` (imported here, so a commit
    without it fails only this measurement).
    """
    peak_memory = _engine_module("engine.runner", "runner").peak_memory

    with _timer.num_threads(case.threads):
        fn()  # warm-up: lazily created buffers are not part of the steady state
        nbytes, _kind = peak_memory(fn, case.device)
    return nbytes


def lookup(results: dict, workload: str, measurement: str, params: tuple, **fields) -> dict:
    """The measured entry for ``params``; NotImplementedError (asv: n/a) when skipped."""
    case = make_case(workload, measurement, *params, **fields)
    check_possible(case)
    entry = results.get(tuple(params))
    if entry is None:
        raise NotImplementedError(f"{case.key}: not measured in setup_cache")
    if "skipped" in entry:
        raise NotImplementedError(f"{case.key}: {entry['skipped']}")
    return entry


class PairSuite(abc.ABC):
    """Base of the dense-vs-meProp suites: ``track_dense`` / ``track_meprop`` (seconds) and
    ``track_relative_time`` (meProp / dense, interleaved in one process; 1 / speedup).

    A subclass sets ``workload`` and ``measurement`` and defines ``setup_cache`` itself
    (asv keys the cache by the file and line of that method, so it cannot live here):
    ``return common.measure_grid(self.workload, self.measurement)``. ``setup_cache`` is
    abstract here, so asv's discovery (which skips abstract classes) never runs this base
    class itself, in this module or where it is imported.
    """

    workload = "linear"
    measurement = "forward"
    case_fields: dict = {}  # further Case fields of every case (e.g. {"adam": "fused"})
    params = PARAMS
    param_names = PARAM_NAMES
    timeout = 600

    @abc.abstractmethod
    def setup_cache(self):
        """``return measure_grid(self.workload, self.measurement)``, defined in each suite's own file."""

    def setup(self, results, *params):
        self.entry = lookup(results, self.workload, self.measurement, params, **self.case_fields)

    def track_dense(self, results, *params):
        return self.entry["dense"]

    track_dense.unit = "seconds"  # asv formats "seconds" as times; CPU seconds under MEPROP_ASV_CLOCK=cpu

    def track_meprop(self, results, *params):
        return self.entry["meprop"]

    track_meprop.unit = "seconds"  # asv formats "seconds" as times; CPU seconds under MEPROP_ASV_CLOCK=cpu

    def track_relative_time(self, results, *params):
        return self.entry["relative_time"]

    # asv takes lower as better for every value: meProp's time over dense's reads the right
    # way round (a lost speedup is a regression), where dense / meProp would be inverted.
    track_relative_time.unit = "x dense time (meProp / dense = 1 / speedup)"
