"""asv (airspeed velocity) suite for meprop: one ``bench_<measurement>.py`` per measurement.

A thin layer over the lab's engine (:mod:`meprop.lab.engine`) (the same workloads and timer as ``meprop bench``
and the pytest-benchmark cases); see ``common.py`` for the grid and docs/asv.md for use.
"""

__all__: list[str] = []
