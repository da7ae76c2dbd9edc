"""The plan of a run, what to measure: cases, the named grids (profiles), performance targets, timing options.

- :mod:`~meprop.lab.plan.cases`: :class:`Case`, one measurement's frozen description, and :func:`grid`;
- :mod:`~meprop.lab.plan.profiles`: the named grids of ``meprop bench --profile``;
- :mod:`~meprop.lab.plan.targets` and :mod:`~meprop.lab.plan.target_file`: performance targets,
  read from a targets file (docs/targets.md);
- :mod:`~meprop.lab.plan.timing`: :class:`TimingOptions`, how long and how often to sample;
- :mod:`~meprop.lab.plan.asv_grid`: the asv suite's grid and settings (``MEPROP_ASV_*``).

May import: the library's public modules, the lab's bottom modules (``workloads``,
``measurements``, ``stopwatch``) and ``results``. Nothing here builds or times anything.
"""

from meprop.lab.plan.cases import Case, grid
from meprop.lab.plan.profiles import PROFILES, profile_cases
from meprop.lab.plan.target_file import load_targets
from meprop.lab.plan.targets import Target
from meprop.lab.plan.timing import TimingOptions

__all__ = ["Case", "PROFILES", "Target", "TimingOptions", "grid", "load_targets", "profile_cases"]
