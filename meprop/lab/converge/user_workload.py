"""The user's own model as a workload of ``meprop converge --model module:factory``.

The protocol: ``factory()`` returns ``(model, train_batches, evaluate)`` or
``(model, train_batches, evaluate, loss)``:

- ``model``: an ``nn.Module`` (dense; meProp goes on through :func:`meprop.convert`, the
  output layer stays dense; ``k`` counts against the widest linear layer, every converted
  layer keeps that fraction of its outputs);
- ``train_batches``: a re-iterable (a list, a ``DataLoader``) of ``(inputs, target)``, one
  pass per epoch; ``inputs`` a tensor or a tuple of tensors;
- ``evaluate(model) -> float``: the dev metric, higher is better;
- ``loss(output, target)`` (optional; default cross-entropy over the last dimension).

The optimizer is Adam (lr ``1e-3`` or the variant's; torch's fastest implementation, ``lazy``
variants use ``meprop.optim.Adam(lazy=True)``). A factory returning anything else, or
raising, raises :class:`meprop.lab.ops.user_model.UserModelError` naming what was expected;
``k`` must be below the widest linear layer's width.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from meprop.lab.ops.user_model import UserModelError, load_factory
from meprop.nn import convert
from meprop.lab.converge.loop import Trainee
from meprop.lab.converge.optimizers import make_optimizer

__all__ = ["UserWorkload", "UserModelError"]


def _cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))


class UserWorkload:
    """The user's model of ``plan`` (``module:factory``); see the module docstring for the protocol."""

    metric = "dev metric"
    supports = frozenset({"schedule", "error_feedback"})  # on the converted layers (meprop.lab.converge.remedies)

    def __init__(self, spec: str, lr: float = 1e-3) -> None:
        self.spec, self.lr = spec, lr
        self.name = f"model:{spec}"
        self._factory = load_factory(spec)
        self._data = self._evaluate = None
        self._loss = _cross_entropy

    def settings(self) -> dict:
        return {"model": self.spec, "optimizer": "adam", "lr": self.lr}

    def _call(self) -> tuple:
        try:
            result = self._factory()
        except Exception as error:
            raise UserModelError(f"--model {self.spec!r}: the factory raised {type(error).__name__}: {error}") \
                from error
        if not (isinstance(result, tuple) and len(result) in (3, 4)):
            raise UserModelError(f"--model {self.spec!r}: the factory must return (model, train_batches, evaluate) "
                                 f"or (model, train_batches, evaluate, loss), got {_describe(result)}")
        model, data, evaluate = result[:3]
        if not isinstance(model, nn.Module):
            raise UserModelError(f"--model {self.spec!r}: the model (item 1) must be an nn.Module, "
                                 f"got {type(model).__name__}")
        if not hasattr(data, "__iter__") or isinstance(data, torch.Tensor):
            raise UserModelError(f"--model {self.spec!r}: train_batches (item 2) must be an iterable of "
                                 f"(inputs, target) batches (a list or a DataLoader), got {type(data).__name__}")
        for position, item in ((3, evaluate), (4, result[3] if len(result) == 4 else _cross_entropy)):
            if not callable(item):
                raise UserModelError(f"--model {self.spec!r}: item {position} must be callable "
                                     f"({'evaluate(model)' if position == 3 else 'loss(output, target)'}), "
                                     f"got {type(item).__name__}")
        return result

    def build(self, variant) -> Trainee:
        result = self._call()
        model = result[0]
        if self._data is None:
            self._data, self._evaluate = result[1], result[2]
            self._loss = result[3] if len(result) == 4 else _cross_entropy
        if variant.k is not None:
            inputs = _inputs(self._first_batch())
            widths = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
            if not widths:
                raise UserModelError(f"--model {self.spec!r}: the model has no nn.Linear layer for meProp")
            if not 1 <= variant.k < max(widths):
                raise UserModelError(f"--k {variant.k}: k must be an integer in [1, {max(widths) - 1}] (the "
                                     f"widest linear layer of {self.spec!r} has {max(widths)} outputs; k >= that "
                                     f"trains dense)")
            model = convert(model, k_ratio=min(1.0, variant.k / max(widths)), mode=variant.mode,
                            example_inputs=inputs, inplace=True)
        optimizer, how = make_optimizer("adam", model.parameters(), variant.lr or self.lr,
                                        lazy=variant.k is not None and variant.optimizer_mode == "lazy")
        loss = self._loss
        return Trainee(model, optimizer, lambda batch: loss(model(*_inputs(batch)), batch[1]), how)

    def _first_batch(self):
        for batch in self._data:
            return _check_batch(self.spec, batch)
        raise UserModelError(f"--model {self.spec!r}: train_batches yields no batch")

    def steps_per_epoch(self) -> int:
        try:
            return len(self._data)
        except TypeError:
            return sum(1 for _ in self._data)

    def batches(self, epoch: int, generator: torch.Generator):
        for batch in self._data:
            yield _check_batch(self.spec, batch)

    def evaluate(self, model: nn.Module) -> float:
        value = self._evaluate(model)
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = float(value)
        return value


def _describe(value) -> str:
    if isinstance(value, tuple):
        return f"a tuple of {len(value)} ({', '.join(type(v).__name__ for v in value)})"
    return type(value).__name__


def _check_batch(spec: str, batch):
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise UserModelError(f"--model {spec!r}: each training batch must be (inputs, target), "
                             f"got {_describe(tuple(batch) if isinstance(batch, list) else batch)}")
    return batch


def _inputs(batch) -> tuple:
    inputs = batch[0]
    return (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
