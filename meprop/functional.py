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

Weight gradients are either dense ``(n, m)`` tensors that are zero outside the touched
rows (``sparse_grad=False``, works with every optimizer) or row-sparse COO tensors
(``sparse_grad=True``). With a row-sparse gradient, autograd adds the touched rows in
place into an existing dense ``.grad`` (O(k*m) instead of materialising n*m zeros);
when ``.grad`` is None it becomes a sparse tensor, which SGD, Adagrad and SparseAdam
accept. See :class:`meprop.MepropLinear` for how this composes with optimizers.

:func:`masked_dense_linear_backward` is the plain reference (mask ``dy``, run the
dense backward) used by the tests; it is never on a fast path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from meprop import kernels
from meprop._checks import check_bool, check_choice, check_k, check_linear_operands, check_same_dtype
from meprop.selection import MODES, select

__all__ = ["meprop_linear", "masked_dense_linear_backward", "MODES", "BIAS_GRADS"]

#: Accepted values of ``bias_grad``.
BIAS_GRADS = ("sparse", "dense")


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
            or ``"random"`` (k uniformly random entries per row, an ablation).
        bias_grad: ``"sparse"``: the bias gradient sums the kept entries only (a bias
            entry no example kept gets exactly zero); ``"dense"``: it sums the full
            output gradient, as the original code did.
        sparse_grad: return the weight gradient as a row-sparse COO tensor
            (``sparse_dim=1``) instead of a dense one. Applies when ``k < out_features``.
        generator: random source for ``mode="random"`` (on input's device).

    Returns:
        ``(..., out_features)``, equal to ``F.linear(input, weight, bias)``.

    Tie-breaking among equal magnitudes is :func:`torch.topk`'s (unspecified which of
    the tied entries is kept; always exactly k). NaN/inf in the output gradient are
    kept first and propagate, as in ``nn.Linear``.
    """
    k = check_k(k)
    check_choice(mode, "mode", MODES)
    check_choice(bias_grad, "bias_grad", BIAS_GRADS)
    check_bool(sparse_grad, "sparse_grad")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    check_linear_operands(input, weight, bias)

    device_type = input.device.type
    if _autocast_enabled(device_type):
        # Do what autocast does for F.linear, outside the Function: cast the operands
        # (differentiably, so their gradients come back in the original dtypes), then
        # run forward and backward in that one dtype with autocast off.
        dtype = torch.get_autocast_dtype(device_type)
        input, weight = input.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
        with torch.autocast(device_type, enabled=False):
            return _MepropLinearFunction.apply(
                input, weight, bias, k, mode, bias_grad, sparse_grad, generator
            )
    check_same_dtype(input, weight, bias)
    if mode == "per_example" and not torch.compiler.is_compiling() and kernels.supports(input, weight):
        # The compiled op with a C++ autograd backward (no Python in the backward).
        return torch.ops.meprop.linear(input, weight, bias, k, bias_grad == "dense", sparse_grad)
    return _MepropLinearFunction.apply(input, weight, bias, k, mode, bias_grad, sparse_grad, generator)


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no device argument
        if device_type == "cpu":
            return torch.is_autocast_cpu_enabled()
        return device_type == "cuda" and torch.is_autocast_enabled()


class _MepropLinearFunction(torch.autograd.Function):
    """Forward ``F.linear``; backward from k kept entries per example."""

    @staticmethod
    def forward(ctx, input, weight, bias, k, mode, bias_grad, sparse_grad, generator):
        ctx.save_for_backward(input, weight)
        ctx.has_bias = bias is not None
        ctx.k, ctx.mode, ctx.bias_grad = k, mode, bias_grad
        ctx.sparse_grad, ctx.generator = sparse_grad, generator
        return F.linear(input, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        n, m = weight.shape
        dy = grad_output.reshape(-1, n)  # (N, n)
        x = input.reshape(-1, m)  # (N, m)

        if ctx.k >= n:
            kernels.record_formulation("dense")
            grads = _dense_backward(dy, x, weight, need_input, need_weight, need_bias)
        elif ctx.mode == "unified":
            kernels.record_formulation("unified")
            grads = _unified_backward(
                dy, x, weight, ctx.k, need_input, need_weight, need_bias,
                ctx.bias_grad, ctx.sparse_grad,
            )
        elif kernels.supports(dy, x, weight):
            grads = _per_example_backward_kernel(
                dy, x, weight, ctx.k, ctx.mode, ctx.generator, need_input, need_weight,
                need_bias, ctx.bias_grad, ctx.sparse_grad,
            )
        else:
            kernels.record_formulation("pytorch")
            grads = _per_example_backward(
                dy, x, weight, ctx.k, ctx.mode, ctx.generator, need_input, need_weight,
                need_bias, ctx.bias_grad, ctx.sparse_grad,
            )
        grad_input, grad_weight, grad_bias = grads
        if grad_input is not None:
            grad_input = grad_input.reshape(input.shape)
        if not ctx.has_bias:
            grad_bias = None
        return grad_input, grad_weight, grad_bias, None, None, None, None, None


def _dense_backward(dy, x, weight, need_input, need_weight, need_bias):
    """``F.linear``'s backward. dy: (N, n), x: (N, m), weight: (n, m)."""
    grad_input = dy @ weight if need_input else None  # (N, m)
    grad_weight = dy.t() @ x if need_weight else None  # (n, m)
    grad_bias = dy.sum(0) if need_bias else None  # (n,)
    return grad_input, grad_weight, grad_bias


def _unified_backward(dy, x, weight, k, need_input, need_weight, need_bias, bias_grad, sparse_grad):
    """One column set for the batch: two (N, k) GEMMs. dy: (N, n), x: (N, m), weight: (n, m)."""
    if not (need_input or need_weight or need_bias):
        return None, None, None
    n = weight.shape[0]
    # Sorted indices make the row-sparse weight gradient coalesced for free.
    idx = select(dy, k, "unified").sort().values  # (k,)
    dy_k = dy.index_select(1, idx)  # (N, k)
    grad_input = dy_k @ weight.index_select(0, idx) if need_input else None  # (N, m)
    grad_weight = None
    if need_weight:
        rows = dy_k.t() @ x  # (k, m)
        grad_weight = _weight_grad_from_rows(idx, rows, weight.shape, sparse_grad)
    grad_bias = None
    if need_bias:
        if bias_grad == "dense":
            grad_bias = dy.sum(0)
        else:
            grad_bias = dy.new_zeros(n).index_copy_(0, idx, dy_k.sum(0))  # (n,)
    return grad_input, grad_weight, grad_bias


def _per_example_backward(
    dy, x, weight, k, mode, generator, need_input, need_weight, need_bias, bias_grad, sparse_grad
):
    """k entries per example, gather-based. dy: (N, n), x: (N, m), weight: (n, m)."""
    if not (need_input or need_weight or need_bias):
        return None, None, None
    n = weight.shape[0]
    idx = select(dy, k, mode, generator)  # (N, k)
    vals = dy.gather(1, idx)  # (N, k)

    grad_input = None
    if need_input:
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
        offsets = counts.cumsum(0) - counts
        rows = F.embedding_bag(
            examples, x, offsets, mode="sum", per_sample_weights=vals.reshape(-1)[order]
        )  # (U, m)
        grad_weight = _weight_grad_from_rows(touched, rows, weight.shape, sparse_grad)

    grad_bias = None
    if need_bias:
        if bias_grad == "dense":
            grad_bias = dy.sum(0)
        else:
            grad_bias = dy.new_zeros(n).index_add_(0, idx.reshape(-1), vals.reshape(-1))
    return grad_input, grad_weight, grad_bias


def _per_example_backward_kernel(
    dy, x, weight, k, mode, generator, need_input, need_weight, need_bias, bias_grad, sparse_grad
):
    """The compiled per-example backward (``torch.ops.meprop.per_example_backward``).

    Selection happens inside the kernel for ``per_example``; ``random`` picks its indices
    here (the generator is PyTorch's) and hands them over. The formulation (row gathers or
    masked dense GEMMs) is chosen by :func:`meprop.kernels.choose_formulation` from the shape.
    """
    if not (need_input or need_weight or need_bias):
        return None, None, None
    indices = select(dy, k, mode, generator) if mode == "random" else None  # (N, k)
    grad_input, row_index, rows, grad_bias = torch.ops.meprop.per_example_backward(
        dy, x, weight, k, indices, need_input, need_weight, need_bias, bias_grad == "dense",
        not sparse_grad, "auto",
    )  # the kernel records the formulation it chose
    grad_weight = None
    if need_weight:
        # dense layout: the kernel wrote the touched rows straight into an (n, m) zero tensor
        grad_weight = _weight_grad_from_rows(row_index, rows, weight.shape, True) if sparse_grad else rows
    return (grad_input if need_input else None), grad_weight, (grad_bias if need_bias else None)


def _weight_grad_from_rows(row_index, rows, shape, sparse_grad):
    """A (n, m) weight gradient holding ``rows: (U, m)`` at sorted unique ``row_index: (U,)``."""
    if sparse_grad:
        return torch.sparse_coo_tensor(
            row_index.unsqueeze(0), rows, shape, is_coalesced=True, check_invariants=False
        )
    return rows.new_zeros(shape).index_copy_(0, row_index, rows)


def masked_dense_linear_backward(
    input: torch.Tensor,
    weight: torch.Tensor,
    grad_output: torch.Tensor,
    mask: torch.Tensor,
    *,
    bias_grad: str = "sparse",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference backward: zero the unkept entries of ``grad_output``, run the dense backward.

    ``input: (..., m)``, ``weight: (n, m)``, ``grad_output`` and ``mask: (..., n)``
    (``mask`` True where an entry is kept). Returns ``(grad_input, grad_weight,
    grad_bias)``. Obviously correct and O(n) in cost: for tests, never for speed.
    """
    check_choice(bias_grad, "bias_grad", BIAS_GRADS)
    n, m = weight.shape
    dy = grad_output.reshape(-1, n)
    kept = torch.where(mask.reshape(-1, n), dy, torch.zeros_like(dy))  # (N, n)
    x = input.reshape(-1, m)
    grad_input = (kept @ weight).reshape(input.shape)
    grad_weight = kept.t() @ x
    grad_bias = (kept if bias_grad == "sparse" else dy).sum(0)
    return grad_input, grad_weight, grad_bias
