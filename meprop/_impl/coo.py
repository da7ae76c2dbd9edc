"""Row-sparse (COO) gradients: keeping them coalesced without re-sorting what already is."""

from __future__ import annotations

import torch

__all__ = ["coalesced"]


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
