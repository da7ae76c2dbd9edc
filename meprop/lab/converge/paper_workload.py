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

from meprop.lab.converge.loop import Trainee
from meprop.lab.paper.train import EVAL_BATCH, TrainConfig, build_task, make_optimizer, task_loss

__all__ = ["PaperWorkload"]


class PaperWorkload:
    """The paper's task of ``config`` (its k, mode and optimizer mode are set per variant);
    ``load()`` returns the data :func:`meprop.lab.paper.train.build_task` takes (loaded once)."""

    metric = "dev accuracy (%)"

    def __init__(self, name: str, config: TrainConfig, load) -> None:
        self.name, self.config, self._load = name, config, load
        self._data = self._splits = self._batches = self._score = None

    def settings(self) -> dict:
        return {n: v for n, v in self.config.to_dict().items() if n not in ("k", "mode", "optimizer_mode", "method")}

    def _variant_config(self, variant) -> TrainConfig:
        mode = variant.optimizer_mode if variant.k is not None else "exact"
        return replace(self.config, k=variant.k, mode=variant.mode, optimizer_mode=mode)

    def build(self, variant) -> Trainee:
        if self._data is None:
            self._data = self._load()
        config = self._variant_config(variant)
        model, splits, batches, score = build_task(config, self._data)
        self._splits, self._batches, self._score = splits, batches, score
        return Trainee(model, make_optimizer(config, model), lambda batch: task_loss(model(*batch[0]), batch[1]))

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
