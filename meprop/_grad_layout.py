"""How a meProp layer hands its weight gradient to autograd (and to meprop.optim).

A meProp backward touches only ``U`` rows of the ``(n, m)`` weight gradient (the
output rows any example kept). What it returns for the weight is one of three
layouts, chosen in the forward from the weight Parameter's markings:

- ``"dense"``: an ``(n, m)`` tensor, zero outside the touched rows. Works with every
  optimizer and tool; costs O(n*m) to materialise. The default.
- ``"row_sparse"``: a coalesced COO tensor (``sparse_dim=1``) holding the ``(U, m)``
  touched rows. O(U*m). Chosen when the layer has ``sparse_grad=True`` or when a lazy
  :mod:`meprop.optim` optimizer asked for it on this weight (:func:`request_row_sparse`).
- ``"dense_tracked"``: dense, plus the touched rows recorded on the Parameter
  (:func:`take_touched_rows`). Chosen instead of ``"row_sparse"`` for a lazy optimizer
  when a process group of more than one rank is initialised: DistributedDataParallel
  all-reduces dense gradients only, and the lazy optimizer all-reduces the recorded
  rows so that every rank updates the same rows. Also chosen, under such a process
  group, when a communication hook (:mod:`meprop.distributed`) asked for the touched
  rows of this weight (:func:`request_touched_rows`), whatever the optimizer.

Markings are plain attributes on the Parameter object (they survive ``convert()``'s
shared parameters and ``torch.save``; a ``copy.deepcopy`` drops them, and the layer
marks its weight again in its next forward).
"""

from __future__ import annotations

import torch

__all__ = [
    "LAYOUTS",
    "mark_meprop_weight",
    "is_meprop_weight",
    "request_row_sparse",
    "request_touched_rows",
    "wants_row_sparse_grad",
    "choose_layout",
    "weight_grad_from_rows",
    "record_touched_rows",
    "take_touched_rows",
    "clear_touched_rows",
    "distributed_world_size",
    "coalesced",
]

LAYOUTS = ("dense", "row_sparse", "dense_tracked")

_MEPROP_WEIGHT = "_meprop_weight"
_ROW_SPARSE_REQUESTED = "_meprop_row_sparse_requested"
_TOUCHED_ROWS = "_meprop_touched_rows"
_TOUCHED_ROWS_REQUESTED = "_meprop_touched_rows_requested"


def mark_meprop_weight(weight: torch.Tensor) -> None:
    """Mark ``weight: (n, m)`` as a meProp layer's weight (rows touched sparsely in backward)."""
    if not getattr(weight, _MEPROP_WEIGHT, False):
        setattr(weight, _MEPROP_WEIGHT, True)


def is_meprop_weight(param: torch.Tensor) -> bool:
    """True if a meProp layer (MepropLinear, MepropLSTM) has marked ``param`` as its weight."""
    return bool(getattr(param, _MEPROP_WEIGHT, False))


def request_row_sparse(param: torch.Tensor, requested: bool = True) -> None:
    """Ask meProp layers to return ``param``'s gradient row-sparse (a lazy optimizer does this)."""
    setattr(param, _ROW_SPARSE_REQUESTED, bool(requested))


def request_touched_rows(param: torch.Tensor, requested: bool = True) -> None:
    """Ask meProp layers to record ``param``'s touched rows under a multi-rank process group
    (dense gradient + :func:`record_touched_rows`; a DDP communication hook does this)."""
    setattr(param, _TOUCHED_ROWS_REQUESTED, bool(requested))


def wants_row_sparse_grad(weight: torch.Tensor) -> bool:
    """True if a lazy optimizer has asked for ``weight``'s gradient to be row-sparse."""
    return bool(getattr(weight, _ROW_SPARSE_REQUESTED, False))


def distributed_world_size() -> int:
    """World size of the default process group, or 1 when none is initialised."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def choose_layout(weight: torch.Tensor, sparse_grad: bool) -> str:
    """The layout of ``weight``'s gradient for one forward: see the module docstring."""
    if sparse_grad:
        return "row_sparse"
    if not wants_row_sparse_grad(weight):
        if getattr(weight, _TOUCHED_ROWS_REQUESTED, False) and distributed_world_size() > 1:
            return "dense_tracked"
        return "dense"
    return "dense_tracked" if distributed_world_size() > 1 else "row_sparse"


def weight_grad_from_rows(
    row_index: torch.Tensor, rows: torch.Tensor, weight: torch.Tensor, layout: str
) -> torch.Tensor:
    """The ``(n, m)`` gradient of ``weight`` holding ``rows: (U, m)`` at sorted unique ``row_index: (U,)``.

    ``rows`` is cast to ``weight``'s dtype (under autocast the backward runs in a lower
    precision; the gradient comes back in the parameter's own dtype, as autocast does).
    """
    rows = rows.to(weight.dtype)
    if layout == "row_sparse":
        return torch.sparse_coo_tensor(
            row_index.unsqueeze(0), rows, weight.shape, is_coalesced=True, check_invariants=False
        )
    if layout == "dense_tracked":
        record_touched_rows(weight, row_index)
    return rows.new_zeros(weight.shape).index_copy_(0, row_index, rows)


def record_touched_rows(weight: torch.Tensor, row_index: torch.Tensor) -> None:
    """Add ``row_index: (U,)`` to the rows of ``weight`` that received a gradient since the last take."""
    touched = getattr(weight, _TOUCHED_ROWS, None)
    if touched is None:
        touched = torch.zeros(weight.shape[0], dtype=torch.bool, device=weight.device)
        setattr(weight, _TOUCHED_ROWS, touched)
    touched.index_fill_(0, row_index, True)


def take_touched_rows(weight: torch.Tensor) -> torch.Tensor | None:
    """The bool mask ``(n,)`` of rows recorded by :func:`record_touched_rows`, and clear it.

    None when nothing was recorded (the gradient was not produced in ``"dense_tracked"``
    layout).
    """
    touched = getattr(weight, _TOUCHED_ROWS, None)
    if touched is not None:
        setattr(weight, _TOUCHED_ROWS, None)
    return touched


def clear_touched_rows(weight: torch.Tensor) -> None:
    """Forget the recorded rows (the gradient they describe was discarded)."""
    if getattr(weight, _TOUCHED_ROWS, None) is not None:
        setattr(weight, _TOUCHED_ROWS, None)


def coalesced(grad: torch.Tensor) -> torch.Tensor:
    """``grad`` (COO) coalesced, cheaply when its row indices already are sorted and unique.

    meProp layers emit coalesced row-sparse gradients, but autograd's gradient
    accumulation rebuilds the tensor without the flag; re-checking the ``(U,)`` row
    indices costs O(U) where :meth:`torch.Tensor.coalesce` would sort the ``(U, m)`` values.
    """
    if grad.is_coalesced():
        return grad
    if grad.sparse_dim() == 1:
        rows = grad._indices()[0]  # (U,)
        if rows.numel() < 2 or bool((rows[1:] > rows[:-1]).all()):
            return grad._coalesced_(True)
    return grad.coalesce()
