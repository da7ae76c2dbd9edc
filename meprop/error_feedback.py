"""Error feedback ("memorized" meProp, Zhang et al., arXiv 1905.10194): what selection drops comes back later.

A meProp layer's selection drops most of its output gradient ``dy: (N, n)``. With error
feedback the layer keeps a per-output-unit memory ``memory: (n,)`` of what was dropped,
summed over the batch and decayed, and adds it to the next backward's output gradient
before selecting:

    dy'    = dy + memory / N                       # (N, n): spread evenly over the examples
    kept   = select(dy')                           # top-k (or any mode) of dy'
    memory = decay * (sum_b dy'[b] - sum_b kept[b]) # (n,): the batch-summed dropped part

Why this form. Per-example selection cannot carry a dropped entry per example (the next
batch holds other examples), so the memory is per unit, as in the paper: the dropped mass
of unit j is kept and re-enters unit j's output gradient. Spread as ``memory / N`` over the
N examples, it adds exactly ``memory`` to the batch-summed output gradient (the bias
gradient's and, weighted by the inputs, the weight gradient's direction). With ``decay = 1``
nothing is lost over time: every unit's summed gradient is propagated, later; a smaller
decay forgets stale gradient. A unit whose memory grows large is selected (its ``|dy'|``
grows), which is how the paper's memory un-starves units that top-k never picks.

Cost: one ``(N, n)`` add, two column sums and one ``(n,)`` update per backward; the sparse
bias-gradient sum the backward computes anyway gives ``sum_b kept[b]``.

The memory is a buffer (``state_dict`` key ``<layer>.error_feedback.memory``), so it is
checkpointed and moves with ``.to()``. Under DistributedDataParallel each rank keeps its
own memory: wrap with ``broadcast_buffers=False`` (otherwise DDP copies rank 0's memory to
every rank at each forward). Not supported under torch.func transforms (refused).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from meprop.checks import check_real

__all__ = ["ErrorFeedback", "check_decay", "with_error_feedback"]


def check_decay(decay: object, name: str = "error_feedback") -> float:
    """Return ``decay`` as a float if it is a real number in (0, 1]."""
    value = check_real(decay, name, "a float in (0, 1] (the memory's decay) or None")
    if not 0.0 < value <= 1.0:  # also refuses NaN
        raise ValueError(f"{name} must be a float in (0, 1] (the memory's decay) or None, got {decay!r}")
    return value


class ErrorFeedback(nn.Module):
    """The dropped-gradient memory of one meProp layer with ``out_features`` outputs (module docstring).

    ``memory: (out_features,)``, zeros at start; ``decay`` in (0, 1]. Pass it as
    ``meprop_linear(..., error_feedback=feedback)``; :class:`meprop.MepropLinear` holds one
    as its ``error_feedback`` submodule when built with ``error_feedback=decay``.
    """

    def __init__(self, out_features: int, decay: float = 1.0, *, device=None, dtype=None) -> None:
        super().__init__()
        self.decay = check_decay(decay)
        dtype = dtype if dtype is not None and dtype.is_floating_point else torch.float32
        self.register_buffer("memory", torch.zeros(out_features, device=device, dtype=dtype))

    def reset(self) -> None:
        """Forget the memory (zeros)."""
        self.memory.zero_()

    def extra_repr(self) -> str:
        return f"{self.memory.shape[0]}, decay={self.decay}"


def with_error_feedback(call, feedback: ErrorFeedback, run):
    """``run(call')`` on ``call``'s output gradient plus the memory; updates the memory.

    ``call``: a :class:`meprop.dispatch.LinearBackward` (``dy: (N, n)``); ``run`` returns
    ``(grad_input, grad_weight, grad_bias)``. The inner call always computes the sparse bias
    gradient (the kept entries' column sums), which the memory update needs.
    """
    dy = call.dy
    batch, n = dy.shape
    memory = feedback.memory
    if memory.shape != (n,):
        raise ValueError(
            f"error_feedback's memory must have shape (out_features,) = ({n},), got {tuple(memory.shape)}"
        )
    if batch == 0:
        return run(call)
    shifted = dy + (memory / batch).to(dy.dtype)  # (N, n)
    inner = dataclasses.replace(call, dy=shifted, need_bias=True, bias_grad="sparse")
    grad_input, grad_weight, kept_sum = run(inner)
    with torch.no_grad():
        total = dy.sum(0, dtype=memory.dtype) + memory  # (n,): sum_b dy'[b]
        memory.copy_((total - kept_sum.detach().to(memory.dtype)) * feedback.decay)
    grad_bias = None
    if call.need_bias:
        grad_bias = dy.sum(0) if call.bias_grad == "dense" else kept_sum
    return grad_input, grad_weight, grad_bias
