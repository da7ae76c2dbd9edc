"""The measurement engine: time a case's operations and write its record.

- :mod:`~meprop.lab.engine.timer`: warm-up, interleaved samples, median and IQR, the speedup's interval;
- :mod:`~meprop.lab.engine.runner`: the loop over cases, one record each (``meprop bench``);
- :mod:`~meprop.lab.engine.rounds`: a grid in rounds, each in a fresh process, combined by
  medians (the asv suite), and the same-run ratio of the pytest-benchmark cases;
- :mod:`~meprop.lab.engine.allocator`: the allocator policy that does not page-fault;
- :mod:`~meprop.lab.engine.ddp` and :mod:`~meprop.lab.engine.ddp_rank`: the two-process DDP step.

May import: the library, the lab's bottom modules, ``results``, ``plan`` and ``ops``.
"""

__all__: list[str] = []
