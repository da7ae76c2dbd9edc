"""Kernels torch lacks for row-sparse (COO) gradients, so torch's own gradient tools take them.

A lazy :mod:`meprop.optim` optimizer makes meProp weight gradients row-sparse COO
tensors (only the touched rows are stored). ``torch.nn.utils.clip_grad_norm_`` and
``clip_grad_value_`` then stop at ops that have no Sparse kernel in torch:
``aten::linalg_vector_norm`` (the per-gradient norm) and ``aten::clamp_`` /
``clamp_min_`` / ``clamp_max_``. This module registers those kernels for the SparseCPU
and SparseCUDA dispatch keys with :class:`torch.library.Library`, computing on the
stored values only: a COO tensor's implicit entries are zeros, which add nothing to a
p-norm with p > 0 and which clamping to an interval around 0 leaves unchanged. Cases
where they would matter (a norm over some dims, a negative order, bounds that exclude
0) raise a clear error instead of returning a wrong number.

Nothing else changes: dense tensors never reach these kernels, and an op torch already
implements for sparse tensors is not touched. :func:`register` runs when a meProp layer
first chooses a row-sparse gradient, not at ``import meprop``: a process that never makes
one keeps torch's sparse dispatch as torch ships it.
"""

from __future__ import annotations

import math
import threading

import torch

from meprop._impl.coo import coalesced

__all__ = ["SPARSE_KEYS", "register", "registered"]

#: The dispatch keys these kernels are registered for.
SPARSE_KEYS = ("SparseCPU", "SparseCUDA")

_LIBRARY: torch.library.Library | None = None  # kept alive for the registrations' lifetime
_LOCK = threading.Lock()


def _coalesced_values(tensor: torch.Tensor) -> torch.Tensor:
    return coalesced(tensor)._values()


def _sparse_vector_norm(self, ord=2, dim=None, keepdim=False, *, dtype=None):
    """``linalg_vector_norm`` of a COO tensor over all its entries (``dim=None``)."""
    if dim is not None and len(dim) not in (0, self.dim()):
        raise NotImplementedError(
            f"meprop: vector_norm of a sparse tensor is supported over all entries only "
            f"(dim=None), got dim={list(dim)}; use .to_dense() first"
        )
    order = float(ord)
    values = _coalesced_values(self)
    has_implicit_zeros = values.numel() < self.numel()
    if order <= 0 and order != 0 and has_implicit_zeros:
        # Negative orders and -inf are dominated by the implicit zeros: the norm is 0.
        result = torch.zeros((), dtype=dtype or _real_dtype(self.dtype), device=self.device)
    else:
        result = torch.linalg.vector_norm(values, ord, dtype=dtype)
    if keepdim:
        result = result.reshape([1] * self.dim())
    return result


def _real_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.empty((), dtype=dtype).real.dtype if dtype.is_complex else dtype


def _check_bounds_keep_zero(low, high) -> None:
    low_value = -math.inf if low is None else float(low)
    high_value = math.inf if high is None else float(high)
    if not low_value <= 0.0 <= high_value:
        raise NotImplementedError(
            f"meprop: clamping a sparse tensor to [{low}, {high}] would change its implicit "
            f"zeros; only bounds with min <= 0 <= max are supported (use .to_dense() first)"
        )


def _clamp_values_(self: torch.Tensor, low, high) -> torch.Tensor:
    _check_bounds_keep_zero(low, high)
    if not coalesced(self).is_coalesced():
        # Clamping is not linear: duplicate entries must be summed first, in place.
        self.copy_(self.coalesce())
    self._values().clamp_(min=low, max=high)
    return self


def _sparse_clamp_(self, min=None, max=None):
    return _clamp_values_(self, min, max)


def _sparse_clamp_min_(self, min):
    return _clamp_values_(self, min, None)


def _sparse_clamp_max_(self, max):
    return _clamp_values_(self, None, max)


def registered() -> bool:
    """Whether the kernels are registered in this process."""
    return _LIBRARY is not None


def register() -> None:
    """Register the kernels (once per process; later calls do nothing)."""
    global _LIBRARY
    if _LIBRARY is not None:
        return
    with _LOCK:
        if _LIBRARY is not None:
            return
        library = torch.library.Library("aten", "IMPL")
        for key in SPARSE_KEYS:
            library.impl("linalg_vector_norm", _sparse_vector_norm, key)
            library.impl("clamp_", _sparse_clamp_, key)
            library.impl("clamp_min_", _sparse_clamp_min_, key)
            library.impl("clamp_max_", _sparse_clamp_max_, key)
        _LIBRARY = library
