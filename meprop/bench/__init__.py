"""The measurement engine: Case -> workload -> timer -> result record -> store.

Shared by ``meprop bench``, the asv suite (benchmarks/) and the pytest-benchmark cases
(tests/benchmarks/): one definition of each measurement (DESIGN.md). Submodules:
:mod:`~meprop.bench.cases` (what), :mod:`~meprop.bench.profiles` (the named grids),
:mod:`~meprop.bench.targets` (issue 5's performance targets: the ``perf`` profile's cases
and the numbers the report judges them by), :mod:`~meprop.bench.workloads` (the
operations), :mod:`~meprop.bench.timer` (how it is timed), :mod:`~meprop.bench.runner`
(the loop, writing records through :mod:`meprop.results`), :mod:`~meprop.bench.cli`.
Reading results back is the report's job (:mod:`meprop.report`).
"""

from meprop.bench.cases import Case, grid
from meprop.bench.profiles import PROFILES, profile_cases
from meprop.bench.targets import PERF_TARGETS, TARGETS, Target
from meprop.bench.timer import Measurement, Stopwatch, synchronize, time_one, time_pair
from meprop.bench.workloads import Unsupported, build

__all__ = [
    "Case", "PROFILES", "TARGETS", "Target", "PERF_TARGETS", "profile_cases", "grid", "build", "Unsupported",
    "Measurement", "Stopwatch", "synchronize", "time_one", "time_pair",
]
