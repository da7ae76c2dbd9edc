"""The paper's experiments (Sun et al., ICML 2017, Section 4): data, models, training, presets.

- :mod:`~meprop.lab.paper.data`: MNIST and the POS-tagging corpus (offline), synthetic tasks;
- :mod:`~meprop.lab.paper.models`: the MNIST MLP and the POS LSTM tagger, dense or meProp;
- :mod:`~meprop.lab.paper.train`: the training loop (best-dev protocol, Table 2 time split);
- :mod:`~meprop.lab.paper.presets`: named groups of runs mirroring the paper's tables;
- :mod:`~meprop.lab.paper.cli`: ``meprop train``.

Records are written through :mod:`meprop.lab.results`; nothing here imports the benchmark
engine (:mod:`meprop.lab.bench`). Submodules are imported on use: ``import meprop.lab.paper`` is cheap.
"""

__all__: list[str] = []
