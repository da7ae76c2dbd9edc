"""How a meProp layer hands its weight gradient to autograd (and to meprop.optim).

A meProp backward touches only ``U`` rows of the ``(n, m)`` weight gradient (the
output rows any example kept). What it returns for the weight is one of three
layouts, chosen in the forward:

- ``"dense"``: an ``(n, m)`` tensor, zero outside the touched rows. Works with every
  optimizer and tool; costs O(n*m) to materialise. The default.
- ``"row_sparse"``: a coalesced COO tensor (``sparse_dim=1``) holding the ``(U, m)``
  touched rows. O(U*m). Chosen when the layer has ``sparse_grad=True`` or while a lazy
  :mod:`meprop.optim` optimizer holds a request for this weight (:func:`request_row_sparse`).
- ``"dense_tracked"``: dense, plus the touched rows recorded for the optimizer
  (:func:`take_touched_rows`). Chosen instead of ``"row_sparse"`` for a lazy optimizer
  when a process group of more than one rank is initialised: DistributedDataParallel
  all-reduces dense gradients only, and the lazy optimizer all-reduces the recorded
  rows so that every rank updates the same rows. Also chosen, under such a process
  group, for a weight whose touched rows a DDP communication hook asked for
  (:func:`request_touched_rows`, :mod:`meprop.distributed`), whatever the optimizer.

Under such a process group ``sparse_grad=True`` gives ``"dense"`` (or ``"dense_tracked"``
for a requester) with a warning: DDP fails inside torch on a COO gradient it does not expect.

The protocol between layers and optimizers lives here, in process-local registries, and
never on the model: nothing is set on a Parameter, so nothing travels in a pickled model.

- A request for row-sparse gradients belongs to its optimizer (the *owner*): it is held
  through a weak reference and vanishes with the optimizer (or :func:`withdraw_row_sparse`);
  ``torch.optim`` optimizers on the same model then see ordinary dense gradients.
- meProp layers register their weights (:func:`mark_meprop_weight`, in every forward),
  weakly: a lazy optimizer updates only those by rows.
- Touched rows (``"dense_tracked"``) are recorded per weight while a request is live and
  dropped with it.
"""

from __future__ import annotations

import warnings
import weakref

import torch

from meprop import kernels
from meprop._impl import fast_sqrt, sparse_grad_ops
from meprop._impl.coo import coalesced

__all__ = [
    "LAYOUTS",
    "mark_meprop_weight",
    "is_meprop_weight",
    "request_row_sparse",
    "withdraw_row_sparse",
    "request_touched_rows",
    "withdraw_touched_rows",
    "wants_row_sparse_grad",
    "choose_layout",
    "weight_grad_from_rows",
    "weight_grad_from_dense",
    "record_touched_rows",
    "take_touched_rows",
    "clear_touched_rows",
    "distributed_world_size",
]

LAYOUTS = ("dense", "row_sparse", "dense_tracked")

# id(weight) -> weakref to it: the weights of meProp layers (entries leave with their tensor)
_meprop_weights: dict[int, weakref.ref] = {}


class _Requests:
    """Which parameters live owners asked for: weakref to an owner -> ids of its parameters.

    The owner holds its parameters, so their ids stay valid while its entry lives; the entry
    leaves with the owner. ``ids`` is the union over the owners (read in every forward).
    """

    def __init__(self) -> None:
        self._by_owner: dict[weakref.ref, frozenset[int]] = {}
        self.ids: set[int] = set()

    def ask(self, owner: object, ids: frozenset[int]) -> None:
        if ids:
            self._by_owner[weakref.ref(owner, self._forget)] = ids
            self.ids.update(ids)

    def take(self, owner: object) -> frozenset[int]:
        """Remove ``owner``'s entry; the ids it held."""
        taken = frozenset()
        for ref in [ref for ref in self._by_owner if ref() is owner]:
            taken |= self._remove(ref)
        return taken

    def _remove(self, ref: weakref.ref) -> frozenset[int]:
        ids = self._by_owner.pop(ref, frozenset())
        self.ids = set().union(*self._by_owner.values())
        return ids

    def _forget(self, ref: weakref.ref) -> None:
        _release(self._remove(ref))


_row_sparse = _Requests()  # lazy optimizers: row-sparse gradients
_row_tracking = _Requests()  # DDP communication hooks' states: touched rows under a process group
_touched: dict[int, torch.Tensor] = {}  # id(weight) -> bool (n,) rows touched since the last take


def mark_meprop_weight(weight: torch.Tensor) -> None:
    """Register ``weight: (n, m)`` as a meProp layer's weight (rows touched sparsely in backward).

    The first call also installs :mod:`meprop._impl.fast_sqrt` (torch's CPU sqrt, bit for bit,
    without MKL's slow path on the zeros that meProp leaves in adaptive optimizers' moments).
    """
    fast_sqrt.install()  # once per process; a dict lookup afterwards
    key = id(weight)
    entry = _meprop_weights.get(key)
    if entry is None or entry() is not weight:
        _meprop_weights[key] = weakref.ref(weight, lambda _ref, key=key: _forget_weight(key, _ref))


def _forget_weight(key: int, ref: weakref.ref) -> None:
    if _meprop_weights.get(key) is ref:
        del _meprop_weights[key]


def is_meprop_weight(param: torch.Tensor) -> bool:
    """True if a meProp layer (MepropLinear, MepropLSTM) has registered ``param`` as its weight."""
    entry = _meprop_weights.get(id(param))
    return entry is not None and entry() is param


def request_row_sparse(owner: object, params) -> None:
    """``owner`` (a lazy optimizer) asks for row-sparse gradients of ``params`` (replacing its
    previous request). The request lives as long as ``owner`` does."""
    withdraw_row_sparse(owner)
    _row_sparse.ask(owner, frozenset(id(p) for p in params))


def withdraw_row_sparse(owner: object) -> None:
    """Forget ``owner``'s request (and the rows recorded for it)."""
    _release(_row_sparse.take(owner))


def request_touched_rows(owner: object, params) -> None:
    """``owner`` (a DDP communication hook's state) asks meProp layers to record the touched rows
    of ``params`` under a multi-rank process group (dense gradient + rows), adding to its earlier
    request. The request lives as long as ``owner`` does."""
    _row_tracking.ask(owner, _row_tracking.take(owner) | frozenset(id(p) for p in params))


def withdraw_touched_rows(owner: object) -> None:
    """Forget ``owner``'s touched-row request."""
    _release(_row_tracking.take(owner))


def _release(ids: frozenset[int]) -> None:
    """Drop the rows recorded for ``ids`` that no live request wants any more."""
    for key in ids - _row_sparse.ids - _row_tracking.ids:
        _touched.pop(key, None)


def wants_row_sparse_grad(weight: torch.Tensor) -> bool:
    """True while a live lazy optimizer has asked for ``weight``'s gradient to be row-sparse."""
    return id(weight) in _row_sparse.ids


def distributed_world_size() -> int:
    """World size of the default process group, or 1 when none is initialised."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def choose_layout(weight: torch.Tensor, sparse_grad: bool) -> str:
    """The layout of ``weight``'s gradient for one forward: see the module docstring.

    Under a process group of more than one rank the gradient is dense, also with
    ``sparse_grad=True`` (said once per weight in a warning): DistributedDataParallel
    all-reduces dense gradients only.
    """
    if not sparse_grad and id(weight) not in _row_sparse.ids:  # wants_row_sparse_grad, inlined: every forward
        return "dense_tracked" if id(weight) in _row_tracking.ids and distributed_world_size() > 1 else "dense"
    world = distributed_world_size()
    if world > 1:
        if sparse_grad:
            _warn_sparse_grad_is_dense(weight, world)
        wanted = id(weight) in _row_sparse.ids or id(weight) in _row_tracking.ids
        return "dense_tracked" if wanted else "dense"
    sparse_grad_ops.register()  # clip_grad_norm_ & co. will meet this COO gradient
    return "row_sparse"


_warned_dense: dict[int, weakref.ref] = {}  # id(weight) -> weakref: sparse_grad=True made dense, said


def _warn_sparse_grad_is_dense(weight: torch.Tensor, world: int) -> None:
    entry = _warned_dense.get(id(weight))
    if entry is not None and entry() is weight:
        return
    _warned_dense[id(weight)] = weakref.ref(weight, lambda _ref, key=id(weight): _warned_dense.pop(key, None))
    warnings.warn(
        f"meprop: sparse_grad=True gives a dense gradient for the weight {tuple(weight.shape)} under "
        f"a process group of {world} ranks (DistributedDataParallel all-reduces dense gradients "
        f"only); meprop.optim's lazy update and meprop.distributed.row_sparse_hook still use only "
        f"the touched rows", UserWarning, stacklevel=4)


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
    n = weight.shape[0]
    if _compiled_rows_op_applies(rows):
        return torch.ops.meprop.dense_from_rows(row_index, rows, n)  # each row written once
    return rows.new_zeros(weight.shape).index_copy_(0, row_index, rows)  # (n, m)


def _compiled_rows_op_applies(rows: torch.Tensor) -> bool:
    """Whether ``meprop::dense_from_rows`` may build the dense gradient: the compiled kernels
    take CPU float32/64 rows, outside a ``torch.compile`` trace, when no graph of the
    gradient is being recorded (the op has no backward of its own)."""
    if torch.compiler.is_compiling() or (rows.requires_grad and torch.is_grad_enabled()):
        return False
    return kernels.supports(rows)


def weight_grad_from_dense(grad: torch.Tensor, weight: torch.Tensor, layout: str) -> torch.Tensor:
    """``grad: (n, m)``, a dense weight gradient (every row may be nonzero), in ``layout``.

    ``"row_sparse"`` gives a COO tensor of all n rows (``sparse_grad=True`` promises COO);
    ``"dense_tracked"`` records every row as touched. Differentiable in ``grad``.
    """
    grad = grad.to(weight.dtype)
    if layout == "dense":
        return grad
    every_row = torch.arange(weight.shape[0], device=grad.device)  # (n,)
    if layout == "row_sparse":
        return torch.sparse_coo_tensor(
            every_row.unsqueeze(0), grad, weight.shape, is_coalesced=True, check_invariants=False
        )
    record_touched_rows(weight, every_row)
    return grad


def record_touched_rows(weight: torch.Tensor, row_index: torch.Tensor) -> None:
    """Add ``row_index: (U,)`` to the rows of ``weight`` that received a gradient since the last take."""
    touched = _touched.get(id(weight))
    if touched is None or touched.shape[0] != weight.shape[0] or touched.device != weight.device:
        touched = torch.zeros(weight.shape[0], dtype=torch.bool, device=weight.device)
        _touched[id(weight)] = touched
    touched.index_fill_(0, row_index, True)


def take_touched_rows(weight: torch.Tensor) -> torch.Tensor | None:
    """The bool mask ``(n,)`` of rows recorded by :func:`record_touched_rows`, and clear it.

    None when nothing was recorded (the gradient was not produced in ``"dense_tracked"``
    layout).
    """
    return _touched.pop(id(weight), None)


def clear_touched_rows(weight: torch.Tensor) -> None:
    """Forget the recorded rows (the gradient they describe was discarded)."""
    _touched.pop(id(weight), None)

