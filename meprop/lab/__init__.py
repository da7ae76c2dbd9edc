"""meprop's measurement lab: the benchmark suite, the paper's experiments and the report.

- ``results``: the record format (one schema), the JSON-lines store, the environment snapshot;
- ``bench``: the measurement engine (cases, workloads, timer, runner, profiles, targets);
- ``paper``: the paper's experiments (data that installs offline, models, training, presets);
- ``report``: results -> tables, figures and a self-contained HTML report;
- ``cli``: the ``meprop`` command (``bench | report | train | info``).

The lab builds on the library's public API (``meprop``, ``meprop.nn``, ``meprop.optim``, ...)
and needs the ``bench`` extra (``pip install 'meprop[bench]'``); the library never imports it.
"""

from __future__ import annotations

import importlib.util
import sys

__all__ = ["BENCH_EXTRA_MODULES", "missing_extra_modules", "require_extra"]

#: what the lab imports beyond the library (module names, not distribution names)
BENCH_EXTRA_MODULES = ("numpy", "pandas", "matplotlib", "seaborn", "psutil", "tqdm", "tabulate",
                       "jinja2", "cpuinfo")


def missing_extra_modules() -> list[str]:
    """The modules of the ``bench`` extra that are not installed."""
    return [name for name in BENCH_EXTRA_MODULES if importlib.util.find_spec(name) is None]


def require_extra() -> None:
    """Exit with status 2 and one line naming the extra when the lab's dependencies are missing."""
    missing = missing_extra_modules()
    if missing:
        print(f"meprop: this command needs the 'bench' extra: pip install 'meprop[bench]' "
              f"(missing: {', '.join(missing)})", file=sys.stderr)
        sys.exit(2)
