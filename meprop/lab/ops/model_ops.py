"""The measured operations every workload shares: forward, overall backprop, training step.

A workload builds its model, its inputs and its loss; :func:`model_op` turns them into the
one zero-argument callable the timer runs (``.model`` and ``.inputs`` attached for probes and
tests). ``linear_backward`` is workload-specific (it needs the layers' own inputs and output
gradients) and stays with each workload.

Allocation policy for the backward measurements (:func:`preallocate_grads`): every ``.grad``
is allocated once and accumulated into, for dense and meProp alike; the training step keeps
nothing preallocated (its optimizer's ``zero_grad()`` decides).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn

from meprop.lab.ops.train_step import make_optimizer, train_step_op
from meprop.lab.measurements import measurement

__all__ = ["SEED", "Unsupported", "case_dtype", "case_randn", "preallocate_grads", "named_op", "model_op"]

#: The seed of every workload's model (inputs use ``SEED + 1``).
SEED = 0


class Unsupported(NotImplementedError):
    """The case cannot run here (no CUDA, too large for memory); the reason is the message.

    A ``NotImplementedError``, so asv shows such a parameter combination as n/a.
    """


def case_dtype(case) -> torch.dtype:
    """The torch dtype the case runs in."""
    return getattr(torch, case.dtype)


def case_randn(*shape: int, case, generator: torch.Generator) -> torch.Tensor:
    """Standard normal values drawn on the CPU (reproducible on every device), then moved to the case's."""
    return torch.randn(*shape, generator=generator).to(device=case.device, dtype=case_dtype(case))


def preallocate_grads(model: nn.Module) -> None:
    """Give every trainable parameter a zero ``.grad`` to accumulate into."""
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)


def named_op(op: Callable[[], None], case, model: nn.Module,
             inputs: Sequence[torch.Tensor] = ()) -> Callable[[], None]:
    """``op`` named after the measurement, carrying ``.model`` and ``.inputs``."""
    op.__name__ = case.measurement
    op.model, op.inputs = model, list(inputs)
    return op


def model_op(case, variant: str, model: nn.Module, forward: Callable[[], object],
             loss_fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
    """The case's ``forward``, ``overall_backward`` or ``train_step`` of ``model``.

    ``forward()`` runs what the forward measurement times; ``loss_fn()`` runs the forward
    and returns the loss (built once and back-propagated with ``retain_graph`` by the
    overall backprop; rebuilt every step by the training step).
    """
    kind = measurement(case.measurement)
    if kind.steps_optimizer:
        optimizer = make_optimizer(model, variant, case.optimizer, case.adam)
        return named_op(train_step_op(model, loss_fn, optimizer, case.device), case, model)
    preallocate_grads(model)
    if not kind.runs_backward:
        def op() -> None:
            forward()
    elif not kind.linear_layers_only:
        loss = loss_fn()

        def op() -> None:
            loss.backward(retain_graph=True)
    else:
        raise ValueError(f"model_op measures forward, overall_backward or train_step, got "
                         f"{case.measurement!r}")
    return named_op(op, case, model)
