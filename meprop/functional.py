"""meprop_linear(): a linear layer whose backward keeps only k output-gradient entries.

Implements the paper's Section 2 (meProp) and its "unified" GPU variant (Section 3.3).
The forward is ``F.linear``. In the backward, the output gradient ``dy: (N, n)`` is
reduced to k entries per example (see :mod:`meprop.selection`), and grad_input,
grad_weight and grad_bias are computed from those entries alone, at O(k) cost:

- ``unified``: one index set ``idx: (k,)`` for the batch. ``dy_k = dy[:, idx]: (N, k)``;
  ``grad_input = dy_k @ W[idx]: (N, m)``; ``grad_weight[idx] = dy_k.T @ x: (k, m)``.
  Two small dense GEMMs.
- ``per_example`` / ``random``: ``idx, vals: (N, k)``. ``grad_input`` is an
  ``embedding_bag`` over the k rows of W each example kept (a weighted gather-sum);
  ``grad_weight`` is the transposed bag: for each touched output row j, the sum of
  ``vals[b, j] * x[b]`` over the examples that kept j.

The weight gradient's layout is chosen in the forward (:mod:`meprop._impl.grad_layout`):
dense ``(n, m)``, zero outside the touched rows (the default; works with every
optimizer), or a row-sparse COO tensor of the ``(U, m)`` touched rows, when the layer
asks for it (``sparse_grad=True``) or a lazy :mod:`meprop.optim` optimizer updates the
weight. Under ``torch.autocast`` the Function casts its operands itself and returns
each gradient in its parameter's own dtype and layout.

Double backward (``create_graph=True``, gradient penalties), torch.func transforms (grad,
vmap, functional_call) and meta tensors run :mod:`meprop._impl.masked_backward`: the same kept
entries in differentiable, vmappable dense ops (``(dy * mask) @ W``), at nn.Linear's cost.

:func:`masked_dense_linear_backward` is the plain reference (mask ``dy``, run the
dense backward) used by the tests; it is never on a fast path.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from meprop import dispatch, kernels
from meprop._impl.grad_layout import choose_layout, weight_grad_from_dense, weight_grad_from_rows
from meprop._impl.masked_backward import (
    TransformFunction, functorch_active, masked_dense_linear_backward, masked_linear_backward,
)
from meprop._impl.linear_arguments import check_linear_arguments
from meprop.checks import check_linear_operands, check_same_dtype
from meprop._impl.sampled_backward import sampled_linear_backward
from meprop.error_feedback import ErrorFeedback, with_error_feedback
from meprop.options import BIAS_GRADS
from meprop.selection import MODES, RANDOM_MODES, SAMPLED_MODES, is_sparse, select, topk_unified_synchronized

__all__ = ["meprop_linear", "masked_dense_linear_backward", "MODES", "BIAS_GRADS"]



def meprop_linear(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    k: int,
    mode: str = "per_example",
    bias_grad: str = "sparse",
    sparse_grad: bool = False,
    generator: torch.Generator | None = None,
    sync_selection: bool = False,
    error_feedback: ErrorFeedback | None = None,
) -> torch.Tensor:
    """``F.linear(input, weight, bias)`` whose backward keeps k output-gradient entries per example.

    Args:
        input: ``(..., in_features)``; every row of the flattened leading dimensions
            is one example.
        weight: ``(out_features, in_features)``, ``nn.Linear``'s layout.
        bias: ``(out_features,)`` or None.
        k: entries kept per example; ``k >= out_features`` gives the exact dense
            gradient (``F.linear``'s own backward).
        mode: ``"per_example"`` (top-k of ``|dy|`` per row, the paper's meProp),
            ``"unified"`` (one top-k of the column sums of ``|dy|`` for the whole batch)
            ``"random"`` (k uniformly random entries per row, an ablation), ``"sampled"``
            (unbiased: entry i kept with probability ``p_i = min(1, c|dy_i|)``, ``sum p = k``,
            scaled by ``1/p_i``; k entries per row in expectation; see :mod:`meprop.sampling`
            for the variance it adds) or ``"sampled_unified"`` (the same over the columns'
            ``|dy|`` sums: one column set for the batch).
        bias_grad: ``"sparse"``: the bias gradient sums the kept entries only (a bias
            entry no example kept gets exactly zero); ``"dense"``: it sums the full
            output gradient, as the original code did.
        sparse_grad: return the weight gradient as a row-sparse COO tensor
            (``sparse_dim=1``) at every k (all rows at ``k >= out_features``), as SparseAdam
            needs; refused under torch.func transforms; dense (with a warning) under a
            process group of more than one rank, whose DDP all-reduces dense gradients only.
            A lazy :mod:`meprop.optim` optimizer gets row-sparse gradients without it.
        generator: random source for ``"random"`` and the sampled modes (on input's
            device); None: torch's global generator (``torch.manual_seed`` reproduces a
            run). Refused with the other modes, whose selection is deterministic.
        sync_selection: with ``mode="unified"``, one column set for the ranks of the default
            process group (:func:`meprop.selection.topk_unified_synchronized`): DDP then
            equals one process on the ranks' concatenated batch.
        error_feedback: a :class:`meprop.error_feedback.ErrorFeedback` (the layer's dropped-
            gradient memory): added to the output gradient before selection, updated with
            what was dropped. None: off.

    Returns:
        ``(..., out_features)``, equal to ``F.linear(input, weight, bias)``.

    Tie-breaking among equal magnitudes is :func:`torch.topk`'s (unspecified which of
    the tied entries is kept; always exactly k). NaN/inf in the output gradient are
    kept first and propagate, as in ``nn.Linear``.
    """
    k = check_linear_arguments(k, mode, bias_grad, sparse_grad, generator, sync_selection, error_feedback)
    return linear_forward(input, weight, bias, k, mode, bias_grad, sparse_grad, generator, sync_selection,
                          error_feedback)


def linear_forward(input, weight, bias, k, mode, bias_grad, sparse_grad, generator, sync_selection,
                   error_feedback) -> torch.Tensor:
    """:func:`meprop_linear` whose keyword arguments were checked (:func:`check_linear_arguments`):
    MepropLinear checks its own when they change, not in every forward."""
    check_linear_operands(input, weight, bias)

    # Autocast runs F.linear in its lower precision; the Function does the same casts
    # itself so that the gradients come back in the parameters' own dtypes and layouts
    # (a differentiable .to() outside would refuse a row-sparse gradient).
    compute_dtype = dispatch.autocast_dtype(input.device.type)
    if compute_dtype is None:
        check_same_dtype(input, weight, bias)
    if functorch_active():  # torch.func (grad, vmap, jacrev, functional_call under grad)
        _refuse_feedback_under_transforms(error_feedback)
        return TransformFunction.apply(input, weight, bias, k, mode, bias_grad, generator, compute_dtype, sparse_grad)
    layout = choose_layout(weight, sparse_grad)
    needs_grad = input.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    probe = (lambda: _tuning_probe(input, weight, bias, k, mode, bias_grad, layout)) if needs_grad else None
    code = None if error_feedback is not None else dispatch.linear_forward_code(
        input, weight, k, mode, layout, compute_dtype, probe)
    if code is not None:
        # The compiled op with a C++ autograd backward (no Python in the backward); it emits
        # the same two layouts as weight_grad_from_rows ("dense" or "row_sparse").
        return torch.ops.meprop.linear(
            input, weight, bias, k, bias_grad == "dense", layout == "row_sparse", code
        )
    if error_feedback is None and dispatch.unified_op_applies(input, weight, mode, layout, compute_dtype,
                                                              sync_selection):
        # Unified mode's compiled op: the backward of _unified_backward in C++ (no Python).
        return torch.ops.meprop.unified_linear(input, weight, bias, k, bias_grad == "dense", layout == "row_sparse")
    return _MepropLinearFunction.apply(
        input, weight, bias, k, mode, bias_grad, layout, generator, compute_dtype, sync_selection, error_feedback
    )


def _tuning_probe(input, weight, bias, k, mode, bias_grad, layout):
    """A backward of the layer's shapes for the tuner to time before the forward is recorded:
    the real input and weight, a stand-in output gradient (normal, from a private generator:
    the program's random stream is not touched). Returns the call and its runner."""
    n, m = weight.shape
    x = input.detach().reshape(math.prod(input.shape[:-1]), m)  # (N, m); N spelled out: m may be 0
    gen = torch.Generator(device=input.device).manual_seed(0)
    dy = torch.randn(x.shape[0], n, generator=gen, device=input.device, dtype=weight.dtype)  # (N, n)
    call = dispatch.LinearBackward(
        dy, x, weight.detach(), weight, k, mode, bias_grad, layout, None,
        input.requires_grad, weight.requires_grad, bias is not None and bias.requires_grad,
    )
    return call, run_formulation


def _refuse_feedback_under_transforms(error_feedback) -> None:
    if error_feedback is not None:
        raise ValueError("meprop_linear: error_feedback cannot be used under torch.func transforms "
                         "(its memory is state updated in the backward); pass error_feedback=None there")


class _MepropLinearFunction(torch.autograd.Function):
    """Forward ``F.linear``; backward from k kept entries per example.

    ``layout`` is the weight gradient's layout (:mod:`meprop._impl.grad_layout`);
    ``compute_dtype`` is autocast's dtype (None outside autocast). Twice differentiable:
    under ``create_graph=True`` (and on meta tensors) the backward runs
    :func:`meprop._impl.masked_backward.masked_linear_backward`, the same kept entries in
    differentiable ops. ``sync_selection``: unified selection agreed across ranks;
    ``feedback``: an ErrorFeedback memory (:mod:`meprop.error_feedback`) or None.
    """

    @staticmethod
    def forward(ctx, input, weight, bias, k, mode, bias_grad, layout, generator, compute_dtype,
                sync_selection=False, feedback=None):
        ctx.input_dtype = input.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.param = weight  # the gradient is emitted in its dtype; rows may be recorded on it
        if compute_dtype is not None:
            input, weight = input.to(compute_dtype), weight.to(compute_dtype)
            bias = None if bias is None else bias.to(compute_dtype)
        ctx.save_for_backward(input, weight)
        ctx.has_bias = bias is not None
        ctx.k, ctx.mode, ctx.bias_grad = k, mode, bias_grad
        ctx.layout, ctx.generator, ctx.sync_selection = layout, generator, sync_selection
        ctx.feedback = feedback
        with torch.autocast(input.device.type, enabled=False) if compute_dtype else nullcontext():
            return F.linear(input, weight, bias)

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        n, m = weight.shape
        batch = math.prod(input.shape[:-1])
        dy = grad_output.to(weight.dtype).reshape(batch, n)  # (N, n)
        x = input.reshape(batch, m)  # (N, m)

        call = dispatch.LinearBackward(
            dy, x, weight, ctx.param, ctx.k, ctx.mode, ctx.bias_grad, ctx.layout, ctx.generator,
            need_input, need_weight, need_bias, ctx.sync_selection,
        )
        if ctx.feedback is not None:
            grad_input, grad_weight, grad_bias = with_error_feedback(call, ctx.feedback, _run_backward)
        else:
            grad_input, grad_weight, grad_bias = _run_backward(call)
        if grad_input is not None:
            grad_input = grad_input.reshape(input.shape).to(ctx.input_dtype)
        if grad_weight is not None and ctx.layout != "row_sparse":  # dense layouts (no .layout: compile)
            grad_weight = grad_weight.to(ctx.param.dtype)
        grad_bias = None if not ctx.has_bias or grad_bias is None else grad_bias.to(ctx.bias_dtype)
        return grad_input, grad_weight, grad_bias, None, None, None, None, None, None, None, None


def _run_backward(call: dispatch.LinearBackward):
    """``(grad_input, grad_weight, grad_bias)`` of ``call`` on the path that applies: the
    differentiable masked ops (create_graph=True, meta), a sampled mode's backward, or the
    formulation :mod:`meprop.dispatch` picks."""
    if torch.is_grad_enabled() or call.dy.device.type == "meta":
        # create_graph=True: the result must be differentiable again; meta: shapes only
        grad_input, grad_weight, grad_bias = masked_linear_backward(
            call.dy, call.x, call.weight, call.k, call.mode, call.generator,
            (call.need_input, call.need_weight, call.need_bias), call.bias_grad,
        )
        if grad_weight is not None:
            grad_weight = weight_grad_from_dense(grad_weight, call.param, call.layout)
        return grad_input, grad_weight, grad_bias
    batch, n, _ = call.shape
    if call.mode in SAMPLED_MODES and is_sparse(call.k, n, batch):
        if not (call.need_input or call.need_weight or call.need_bias):
            return None, None, None
        return sampled_linear_backward(call)
    return run_formulation(call, dispatch.linear_backward_formulation(call, run_formulation))


def run_formulation(call: dispatch.LinearBackward, formulation: str):
    """``(grad_input, grad_weight, grad_bias)`` of ``call`` computed by ``formulation``.

    A kernel formulation runs on the compiled op only where it takes ``call``'s device and
    dtype (:func:`meprop.dispatch.backward_implementation`); elsewhere its PyTorch stand-in
    runs. The compiled kernel records the formulations it runs itself; the Python paths here.
    """
    if not (call.need_input or call.need_weight or call.need_bias):
        return None, None, None
    formulation, compiled = dispatch.backward_implementation(formulation, call.dy.device, call.dy.dtype)
    if compiled:
        return _per_example_backward_kernel(call, formulation)
    kernels.record_formulation(formulation)
    if formulation == "dense":
        return _dense_backward(call)
    if formulation == "unified":
        return _unified_backward(call)
    if formulation == "masked_dense":
        return _masked_dense_backward(call)
    return _per_example_backward(call)


def _dense_backward(call):
    """``F.linear``'s backward. dy: (N, n), x: (N, m), weight: (n, m)."""
    dy, x = call.dy, call.x
    grad_input = dy @ call.weight if call.need_input else None  # (N, m)
    grad_weight = None
    if call.need_weight:  # sparse_grad=True asks for COO at every k
        grad_weight = weight_grad_from_dense(dy.t() @ x, call.param, call.layout)  # (n, m)
    grad_bias = dy.sum(0) if call.need_bias else None  # (n,)
    return grad_input, grad_weight, grad_bias


def _unified_backward(call):
    """One column set for the batch: two (N, k) GEMMs. dy: (N, n), x: (N, m), weight: (n, m)."""
    dy, x, weight, k = call.dy, call.x, call.weight, call.k
    need_input, need_weight, need_bias = call.need_input, call.need_weight, call.need_bias
    bias_grad, param, layout = call.bias_grad, call.param, call.layout
    n = weight.shape[0]
    # Sorted indices make the row-sparse weight gradient coalesced for free.
    chosen = topk_unified_synchronized(dy, k) if call.sync_selection else select(dy, k, "unified")
    idx = chosen.sort().values  # (k,)
    dy_k = dy.index_select(1, idx)  # (N, k)
    grad_input = dy_k @ weight.index_select(0, idx) if need_input else None  # (N, m)
    grad_weight = None
    if need_weight:
        rows = dy_k.t() @ x  # (k, m)
        grad_weight = weight_grad_from_rows(idx, rows, param, layout)
    grad_bias = None
    if need_bias:
        if bias_grad == "dense":
            grad_bias = dy.sum(0)
        else:
            grad_bias = dy.new_zeros(n).index_copy_(0, idx, dy_k.sum(0))  # (n,)
    return grad_input, grad_weight, grad_bias


def _per_example_backward(call):
    """k entries per example, gather-based. dy: (N, n), x: (N, m), weight: (n, m)."""
    dy, x, weight, k, mode, generator = call.dy, call.x, call.weight, call.k, call.mode, call.generator
    need_input, need_weight, need_bias = call.need_input, call.need_weight, call.need_bias
    bias_grad, param, layout = call.bias_grad, call.param, call.layout
    n, m = weight.shape
    idx = select(dy, k, mode, generator)  # (N, k)
    vals = dy.gather(1, idx)  # (N, k)

    grad_input = None
    if need_input:
        if m == 0:
            grad_input = x.new_zeros(x.shape)
        else:
            # Row b of grad_input = sum_t vals[b, t] * W[idx[b, t]]: a weighted bag over W's rows.
            grad_input = F.embedding_bag(idx, weight, mode="sum", per_sample_weights=vals)  # (N, m)

    grad_weight = None
    if need_weight:
        # Transposed bag: group the kept (example, row) pairs by output row j, then
        # row j of grad_weight = sum over its examples b of vals[b, j] * x[b].
        flat_rows = idx.reshape(-1)  # (N*k,)
        order = flat_rows.argsort()
        sorted_rows = flat_rows[order]
        examples = torch.div(order, k, rounding_mode="floor")  # example of each entry
        touched, counts = torch.unique_consecutive(sorted_rows, return_counts=True)  # (U,)
        if m == 0:
            rows = x.new_zeros(touched.shape[0], 0)
        else:
            offsets = counts.cumsum(0) - counts
            rows = F.embedding_bag(
                examples, x, offsets, mode="sum", per_sample_weights=vals.reshape(-1)[order]
            )  # (U, m)
        grad_weight = weight_grad_from_rows(touched, rows, param, layout)

    grad_bias = None
    if need_bias:
        if bias_grad == "dense":
            grad_bias = dy.sum(0)
        else:
            grad_bias = dy.new_zeros(n).index_add_(0, idx.reshape(-1), vals.reshape(-1))
    return grad_input, grad_weight, grad_bias


def _masked_dense_backward(call):
    """The dense backward on the masked gradient: dense's GEMMs plus the selection (PyTorch ops)."""
    dy, layout = call.dy, call.layout
    idx = select(dy, call.k, call.mode, call.generator)  # (N, k)
    kept = torch.zeros_like(dy).scatter_(1, idx, dy.gather(1, idx))  # (N, n)
    grad_input = kept @ call.weight if call.need_input else None  # (N, m)
    grad_weight = None
    if call.need_weight:
        full = kept.t() @ call.x  # (n, m)
        if layout == "dense":
            grad_weight = full
        else:
            touched = torch.unique(idx)  # (U,) sorted
            grad_weight = weight_grad_from_rows(touched, full.index_select(0, touched), call.param, layout)
    grad_bias = None
    if call.need_bias:
        grad_bias = (dy if call.bias_grad == "dense" else kept).sum(0)
    return grad_input, grad_weight, grad_bias


def _per_example_backward_kernel(call, formulation):
    """The compiled per-example backward (``torch.ops.meprop.per_example_backward``).

    Selection happens inside the kernel for ``per_example``; ``random`` picks its indices
    here (the generator is PyTorch's) and hands them over. ``formulation`` is one of
    :data:`meprop.dispatch.KERNEL_CODES` (``auto``: the kernel's cost model); the kernel
    records what ran (:func:`meprop.kernels.last_formulation`). For the plain dense layout
    it writes the touched rows straight into an ``(n, m)`` zero tensor; otherwise it
    returns the ``(U, m)`` rows for :func:`meprop._impl.grad_layout.weight_grad_from_rows`.
    """
    dy, layout = call.dy, call.layout
    indices = select(dy, call.k, call.mode, call.generator) if call.mode == "random" else None  # (N, k)
    dense_weight = layout == "dense"
    grad_input, row_index, rows, grad_bias = torch.ops.meprop.per_example_backward(
        dy, call.x, call.weight, call.k, indices, call.need_input, call.need_weight, call.need_bias,
        call.bias_grad == "dense", dense_weight, formulation,
    )
    grad_weight = None
    if call.need_weight:
        grad_weight = rows if dense_weight else weight_grad_from_rows(row_index, rows, call.param, layout)
    return (
        grad_input if call.need_input else None, grad_weight, grad_bias if call.need_bias else None
    )
