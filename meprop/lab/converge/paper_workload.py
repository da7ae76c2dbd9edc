"""The paper's workloads of the time-to-accuracy measurement (:mod:`meprop.lab.converge.loop`).

A workload is an object with ``name``, ``metric`` (the dev metric's name; higher is better),
``settings()`` (a JSON-able dict recorded with every evaluation), ``steps_per_epoch()``,
``build(variant) -> Trainee``, ``batches(epoch, generator)`` (one epoch of training batches,
shuffled with ``generator``) and ``evaluate(model) -> float``. Here:

- :class:`PaperWorkload`: the paper's MNIST MLP and POS LSTM, built from a
  :class:`meprop.lab.paper.train.TrainConfig` by :func:`meprop.lab.paper.train.build_task` (the
  models, batches, loss, optimizers and dev scoring of ``meprop train``);
- the user's own model and the character language model live in :mod:`meprop.lab.converge.user_workload`
  and :mod:`meprop.lab.converge.lm`.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn as nn

from meprop.lab.converge.loop import ConvergenceError, Trainee
from meprop.lab.converge.optimizers import make_optimizer
from meprop.lab.paper.train import EVAL_BATCH, TrainConfig, build_task, task_loss

__all__ = ["PaperWorkload"]


class PaperWorkload:
    """The paper's task of ``config`` (its k, mode and optimizer mode are set per variant);
    ``load()`` returns the data :func:`meprop.lab.paper.train.build_task` takes (loaded once)."""

    metric = "dev accuracy (%)"
    metric_range = (0.0, 100.0)
    #: remedies (:mod:`meprop.lab.converge.remedies`): the POS LSTM takes the schedule and the
    #: sampled modes; error feedback there is refused naming the LSTM
    supports = frozenset({"schedule", "error_feedback"})

    def __init__(self, name: str, config: TrainConfig, load) -> None:
        self.name, self.config, self._load = name, config, load
        self._data = self._splits = self._batches = self._score = None

    def settings(self) -> dict:
        return {n: v for n, v in self.config.to_dict().items() if n not in ("k", "mode", "optimizer_mode", "method")}

    def k_limit(self) -> int:
        """The widest layer meProp selects in: k must stay below it (the POS LSTM: its 4h gates)."""
        return self.config.hidden * (4 if self.config.task == "pos" else 1)

    def _variant_config(self, variant) -> TrainConfig:
        mode = variant.optimizer_mode if variant.k is not None else "exact"
        if variant.k is not None and not 1 <= variant.k < self.k_limit():
            raise ConvergenceError(f"--k {variant.k}: k must be an integer in [1, {self.k_limit() - 1}] "
                                   f"(the layer it selects in has {self.k_limit()} outputs; k >= that trains dense)")
        lr = variant.lr if variant.lr is not None else self.config.lr
        return replace(self.config, k=variant.k, mode=variant.mode, optimizer_mode=mode, lr=lr)

    def build(self, variant) -> Trainee:
        config = self._variant_config(variant)
        if self._data is None:
            self._data = self._load()
        model, splits, batches, score = build_task(config, self._data)
        self._splits, self._batches, self._score = splits, batches, score
        optimizer, how = make_optimizer(config.optimizer, model.parameters(), config.learning_rate,
                                        lazy=config.optimizer_mode == "lazy", device=config.device)
        return Trainee(model, optimizer, lambda batch: task_loss(model(*batch[0]), batch[1]), how)

    def steps_per_epoch(self) -> int:
        if self._splits is None:
            raise RuntimeError("build() a variant first")
        return math.ceil(len(self._splits.train) / self.config.batch)

    def batches(self, epoch: int, generator: torch.Generator):
        device = torch.device(self.config.device)
        for inputs, target, _ in self._batches(self._splits.train, self.config.batch, generator, device):
            yield inputs, target

    def evaluate(self, model: nn.Module) -> float:
        return self._score(model, self._splits.dev, EVAL_BATCH[self.config.task], torch.device(self.config.device))

    def evaluate_test(self, model: nn.Module) -> float:
        """The test score (the paper reports the test score at the best dev evaluation)."""
        return self._score(model, self._splits.test, EVAL_BATCH[self.config.task], torch.device(self.config.device))
