"""The paper's experiments (Sun et al., ICML 2017, Section 4): data, setups, training, presets.

- :mod:`~meprop.lab.paper.data`: MNIST and the POS-tagging corpus (offline), synthetic tasks;
- :mod:`~meprop.lab.paper.setups`: the paper's settings (MNIST, the authors' release, POS), shared by
  ``meprop train`` and ``meprop converge``;
- :mod:`~meprop.lab.paper.train`: the training loop (best-dev protocol, Table 2 time split);
- :mod:`~meprop.lab.paper.presets`: named groups of runs mirroring the paper's tables.

May import: the library, the lab's bottom modules, ``results``, ``plan``, ``ops`` and ``engine``.
Submodules are imported on use: ``import meprop.lab.paper`` is cheap.
"""

__all__: list[str] = []
