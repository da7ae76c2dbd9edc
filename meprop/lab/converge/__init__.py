"""Time to accuracy (``meprop converge``): dense and meProp trained side by side to a target.

- :mod:`~meprop.lab.converge.loop`: the alternating training loop (same start, same batches);
- :mod:`~meprop.lab.converge.state`: the resumable state of a run;
- :mod:`~meprop.lab.converge.time_to_target`: targets and the split into step time x steps;
- :mod:`~meprop.lab.converge.presets`: the named setups (the paper's, from :mod:`meprop.lab.paper.setups`);
- :mod:`~meprop.lab.converge.paper_workload`, :mod:`~meprop.lab.converge.lm`,
  :mod:`~meprop.lab.converge.user_workload`: what is trained;
- :mod:`~meprop.lab.converge.optimizers`: each arm's optimizer (the fastest torch implementation for dense);
- :mod:`~meprop.lab.converge.study`: the summary over paired seeds (medians, intervals, tuning);
- :mod:`~meprop.lab.converge.run`: one preset or plan run into the results store (every cell x seed).

May import: the library, the lab's bottom modules, ``results``, ``plan``, ``ops``, ``engine``
and ``paper``. Docs: docs/time_to_accuracy.md.
"""

__all__: list[str] = []
