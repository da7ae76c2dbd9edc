"""The ``lstm`` workload's operations: the paper's POS tagger (Section 4), ``nn.LSTM`` vs ``MepropLSTM``.

The tagger is batch-first over :attr:`meprop.lab.workloads.REGISTRY["lstm"].steps` time steps:
``forward`` is the LSTM's; ``linear_backward`` the LSTM's whole backward for a fixed output
gradient (gate projections and recurrence; the paper's "backprop" of Table 1's POS row);
``overall_backward`` the tagger's ``loss.backward()`` (LSTM + dense head + cross-entropy);
``train_step`` the tagger's step with :mod:`meprop.lab.ops.train_step`'s optimizers.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from meprop.lab.ops.model_ops import SEED, case_dtype, case_randn, model_op, named_op, preallocate_grads
from meprop.lab.workloads import workload
from meprop.lstm import MepropLSTM
from meprop.lab.measurements import measurement

__all__ = ["build_lstm"]


class _Tagger(nn.Module):
    """The POS tagger of the paper's Section 4: an LSTM and a dense classifier on every step."""

    def __init__(self, lstm: nn.Module, head: nn.Linear):
        super().__init__()
        self.lstm, self.head = lstm, head

    def forward(self, x):
        output, _ = self.lstm(x)  # (B, T, h)
        return self.head(output)  # (B, T, classes)


def build_lstm(case, variant: str) -> Callable[[], None]:
    """One measured operation of an ``lstm`` case (see :func:`meprop.lab.ops.build.build`)."""
    step = measurement(case.measurement).steps_optimizer
    steps = workload(case.workload).steps
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        lstm: nn.Module = nn.LSTM(case.in_features, case.hidden, batch_first=True)
        head = nn.Linear(case.hidden, case.classes)
    if variant == "meprop":
        # backward measurements: into the preallocated .grad (sparse_grad=True, as the linear
        # cases); the step: the lazy optimizer asks for row-sparse gradients itself
        lstm = MepropLSTM.from_lstm(lstm, k=case.k, mode=case.mode, sparse_grad=not step)
    model = _Tagger(lstm, head).to(device=case.device, dtype=case_dtype(case)).train()
    gen = torch.Generator().manual_seed(SEED + 1)
    x = case_randn(case.batch, steps, case.in_features, case=case, generator=gen)  # (B, T, in)
    labels = torch.randint(case.classes, (case.batch * steps,), generator=gen).to(case.device)

    def loss_of():
        return F.cross_entropy(model(x).reshape(-1, case.classes), labels)

    if not measurement(case.measurement).linear_layers_only:  # the forward times the LSTM alone (the head is dense)
        return model_op(case, variant, model, lambda: model.lstm(x), loss_of)
    preallocate_grads(model)
    output, _ = model.lstm(x)
    dy = case_randn(*output.shape, case=case, generator=gen)  # fixed output gradient

    def op() -> None:
        torch.autograd.backward([output], [dy], retain_graph=True)
    return named_op(op, case, model)
