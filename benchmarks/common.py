"""The asv glue of the suite: asv's ``params``, ``setup`` and ``track_`` values over the lab's engine.

The run loop is the engine's (:mod:`meprop.lab.engine.rounds`): each class measures its
whole grid once in ``setup_cache``, in ``MEPROP_ASV_ROUNDS`` rounds each in a fresh Python
process, dense and meProp timed interleaved, combined by medians and rounded to 3
significant digits; the ``track_`` methods report the stored values. asv_runner >= 0.3
re-runs ``setup`` before every timed call, so the suite does not use asv's ``time_``
benchmarks. The grid and the timing settings are read once at import from ``MEPROP_ASV_*``
environment variables (:mod:`meprop.lab.plan.asv_grid`; docs/asv.md), so they are the
same for every commit of one ``asv run``.

Impossible combinations (``cuda`` without a GPU, a case too large for memory) raise
``NotImplementedError`` in ``setup``, so asv shows them as n/a. Nothing here touches CUDA
at import time. Names here avoid asv's benchmark prefixes (``time_``, ``track_``, ``mem_``,
``peakmem_``) so discovery ignores them. The suite needs the lab's engine
(``meprop.lab.engine.rounds``): commits before it are compared by their stored results.
"""

from __future__ import annotations

import abc

from meprop.lab.engine import rounds as _rounds
from meprop.lab.engine.runner import peak_memory
from meprop.lab.engine.timer import num_threads
from meprop.lab.ops.build import VARIANTS, build
from meprop.lab.plan import asv_grid

__all__ = ["GRIDS", "PARAM_NAMES", "PARAMS", "THREADS", "BUDGET_S", "ROUNDS", "CLOCK", "SIGNIFICANT",
           "SETUP_CACHE_TIMEOUT", "read_grid", "make_case", "check_possible", "measure_grid",
           "build_pair", "peak_bytes", "release_large_blocks", "lookup", "PairSuite"]

PARAM_NAMES = asv_grid.PARAM_NAMES
GRIDS = asv_grid.GRIDS
read_grid = asv_grid.read_grid
check_possible = _rounds.check_possible
_SETTINGS = asv_grid.read_settings()
PARAMS: list[list] = [read_grid()[name] for name in PARAM_NAMES]
THREADS: int | None = _SETTINGS.threads
BUDGET_S: float = _SETTINGS.budget_s
ROUNDS: int = _SETTINGS.rounds
CLOCK: str = _SETTINGS.clock
#: Significant digits of a tracked value.
SIGNIFICANT = _rounds.SIGNIFICANT
#: asv's limit for one class's setup_cache (the whole grid of one measurement).
SETUP_CACHE_TIMEOUT = 3600


def _settings(rounds: int | None = None) -> asv_grid.Settings:
    """The settings as this module's globals hold them now (a test may have changed them)."""
    return asv_grid.Settings(threads=THREADS, budget_s=BUDGET_S, clock=CLOCK,
                             rounds=ROUNDS if rounds is None else rounds)


def make_case(workload: str, measurement: str, hidden: int, k_ratio: float, batch: int,
              mode: str, device: str, **fields):
    """The engine's Case for one asv parameter combination; ``fields``: further Case fields
    (a suite's ``case_fields``), NotImplementedError (asv: n/a) where the Case lacks one."""
    return asv_grid.grid_case(workload, measurement, (hidden, k_ratio, batch, mode, device), THREADS, fields)


def measure_grid(workload: str, measurement: str, params: list[list] | None = None,
                 rounds: int | None = None, **fields) -> dict:
    """``{param tuple: entry}`` for every combination of ``params`` (default :data:`PARAMS`):
    :func:`meprop.lab.engine.rounds.measure_grid`, called from each class's ``setup_cache``."""
    combos = _rounds.grid_combos(PARAMS if params is None else params)
    return _rounds.measure_grid(workload, measurement, combos, fields, _settings(rounds))


def build_pair(case) -> dict:
    """``{"dense": fn, "meprop": fn}`` for ``case``; NotImplementedError (asv: n/a) if impossible."""
    check_possible(case)
    return {variant: build(case, variant) for variant in VARIANTS}


def peak_bytes(fn, case) -> int:
    """Extra bytes one ``fn()`` needs beyond what is allocated before it (after a warm-up call):
    the engine's :func:`meprop.lab.engine.runner.peak_memory`."""
    with num_threads(case.threads):
        fn()  # warm-up: lazily created buffers are not part of the steady state
        nbytes, _kind = peak_memory(fn, case.device)
    return nbytes


def release_large_blocks() -> None:
    """The memory probes' allocator setting (:func:`meprop.lab.engine.allocator.release_large_blocks`)."""
    from meprop.lab.engine.allocator import release_large_blocks as release

    release()


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
