"""The workloads, one object each: what every other part of the lab asks instead of comparing names.

A :class:`Workload` owns what is specific to one kind of model the suite measures:

- its width and how k counts (:meth:`~Workload.k_width`: ``hidden``, or the LSTM's
  ``4 * hidden`` gate entries), hence its ideal ``k_width / k``;
- its case fields' defaults (``in_features``, whether ``layers`` means anything, whether a
  ``module:factory`` model spec is required) and its name in a case key;
- building its model, inputs and the measured operation (:meth:`~Workload.build`, which
  imports the engine's builder only when called, so this module stays at the bottom of the
  lab: results/, bench/ and report/ all read it);
- the measurements it supports and how the report names and groups it, and its typical
  shape: the cell the report's headline quotes for it (:attr:`~Workload.typical_shape`).

:data:`REGISTRY` holds every workload; :func:`workload` looks one up with a clear error.
"""

from __future__ import annotations

import importlib
from types import MappingProxyType
from typing import Any, Callable, Mapping

from meprop.lab.measurements import LINEAR_BACKWARD, OVERALL_BACKWARD, SINGLE_PROCESS_NAMES

__all__ = ["Workload", "REGISTRY", "WORKLOAD_NAMES", "workload", "k_width", "named_in"]

#: every measurement one process makes (the DDP step is the MLP's alone)
_ALL_MEASUREMENTS = SINGLE_PROCESS_NAMES


class Workload:
    """One workload; subclasses set the class attributes and override what differs."""

    name: str = ""
    #: how the report names it in titles ("single linear layer", "MLP", ...)
    label: str = ""
    #: k counts among ``gate_multiple * hidden`` output entries
    gate_multiple: int = 1
    #: ``layers`` hidden layers of width ``hidden`` (else one layer, recorded as 1)
    stacks_layers: bool = False
    #: the case names a user's ``module:factory``
    needs_model_spec: bool = False
    #: the backprop measurement that shows meProp's effect on this workload in the figures
    backward_measurement: str = LINEAR_BACKWARD.name
    #: the paper's table this workload reproduces (None: none)
    paper_table: str | None = None
    measurements: tuple[str, ...] = _ALL_MEASUREMENTS
    #: "module:function" of the engine's builder, ``f(case, variant) -> operation``
    builder: str = ""
    #: the representative shape the report's headline quotes this workload at (the measured
    #: cell nearest to it): ``hidden`` (None: any), ``batch``, ``k_ratio`` and ``source``, where
    #: the shape comes from. Any other model (a user's): a mid-size batch at k/n 4%.
    typical_shape: Mapping[str, Any] = MappingProxyType(
        dict(hidden=None, batch=64, k_ratio=0.04, source="batch 64, k/n 4%"))

    def k_width(self, hidden: int) -> int:
        """The number of output entries k is chosen among."""
        return self.gate_multiple * hidden

    def ideal(self, hidden: int, k: int) -> float:
        """``k_width / k``: the ideal linear-only backprop speedup."""
        return self.k_width(hidden) / k

    def default_in_features(self, hidden: int) -> int:
        return hidden

    def key_name(self, model: str | None) -> str:
        """The workload's part of a case key."""
        return self.name

    def display_name(self, case: Mapping[str, Any]) -> str:
        """How the report names a row of this workload."""
        return self.name

    def shape_label(self, case: Mapping[str, Any]) -> str:
        """``mlp n=4096 x2``-style: the workload and its width."""
        return f"{self.name} n={case['hidden']}"

    def layer_shapes(self, case) -> list[tuple[int, int]]:
        """(out, in) of every linear layer of the case's model (for the memory estimate)."""
        return [(case.hidden, case.in_features)]

    def activation_factor(self) -> int:
        """How many batch-sized activations per layer the memory estimate counts."""
        return 1

    def build(self, case, variant: str) -> Callable[[], None]:
        """The measured operation of ``case`` for ``variant`` (the engine's builder)."""
        module, function = self.builder.split(":")
        return getattr(importlib.import_module(module), function)(case, variant)


class _Linear(Workload):
    name, label = "linear", "single linear layer"
    paper_table = "Table 7"
    builder = "meprop.lab.ops.build:build_linear_model"
    #: the project's targets' layer: one 4096-wide layer, batch 64, k/n 1%
    typical_shape = MappingProxyType(dict(hidden=4096, batch=64, k_ratio=0.01,
                                          source="one 4096-wide layer, batch 64, k/n 1% (the project's targets)"))


class _Mlp(Workload):
    name, label = "mlp", "MLP"
    stacks_layers = True
    backward_measurement = OVERALL_BACKWARD.name
    paper_table = "Table 8"
    builder = "meprop.lab.ops.build:build_linear_model"
    #: the paper's MNIST MLP: 784-500-500-10, batch 10, k=20
    typical_shape = MappingProxyType(dict(hidden=500, batch=10, k_ratio=0.04,
                                          source="the paper's MNIST MLP (784-500-500-10, batch 10, k=20)"))

    def default_in_features(self, hidden: int) -> int:
        return 784  # MNIST's 28 x 28 images

    def shape_label(self, case: Mapping[str, Any]) -> str:
        layers = case.get("layers")
        return f"mlp n={case['hidden']}" + (f" x{layers}" if layers else "")

    def layer_shapes(self, case) -> list[tuple[int, int]]:
        return ([(case.hidden, case.in_features)] + [(case.hidden, case.hidden)] * (case.layers - 1)
                + [(case.classes, case.hidden)])


class _Lstm(Workload):
    name, label = "lstm", "LSTM tagger"
    gate_multiple = 4  # k counts among the 4·hidden gate pre-activations
    builder = "meprop.lab.ops.lstm_ops:build_lstm"
    #: time steps of a sequence (a sentence of the POS corpus: 25 tokens)
    steps = 25
    #: the paper's POS tagger: h=500, one sentence, k=5 of the 2000 gate entries
    typical_shape = MappingProxyType(dict(
        hidden=500, batch=1, k_ratio=0.0025,
        source="the paper's POS LSTM (h=500, one sentence, k=5 of 2000 gate entries)"))

    def default_in_features(self, hidden: int) -> int:
        return 100  # the tagger's word-embedding size

    def layer_shapes(self, case) -> list[tuple[int, int]]:
        gates = 4 * case.hidden
        return [(gates, case.in_features), (gates, case.hidden), (case.classes, case.hidden)]

    def activation_factor(self) -> int:
        return self.steps


class _Transformer(Workload):
    name, label = "transformer", "transformer block"
    backward_measurement = OVERALL_BACKWARD.name
    builder = "meprop.lab.ops.transformer:build_transformer_case"
    #: tokens per sequence
    sequence = 64
    #: a GPT-2-style block of width 512, 8 sequences, k/n 4%
    typical_shape = MappingProxyType(dict(hidden=512, batch=8, k_ratio=0.04,
                                          source="a GPT-2-style block, d=512, 8 sequences, k/n 4%"))

    def layer_shapes(self, case) -> list[tuple[int, int]]:
        d = case.hidden
        return [(3 * d, d), (d, d), (4 * d, d), (d, 4 * d)]

    def activation_factor(self) -> int:
        return 2 * self.sequence  # every token, plus attention and norm buffers


class _UserModel(Workload):
    name, label = "model", "user model"
    needs_model_spec = True
    backward_measurement = OVERALL_BACKWARD.name
    builder = "meprop.lab.ops.user_model:build_user_model_case"

    def key_name(self, model: str | None) -> str:
        return f"model[{model}]"

    def display_name(self, case: Mapping[str, Any]) -> str:
        model = case.get("model")
        return model if isinstance(model, str) else self.name  # named by its module:factory

    def layer_shapes(self, case) -> list[tuple[int, int]]:
        return []  # unknown before the factory runs: the memory check passes it


REGISTRY: dict[str, Workload] = {w.name: w for w in (_Linear(), _Mlp(), _Lstm(), _Transformer(), _UserModel())}
WORKLOAD_NAMES: tuple[str, ...] = tuple(REGISTRY)


def workload(name: object) -> Workload:
    """The workload called ``name``; a ValueError naming the accepted names otherwise."""
    try:
        return REGISTRY[name]  # type: ignore[index]
    except (KeyError, TypeError):
        raise ValueError(f"workload must be one of {WORKLOAD_NAMES}, got {name!r}") from None


def k_width(name: str, hidden: int) -> int:
    """The width k counts against for a ``name`` workload of width ``hidden``."""
    return workload(name).k_width(hidden)


def named_in(text: str, default: str = "linear") -> str:
    """The workload a benchmark's name mentions (``test_mlp_overall[...]`` -> ``mlp``), else ``default``."""
    words = text.lower()
    found = [name for name, spec in REGISTRY.items()
             if name != default and not spec.needs_model_spec and name in words]
    return found[0] if found else default
