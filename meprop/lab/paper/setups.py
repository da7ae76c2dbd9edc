"""The paper's settings, written once: the base configuration of every MNIST and POS run.

``meprop train``'s presets (:mod:`meprop.lab.paper.presets`) and ``meprop converge``'s
(:mod:`meprop.lab.converge.presets`) both start from these and add only their length
(epochs, data limits) and their runs.

- :data:`MNIST`: Table 1's MNIST MLP, h=500, 2 hidden layers, batch 10, Adam;
- :data:`RELEASE`: the same with the training choices of the authors' PyTorch release
  (dropout 0.1 after each hidden ReLU, dense bias gradient, uniform(+-1/sqrt(out)) init;
  docs/accuracy_notes.md says why they matter);
- :data:`POS`: Table 1's POS tagger, LSTM h=500, batch 1 sentence, Adam.
"""

from __future__ import annotations

from types import MappingProxyType

__all__ = ["MNIST", "RELEASE", "POS"]

MNIST = MappingProxyType({"task": "mnist", "hidden": 500, "layers": 2, "batch": 10, "optimizer": "adam"})
RELEASE = MappingProxyType({**MNIST, "dropout": 0.1, "bias_grad": "dense", "init": "release"})
POS = MappingProxyType({"task": "pos", "hidden": 500, "batch": 1, "optimizer": "adam"})
