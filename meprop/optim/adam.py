"""meprop.optim.Adam and AdamW: torch.optim.Adam/AdamW with a lazy row update for meProp weights.

``lazy=False`` is torch.optim's algorithm. ``lazy=True`` updates a meProp weight only in
the rows touched this step, with torch.optim.SparseAdam's arithmetic on those rows::

    m[I] += (1 - beta1) * (g - m[I])
    v[I] += (1 - beta2) * (g*g - v[I])
    p[I] -= lr * sqrt(1 - beta2**t) / (1 - beta1**t) * m[I] / (sqrt(v[I]) + eps)

where ``t`` counts the parameter's steps (as SparseAdam's and Adam's ``state["step"]``),
``I`` the touched rows and ``g: (U, m)`` their gradient. SparseAdam has no weight decay,
amsgrad or maximize; here they act on the touched rows only: L2 weight decay adds
``weight_decay * p[I]`` to ``g`` (Adam), decoupled decay multiplies ``p[I]`` by
``1 - lr * weight_decay`` (AdamW), amsgrad keeps ``max(v)`` per row and divides by it.
Untouched rows keep their values and their moments. The optimizer state has Adam's
keys and layout, so a state_dict moves between lazy and exact mode (and torch.optim.Adam).
"""

from __future__ import annotations

import math

import torch
from torch.optim.optimizer import _get_scalar_dtype

from meprop import dispatch
from meprop.optim._lazy_rows import LazyRowsMixin

__all__ = ["Adam", "AdamW"]


class _LazyAdamRows(LazyRowsMixin):
    """The lazy row update shared by Adam and AdamW."""

    def _lazy_update(self, group, param, row_index, rows) -> None:
        # row_index: (U,), rows: (U, m) gradient of param[row_index]
        state = self.state[param]
        if len(state) == 0:
            self._init_adam_state(group, param, state)
        state["step"] += 1
        step = float(state["step"])
        beta1, beta2 = (float(beta) for beta in group["betas"])
        amsgrad = group["amsgrad"]
        names = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if amsgrad else [])
        tensors = [param] + [state[n] for n in names]
        if _rows_kernel_takes(tensors, rows):
            # meprop's compiled row update: SparseAdam's arithmetic, one pass, rows in parallel.
            torch.ops.meprop.lazy_adam_rows_(
                param.detach(), state["exp_avg"], state["exp_avg_sq"],
                state["max_exp_avg_sq"] if amsgrad else None, row_index, rows,
                float(group["lr"]) * math.sqrt(1 - beta2**step) / (1 - beta1**step),
                float(group["lr"]), beta1, beta2, float(group["eps"]), float(group["weight_decay"]),
                bool(group.get("decoupled_weight_decay", False)), bool(group["maximize"]),
            )
            return
        # The fallback: torch's fused Adam kernel, run in place on the touched rows (as row views). Its
        # denominator is sqrt(v) / sqrt(1 - beta2**t) + eps'; eps' = eps / sqrt(1 - beta2**t)
        # makes it SparseAdam's (sqrt(v) + eps) / sqrt(1 - beta2**t), with the same step size.
        param_rows, *state_rows = self._row_views([param] + [state[n] for n in names], row_index)
        grad_rows = list(rows.unbind(0))  # (m,) each
        steps = [torch.tensor(step, dtype=torch.float32, device=param.device)] * len(grad_rows)
        fused = torch._fused_adamw_ if group.get("decoupled_weight_decay", False) else torch._fused_adam_
        fused(
            param_rows, grad_rows, state_rows[0], state_rows[1], state_rows[2] if amsgrad else [],
            steps, lr=float(group["lr"]), beta1=beta1, beta2=beta2,
            weight_decay=float(group["weight_decay"]),
            eps=group["eps"] / math.sqrt(1 - beta2**step),
            amsgrad=amsgrad, maximize=group["maximize"],
        )

    @staticmethod
    def _init_adam_state(group, param, state) -> None:
        """Adam's own state layout, so state dicts move between lazy and exact mode."""
        if group["capturable"] or group["fused"]:
            step = torch.zeros((), dtype=_get_scalar_dtype(is_fused=group["fused"]), device=param.device)
        else:
            step = torch.tensor(0.0, dtype=_get_scalar_dtype())
        state["step"] = step
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)


def _rows_kernel_takes(tensors: list[torch.Tensor], rows: torch.Tensor) -> bool:
    """True when the compiled row update applies (:func:`meprop.dispatch.row_kernel`)."""
    return dispatch.row_kernel(tensors, rows)


class Adam(_LazyAdamRows, torch.optim.Adam):
    """torch.optim.Adam with ``lazy``: row updates for meProp weights (see :mod:`meprop.optim`).

    Same constructor arguments as torch.optim.Adam, plus keyword ``lazy`` (default False:
    exactly torch.optim.Adam).
    """

    def __init__(self, params, *args, lazy: bool = False, **kwargs) -> None:
        torch.optim.Adam.__init__(self, params, *args, **kwargs)
        self._setup_lazy(lazy)


class AdamW(_LazyAdamRows, torch.optim.AdamW):
    """torch.optim.AdamW with ``lazy``: row updates for meProp weights (see :mod:`meprop.optim`).

    Same constructor arguments as torch.optim.AdamW, plus keyword ``lazy`` (default False:
    exactly torch.optim.AdamW). Lazily, decoupled weight decay shrinks the touched rows only.
    """

    def __init__(self, params, *args, lazy: bool = False, **kwargs) -> None:
        torch.optim.AdamW.__init__(self, params, *args, **kwargs)
        self._setup_lazy(lazy)
