"""The part every meprop.optim optimizer shares: which parameters get a lazy row update.

An optimizer here is its torch.optim namesake plus one option, ``lazy``, stored in each
param group (so it travels through ``state_dict`` and can differ per group):

- ``lazy=False``: the torch.optim algorithm, unchanged. A row-sparse gradient of a meProp
  weight (``sparse_grad=True``) is densified first, which is the same update.
- ``lazy=True``: the weights of meProp layers are updated only in the rows that received
  a gradient this step, together with their optimizer state (torch.optim.SparseAdam's
  semantics, extended to weight decay, momentum and amsgrad). The optimizer asks the
  layers for row-sparse gradients (:func:`meprop._impl.grad_layout.request_row_sparse`), so
  the gradient, ``zero_grad()`` and the update all cost O(rows touched * in_features).
  Every other parameter goes through the torch.optim algorithm as it is.

The request belongs to the optimizer: it is kept in a process-local registry keyed
weakly by the optimizer, never on the parameters. Once the optimizer is gone (or a group
is made ``lazy=False`` through ``load_state_dict``), the layers give ordinary dense
gradients again, so ``torch.optim`` works on the same model, and a pickled model carries
nothing of it.

How a step runs (:meth:`LazyRowsMixin.step`): the lazy parameters' gradients are taken
out of ``.grad`` for the duration of torch's own ``step()`` (which therefore updates the
rest exactly as torch.optim does), put back, then each lazy parameter gets its row update
(:meth:`_lazy_update`, written by each optimizer).

Rows of a meProp weight, by gradient layout: a COO gradient gives its (coalesced) row
indices; a dense gradient with rows recorded by the layer (under a multi-rank process
group, where DistributedDataParallel needs dense gradients) gives those rows, all-reduced
across ranks so that every rank updates the same ones; any other dense gradient counts
as touching every row.
"""

from __future__ import annotations

import warnings

import torch

from meprop.checks import check_bool
from meprop._impl.coo import coalesced
from meprop._impl.grad_layout import (
    clear_touched_rows,
    distributed_world_size,
    is_meprop_weight,
    request_row_sparse,
    take_touched_rows,
    withdraw_row_sparse,
)

__all__ = ["LazyRowsMixin"]


class LazyRowsMixin:
    """Mixed into a torch.optim optimizer class: adds the ``lazy`` group option and the lazy step.

    Subclasses implement ``_lazy_update(group, param, row_index, rows)`` with
    ``row_index: (U,)`` sorted unique rows and ``rows: (U, m)`` their gradient.
    """

    def _setup_lazy(self, lazy: bool) -> None:
        self.defaults["lazy"] = check_bool(lazy, "lazy")
        for group in self.param_groups:
            self._configure_group(group)
        self._request_rows()
        self._checked_meprop_weights = False

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        if "lazy" in self.defaults:  # not during torch's __init__, which adds groups first
            self._configure_group(self.param_groups[-1])
            self._request_rows()

    def _configure_group(self, group: dict) -> None:
        lazy = check_bool(group.setdefault("lazy", self.defaults["lazy"]), "lazy")
        if lazy and group.get("differentiable", False):
            raise ValueError(
                f"{type(self).__name__}: lazy=True cannot be combined with differentiable=True "
                f"(the row update is not differentiable); use lazy=False"
            )

    def _request_rows(self) -> None:
        """Ask (for as long as this optimizer lives) for row-sparse gradients of the lazy groups."""
        lazy = [param for group in self.param_groups if group["lazy"] for param in group["params"]]
        if lazy:
            request_row_sparse(self, lazy)
        else:
            withdraw_row_sparse(self)

    def load_state_dict(self, state_dict: dict) -> None:
        # torch's load_state_dict ends in __setstate__, which fills and checks the groups
        super().load_state_dict(state_dict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                clear_touched_rows(param)
        super().zero_grad(set_to_none)

    @torch.no_grad()
    def step(self, closure=None):
        """One step: torch.optim's algorithm for the dense parameters, row updates for the lazy ones."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._warn_if_nothing_is_lazy()
        lazy_rows, stashed = [], []
        try:
            for group_index, group in enumerate(self.param_groups):
                for param_index, param in enumerate(group["params"]):
                    grad = param.grad
                    if grad is None:
                        continue
                    if group["lazy"] and is_meprop_weight(param):
                        stashed.append((param, grad))
                        param.grad = None
                        lazy_rows.append((group, param, grad))
                    elif grad.layout != torch.strided:
                        stashed.append((param, grad))
                        name = _param_name(group, group_index, param_index, param)
                        param.grad = self._densified(grad, group, param, name)
            super().step()
        finally:
            for param, grad in stashed:
                param.grad = grad
        for group, param, grad in lazy_rows:
            row_index, rows = _touched_rows(param, grad, lambda: self._param_label(param))
            if row_index.numel():
                self._lazy_update(group, param, row_index, rows)
        return loss

    def _densified(self, grad, group, param, name) -> torch.Tensor:
        """The dense equivalent of a sparse gradient, for the torch.optim algorithm."""
        cls = type(self).__name__
        if grad.layout != torch.sparse_coo:
            raise RuntimeError(
                f"{cls}: parameter {name} has a gradient of layout {grad.layout}; accepted are "
                f"dense (torch.strided) gradients and, for meProp weights, row-sparse COO ones"
            )
        if group["lazy"]:
            raise RuntimeError(
                f"{cls}(lazy=True): parameter {name} has a sparse gradient but is not a meProp "
                f"layer's weight, so it has no lazy update here. Put it in a param group with "
                f"lazy=False (updated as torch.optim would update its dense gradient) or give it "
                f"to torch.optim.SparseAdam"
            )
        return grad.to_dense()

    def _param_label(self, param) -> str:
        for group_index, group in enumerate(self.param_groups):
            for param_index, candidate in enumerate(group["params"]):
                if candidate is param:
                    return _param_name(group, group_index, param_index, param)
        return f"of shape {tuple(param.shape)}"

    def _warn_if_nothing_is_lazy(self) -> None:
        if self._checked_meprop_weights:
            return
        self._checked_meprop_weights = True
        lazy_params = [p for g in self.param_groups if g["lazy"] for p in g["params"]]
        if lazy_params and not any(is_meprop_weight(p) for p in lazy_params):
            warnings.warn(
                f"{type(self).__name__}(lazy=True): none of the optimized parameters is the "
                f"weight of a meProp layer (MepropLinear, MepropLSTM), so every parameter gets "
                f"the dense torch.optim update; convert the model with meprop.convert() first",
                UserWarning,
                stacklevel=3,
            )

    def _lazy_update(self, group, param, row_index, rows) -> None:  # pragma: no cover
        raise NotImplementedError

    def _row_views(self, tensors: list[torch.Tensor], row_index: torch.Tensor) -> list[list[torch.Tensor]]:
        """For each tensor ``(n, m)``, the list of its rows ``row_index`` as ``(m,)`` views.

        torch's fused optimizer kernels take lists of tensors; handing them the touched
        rows as views updates the rows in place in one pass, with no gather and scatter.
        Each tensor's n row views are made once and cached (keyed by its storage, so a
        tensor replaced by ``load_state_dict`` gets new views).
        """
        cache = self.__dict__.setdefault("_row_view_cache", {})
        rows = row_index.tolist()
        out = []
        for tensor in tensors:
            key = (tensor.data_ptr(), tensor.shape, tensor.stride(), tensor.dtype, tensor.device)
            entry = cache.get(id(tensor))
            if entry is None or entry[0] != key:
                entry = (key, tensor.detach().unbind(0))
                cache[id(tensor)] = entry
            views = entry[1]
            out.append([views[r] for r in rows])
        return out

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_row_view_cache", None)  # views are rebuilt on demand; never pickled
        return state

    def __setstate__(self, state):
        # Unpickling, deep-copying and load_state_dict come here. Groups saved without ``lazy``
        # (by torch.optim, or before the option existed) get this optimizer's default, as
        # torch's own __setstate__ does for its newer options.
        super().__setstate__(state)
        if "lazy" in self.defaults:
            for group in self.param_groups:
                self._configure_group(group)
            self._request_rows()  # an unpickled or deep-copied optimizer asks again


def _param_name(group: dict, group_index: int, param_index: int, param) -> str:
    names = group.get("param_names")
    if names and param_index < len(names):
        return repr(names[param_index])
    return f"params[{param_index}] of param group {group_index} (shape {tuple(param.shape)})"


def _touched_rows(param, grad, label) -> tuple[torch.Tensor, torch.Tensor]:
    """``row_index: (U,)`` sorted unique and ``rows: (U, m)`` of a meProp weight's gradient."""
    if grad.layout == torch.sparse_coo:
        if grad.sparse_dim() != 1:
            raise RuntimeError(
                f"lazy update: parameter {label()} has a COO gradient with sparse_dim="
                f"{grad.sparse_dim()}; accepted is row-sparse (sparse_dim=1), as meProp layers "
                f"produce"
            )
        grad = coalesced(grad)
        return grad._indices()[0], grad._values()
    if grad.layout != torch.strided:
        raise RuntimeError(
            f"lazy update: parameter {label()} has a gradient of layout {grad.layout}; accepted "
            f"are row-sparse COO and dense gradients"
        )
    touched = take_touched_rows(param)
    if distributed_world_size() > 1:
        # Every rank must update the same rows: all-reduce the recorded rows (a rank that
        # recorded none counts every row as touched, as its dense gradient does).
        if touched is None:
            touched = torch.ones(param.shape[0], dtype=torch.bool, device=param.device)
        flags = touched.to(torch.uint8)
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        touched = flags.bool()
    if touched is None:
        return torch.arange(param.shape[0], device=param.device), grad
    row_index = touched.nonzero().squeeze(1)
    return row_index, grad.index_select(0, row_index)
