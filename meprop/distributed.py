"""meprop.distributed: a DistributedDataParallel communication hook that sends only touched rows.

A meProp layer's weight gradient is zero outside the rows its backward touched (the
output rows any example kept, paper Section 2). Plain DDP all-reduces every entry of
every weight, zeros included. :func:`row_sparse_hook` sends, for each meProp weight of
a gradient bucket, the cheapest of three exact forms::

    state = meprop.distributed.RowSparseState(model)        # model: the converted module
    ddp.register_comm_hook(state, meprop.distributed.row_sparse_hook)

- ``"gather"``: each rank all-gathers its touched rows' values ``(U_r, m)`` (padded to
  the largest ``U_r``); every rank sums the ranks' rows in rank order.
- ``"union"``: the rows any rank touched, ``(U, m)`` with ``U = |union|``, all-reduced
  (the synchronized unified mode makes this exactly k rows per layer on every rank).
- ``"dense"``: the whole ``(n, m)`` gradient all-reduced, as DDP does (the fallback).

The other parameters of the bucket (biases, dense layers) are all-reduced as usual, in
one collective with the ``"union"`` rows. Which rows each rank touched comes from the
meProp layers (they record them when the hook's state asks, :func:`meprop._impl.grad_layout.request_touched_rows`), exchanged
first as one byte per row (``(W-1)·n`` bytes per weight and rank, all-gathered).

Bytes each rank sends (ring algorithms, :func:`all_reduce_bytes` / :func:`all_gather_bytes`;
``W`` ranks, ``e`` bytes per element, a row is ``m·e`` bytes):

- dense: ``2(W-1)/W · n·m·e``; union: ``2(W-1)/W · U·m·e``; gather: ``(W-1) · U_max·m·e``.
- So gather beats dense while ``W·U_max < 2n`` and union while ``U < n``: at 2 ranks the
  hook falls back to dense only when every row is touched (union and some rank's own
  rows); gather wins over union while ``(W-1)·U_max < 2(W-1)/W · U`` (ranks touching
  different rows); union wins as ranks grow or agree on rows. Ties go to dense.
- After a weight falls back to dense, its rows are not exchanged again (so the fallback
  costs exactly what DDP costs) until a quarter of the rows of its averaged gradient are
  zero (:data:`REPROBE_ZERO_ROWS`); the lazy optimizer then all-reduces the rows itself.

Exactness: the result equals DDP's all-reduce mean (the ranks' rows are divided by W
before they are summed, as torch's default hook does), and is bitwise identical on every
rank (rows are summed in rank order). It assumes that a meProp weight's gradient comes
from its meProp layer(s) alone, as the lazy optimizer does; a loss term on a meProp weight
(an L2 penalty written in the loss) would touch other rows: ``RowSparseState(verify=True)``
checks that each step and raises (use the optimizer's ``weight_decay`` instead).
Composes with ``no_sync()`` (the layers record rows across the accumulated backwards),
``clip_grad_norm_`` (the hook's result is the averaged dense gradient) and
:mod:`meprop.optim` (exact; lazy: the optimizer is handed the union of the ranks'
touched rows, so every rank updates the same rows).

:func:`allreduce_hook` is torch's default all-reduce with the same byte counter, for
comparisons.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist

from meprop._impl import grad_layout as _grad_layout
from meprop.checks import check_bool
from meprop._impl.comm_bytes import FORMS, CommCounter, all_gather_bytes, all_reduce_bytes, form_costs

__all__ = [
    "FORMS",
    "CommCounter",
    "RowSparseState",
    "row_sparse_hook",
    "allreduce_hook",
    "all_reduce_bytes",
    "all_gather_bytes",
    "form_costs",
]

class RowSparseState:
    """The state of :func:`row_sparse_hook` (and of :func:`allreduce_hook`): group and counters.

    Args:
        module: the model (or its DDP wrapper); its meProp weights are asked to record
            their touched rows from the first step on (without it, from the second step:
            the first is all-reduced). A module without meProp layers gets a warning.
        process_group: the group DDP reduces over (None: the default group).
        verify: check at every step that each meProp weight's gradient is zero outside
            the rows its layers recorded (costs a read of the gradient); raise otherwise.
    """

    def __init__(self, module: torch.nn.Module | None = None, process_group=None, *,
                 verify: bool = False) -> None:
        self.process_group = process_group
        self.verify = check_bool(verify, "verify")
        self.counter = CommCounter()
        self._warned = False
        self._saw_meprop = False
        self._dense_until_sparse: set[int] = set()  # ids of weights whose last probe said dense
        if module is not None:
            weights = [p for p in module.parameters() if _grad_layout.is_meprop_weight(p)]
            _grad_layout.request_touched_rows(self, weights)
            self._saw_meprop = bool(weights)
            if not weights:
                self._warn_no_meprop()

    @property
    def group(self):
        return self.process_group if self.process_group is not None else dist.group.WORLD

    def _warn_no_meprop(self) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(
                "meprop.distributed.row_sparse_hook: the model has no meProp layer weight "
                "(MepropLinear, MepropLSTM), so every gradient is all-reduced as DDP does; "
                "convert the model with meprop.convert() before wrapping it in DDP",
                UserWarning, stacklevel=3,
            )


# ------------------------------------------------------------------ the touched-row protocol
def _take_rows(weight: torch.Tensor) -> torch.Tensor | None:
    """The bool mask ``(n,)`` of rows touched since the last take (None: not recorded)."""
    return _grad_layout.take_touched_rows(weight)


def _hand_back_rows(weight: torch.Tensor, union: torch.Tensor) -> None:
    """Give a lazy optimizer the ranks' union of touched rows ``union: (n,) bool``."""
    if _grad_layout.wants_row_sparse_grad(weight):
        _grad_layout.record_touched_rows(weight, union.nonzero().squeeze(1))


# ------------------------------------------------------------------ hooks
def allreduce_hook(state, bucket):  # no annotations: DDP checks them literally
    """torch's default all-reduce hook (mean over ranks), counting the bytes it sends."""
    buffer = bucket.buffer()
    state.counter.planned_payload += sum(p.numel() for p in bucket.parameters()) * buffer.element_size()
    return _all_reduce_mean(state, buffer).then(lambda fut: fut.value()[0])


def _all_reduce_mean(state: RowSparseState, flat: torch.Tensor) -> torch.futures.Future:
    state.counter.all_reduce_payload += flat.numel() * flat.element_size()
    state.counter.calls += 1
    flat.div_(dist.get_world_size(state.group))
    return dist.all_reduce(flat, group=state.group, async_op=True).get_future()


def row_sparse_hook(state, bucket):  # no annotations: DDP checks them literally
    """DDP communication hook: meProp weights' touched rows only (module docstring)."""
    buffer = bucket.buffer()
    params = list(bucket.parameters())
    views = _param_views(buffer, params)
    candidates = [i for i, p in enumerate(params) if _grad_layout.is_meprop_weight(p) and p.dim() == 2]
    _grad_layout.request_touched_rows(state, [params[i] for i in candidates])
    state._saw_meprop |= bool(candidates)
    if bucket.is_last() and not state._saw_meprop:
        state._warn_no_meprop()
    world = dist.get_world_size(state.group)
    if not candidates or world == 1:
        return allreduce_hook(state, bucket)
    # A weight whose last exchange chose dense is all-reduced without exchanging rows (so a
    # fallback costs exactly what DDP costs) until its averaged gradient shows a zero row.
    skipped = [i for i in candidates if id(params[i]) in state._dense_until_sparse]
    probed = [i for i in candidates if i not in skipped]
    for i in skipped:
        _pass_rows_on(state, params[i], views[i])
    masks = _exchange_rows(state, [params[i] for i in probed], [views[i] for i in probed]) if probed else []
    plan = {i: _choose_form(mask, views[i]) for i, mask in zip(probed, masks)}
    _count_plan(state.counter, views, plan, skipped)
    for i, (form, mask) in plan.items():
        _hand_back_rows(params[i], mask.any(0))
        if form == "dense":
            state._dense_until_sparse.add(id(params[i]))
    future = _send(state, buffer, views, plan, world)
    if not skipped:
        return future
    watched = [(params[i], views[i]) for i in skipped]
    return future.then(lambda fut: _watch_zero_rows(state, watched, fut.value()))


def _pass_rows_on(state: RowSparseState, weight, grad) -> None:
    """A weight all-reduced without a row exchange: the lazy optimizer gets this rank's rows
    (it all-reduces them itself, as without the hook)."""
    mask = _take_rows(weight)
    if mask is not None:
        if state.verify:
            _verify_rows(weight, grad, mask)
        _hand_back_rows(weight, mask)


#: A weight left dense is probed again when at least this share of its averaged gradient's
#: rows is zero (a touched row can have a zero gradient, so a few zero rows prove nothing).
REPROBE_ZERO_ROWS = 0.25


def _watch_zero_rows(state: RowSparseState, watched: list, buffer: torch.Tensor) -> torch.Tensor:
    """After a dense all-reduce: a weight whose averaged gradient has enough zero rows is probed
    again (the same decision on every rank: the averaged gradient is the same)."""
    for weight, grad in watched:
        zero_rows = int((~grad.ne(0).any(dim=1)).sum())
        if zero_rows >= REPROBE_ZERO_ROWS * grad.shape[0]:
            state._dense_until_sparse.discard(id(weight))
    return buffer


def _count_plan(counter: CommCounter, views: list, plan: dict, skipped: list) -> None:
    """What the plan sends, from the shapes and the row counts: forms, rows, planned payload."""
    for i in skipped:
        n = views[i].shape[0]
        counter.forms["dense"] += 1
        counter.rows_sent += n
        counter.weights.append({"n": n, "m": views[i].numel() // max(n, 1), "form": "dense",
                                "rows_max": n, "rows_union": n})
    for i, view in enumerate(views):
        form, mask = plan.get(i, ("dense", None))
        n = view.shape[0] if view.dim() else 1
        rows = n if form == "dense" else int(mask.any(0).sum() if form == "union" else mask.sum(1).max())
        if i in plan:
            counter.forms[form] += 1
            counter.rows_sent += rows
            counter.planned_payload += n  # one flag byte per row
            counter.weights.append({"n": n, "m": view.numel() // max(n, 1), "form": form,
                                    "rows_max": int(mask.sum(1).max()), "rows_union": int(mask.any(0).sum())})
        counter.planned_payload += rows * (view.numel() // max(n, 1)) * view.element_size()


def _param_views(buffer: torch.Tensor, params: list) -> list[torch.Tensor]:
    """Each parameter's gradient as a view of the flat bucket ``buffer`` (DDP packs them in order)."""
    views, offset = [], 0
    for param in params:
        views.append(buffer.narrow(0, offset, param.numel()).view(param.shape))
        offset += param.numel()
    if offset != buffer.numel():
        raise RuntimeError(f"row_sparse_hook: a bucket of {buffer.numel()} elements holds parameters "
                           f"of {offset} elements; DDP's bucket layout is not the one expected")
    return views


def _exchange_rows(state: RowSparseState, weights: list, grads: list) -> list[torch.Tensor]:
    """All-gather one byte per row of each weight: ``(W, n)`` bool masks, the same on every rank.

    A weight without recorded rows (the first step, or a backward that did not record)
    counts every row as touched.
    """
    flags = []
    for weight, grad in zip(weights, grads):
        mask = _take_rows(weight)
        if mask is None:
            mask = torch.ones(grad.shape[0], dtype=torch.bool, device=grad.device)
        elif state.verify:
            _verify_rows(weight, grad, mask)
        flags.append(mask.to(torch.uint8))
    local = torch.cat(flags)  # (sum n,)
    world = dist.get_world_size(state.group)
    gathered = [torch.empty_like(local) for _ in range(world)]
    state.counter.flag_payload += local.numel()
    state.counter.calls += 1
    dist.all_gather(gathered, local, group=state.group)
    every = torch.stack(gathered).bool()  # (W, sum n)
    return list(every.split([f.numel() for f in flags], dim=1))


def _verify_rows(weight, grad, mask) -> None:
    stray = grad.ne(0).any(dim=1) & ~mask  # (n,)
    if bool(stray.any()):
        raise RuntimeError(
            f"row_sparse_hook(verify=True): the gradient of a meProp weight of shape "
            f"{tuple(weight.shape)} is non-zero in {int(stray.sum())} row(s) its meProp layers did "
            f"not touch (a loss term on the weight?); the hook would drop them. Put the penalty in "
            f"the optimizer (weight_decay) or register torch's allreduce hook instead"
        )


def _choose_form(mask: torch.Tensor, grad: torch.Tensor) -> tuple[str, torch.Tensor]:
    """The cheapest form for ``grad: (n, m)`` given every rank's rows ``mask: (W, n)``; ties: dense."""
    world, n = mask.shape
    row_bytes = grad[0].numel() * grad.element_size() if n else 0
    counts = mask.sum(dim=1)  # (W,)
    costs = form_costs(n, row_bytes, (int(counts.max()), int(mask.any(0).sum())), world)
    form = min(FORMS, key=lambda f: (costs[f], FORMS.index(f)))
    return form, mask


def _send(state: RowSparseState, buffer, views, plan, world) -> torch.futures.Future:
    """Launch the all-reduce (dense + union rows) and the all-gather (gather rows); combine."""
    rank = dist.get_rank(state.group)
    reduced, scatter = [], []  # pieces of the all-reduced tensor; where each goes back
    for i, view in enumerate(views):
        form, mask = plan.get(i, ("dense", None))
        if form == "dense":
            reduced.append(view.reshape(-1))
            scatter.append((view, None))
        elif form == "union":
            rows = mask.any(0).nonzero().squeeze(1)  # (U,)
            reduced.append(view.index_select(0, rows).reshape(-1))
            scatter.append((view, rows))
    gathered = [(views[i], mask) for i, (form, mask) in plan.items() if form == "gather"]
    futures, finish = [], []
    if reduced:
        whole = len(scatter) == len(views) and all(rows is None for _, rows in scatter)
        flat = buffer if whole else torch.cat(reduced)
        futures.append(_all_reduce_mean(state, flat))
        if not whole:
            finish.append(lambda: _unpack_reduced(flat, scatter))
    if gathered:
        future, combine = _gather_rows(state, gathered, rank, world)
        futures.append(future)
        finish.append(combine)
    if not futures:
        done = torch.futures.Future()
        done.set_result(buffer)
        return done

    def combine_all(_):
        for step in finish:
            step()
        return buffer

    return torch.futures.collect_all(futures).then(combine_all)


def _unpack_reduced(flat: torch.Tensor, scatter: list) -> None:
    offset = 0
    for view, rows in scatter:
        size = view.numel() if rows is None else rows.numel() * view[0].numel()
        piece = flat.narrow(0, offset, size)
        offset += size
        if rows is None:
            view.copy_(piece.view(view.shape))
        else:
            view.index_copy_(0, rows, piece.view(rows.numel(), *view.shape[1:]))


def _gather_rows(state: RowSparseState, gathered: list, rank: int, world: int):
    """All-gather each rank's touched rows (padded to the largest count); the combine step."""
    layout, total = [], 0
    for view, mask in gathered:
        u_max = int(mask.sum(dim=1).max())
        layout.append((view, mask, mask[rank].nonzero().squeeze(1), u_max, total))
        total += u_max * view[0].numel()
    local = gathered[0][0].new_empty(total)  # each weight's own rows / W, zero padding
    for view, mask, own_rows, u_max, offset in layout:
        piece = local.narrow(0, offset, u_max * view[0].numel()).view(u_max, *view.shape[1:])
        torch.index_select(view, 0, own_rows, out=piece[: own_rows.numel()])
        piece[own_rows.numel():].zero_()
        piece[: own_rows.numel()].div_(world)
    received = [torch.empty_like(local) for _ in range(world)]
    state.counter.all_gather_payload += local.numel() * local.element_size()
    state.counter.calls += 1
    future = dist.all_gather(received, local, group=state.group, async_op=True).get_future()

    def combine() -> None:
        for view, mask, own_rows, u_max, offset in layout:
            row = view[0].numel()
            # Sources summed in rank order give the same sum on every rank. With two ranks
            # an own-first sum is that sum (a + b == b + a): copy the own rows / W in, then
            # add the other rank's; with more, zero the own rows and add every source.
            if world == 2:
                own = received[rank].narrow(0, offset, own_rows.numel() * row)
                # the row count spelled out (not -1): a row of in_features 0 is empty
                view.index_copy_(0, own_rows, own.view(own_rows.numel(), *view.shape[1:]))
            else:
                view.index_fill_(0, own_rows, 0)
            for source in range(world):
                if world == 2 and source == rank:
                    continue
                rows = mask[source].nonzero().squeeze(1)
                values = received[source].narrow(0, offset, rows.numel() * row)
                view.index_add_(0, rows, values.view(rows.numel(), *view.shape[1:]))

    return future, combine
