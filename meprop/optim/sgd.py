"""meprop.optim.SGD: torch.optim.SGD with a lazy row update for meProp weights.

``lazy=False`` is torch.optim.SGD. ``lazy=True`` updates a meProp weight only in the rows
``I`` touched this step, with SGD's arithmetic on them (``g: (U, m)`` their gradient)::

    g = g + weight_decay * p[I]                              (if weight_decay)
    b[I] = g                     on the parameter's first step (torch's buffer init)
    b[I] = momentum * b[I] + (1 - dampening) * g             afterwards
    g = g + momentum * b[I] if nesterov else b[I]            (if momentum)
    p[I] -= lr * g

Untouched rows keep their values and their momentum (they do not coast, unlike the
exact algorithm). Without momentum and weight decay this is exactly torch.optim.SGD on
a sparse gradient. ``state["momentum_buffer"]`` has SGD's key and shape.
"""

from __future__ import annotations

import torch

from meprop.optim._lazy_rows import LazyRowsMixin

__all__ = ["SGD"]


class SGD(LazyRowsMixin, torch.optim.SGD):
    """torch.optim.SGD with ``lazy``: row updates for meProp weights (see :mod:`meprop.optim`).

    Same constructor arguments as torch.optim.SGD (momentum, dampening, nesterov,
    weight_decay, maximize, ...), plus keyword ``lazy`` (default False: exactly
    torch.optim.SGD).
    """

    def __init__(self, params, *args, lazy: bool = False, **kwargs) -> None:
        torch.optim.SGD.__init__(self, params, *args, **kwargs)
        self._setup_lazy(lazy)

    def _lazy_update(self, group, param, row_index, rows) -> None:
        # row_index: (U,), rows: (U, m) gradient of param[row_index]
        lr, momentum = float(group["lr"]), group["momentum"]
        dampening, weight_decay = group["dampening"], float(group["weight_decay"])
        grad = -rows if group["maximize"] else rows
        param_rows = param.index_select(0, row_index)  # (U, m)
        if weight_decay:
            grad = grad.add(param_rows, alpha=weight_decay)
        if momentum:
            state = self.state[param]
            buffer = state.get("momentum_buffer")
            if buffer is None:
                buffer = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["momentum_buffer"] = buffer
                buffer_rows = grad.clone()
            else:
                buffer_rows = buffer.index_select(0, row_index)
                buffer_rows.mul_(momentum).add_(grad, alpha=1 - dampening)
            buffer.index_copy_(0, row_index, buffer_rows)
            grad = grad.add(buffer_rows, alpha=momentum) if group["nesterov"] else buffer_rows
        param_rows.add_(grad, alpha=-lr)
        param.index_copy_(0, row_index, param_rows)
