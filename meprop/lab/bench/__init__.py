"""The measurement engine: Case -> workload -> timer -> result record -> store.

Shared by ``meprop bench``, the asv suite (benchmarks/) and the pytest-benchmark cases
(tests/benchmarks/): one definition of each measurement (docs/design.md). Submodules:
:mod:`~meprop.lab.bench.cases` (what), :mod:`~meprop.lab.bench.profiles` (the named grids),
:mod:`~meprop.lab.bench.targets` and :mod:`~meprop.lab.bench.target_file` (performance targets
read from a targets file: the ``perf`` profile's cases and the numbers the report judges them by), :mod:`~meprop.lab.bench.workloads` (the
operations), :mod:`~meprop.lab.bench.timer` (how it is timed), :mod:`~meprop.lab.bench.runner`
(the loop, writing records through :mod:`meprop.lab.results`), :mod:`~meprop.lab.bench.cli`.
Reading results back is the report's job (:mod:`meprop.lab.report`).
"""

from meprop.lab.bench.cases import Case, grid
from meprop.lab.bench.profiles import PROFILES, profile_cases
from meprop.lab.bench.target_file import load_targets
from meprop.lab.bench.targets import Target
from meprop.lab.bench.timer import Measurement, Stopwatch, synchronize, time_one, time_pair
from meprop.lab.bench.workloads import Unsupported, build

__all__ = [
    "Case", "PROFILES", "Target", "load_targets", "profile_cases", "grid", "build", "Unsupported",
    "Measurement", "Stopwatch", "synchronize", "time_one", "time_pair",
]
