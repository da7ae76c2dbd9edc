"""meProp's linear backward in plain differentiable tensor ops: double backward, torch.func, meta.

The fast backwards of :mod:`meprop.functional` (gathers, the compiled kernel) return
constants: autograd cannot differentiate through them a second time, torch.func cannot
vmap their data-dependent shapes (the number of touched rows), and meta tensors have no
``unique_consecutive``. This module computes the *same* meProp backward the dense way:

    kept = dy * mask                       # dy, mask: (N, n); mask keeps k entries per row
    grad_input  = kept @ W                 # (N, m)
    grad_weight = kept.T @ x               # (n, m)
    grad_bias   = kept.sum(0)              # (n,) (dy.sum(0) with bias_grad="dense")

The mask is :func:`meprop.selection.select`'s choice; it is piecewise constant in ``dy``
(zero derivative almost everywhere), so these ops are the exact derivative of meProp's
backward: a gradient penalty built on ``grad_input`` (``create_graph=True``) gets every
second-order term. Cost O(N*n*m), like ``nn.Linear``'s backward; it runs only on those
three paths, never on a fast one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from meprop.checks import check_choice
from meprop.options import BIAS_GRADS
from meprop.sampling import sampled_scale
from meprop.selection import SAMPLED_MODES, is_sparse, select

__all__ = ["masked_linear_backward", "masked_dense_linear_backward", "functorch_active", "TransformFunction"]


_transforms_active = getattr(torch._C, "_are_functorch_transforms_active", lambda: False)


def functorch_active() -> bool:
    """True inside a torch.func transform (grad, vmap, jacrev, ...): meProp layers take this
    module's backward there (the compiled ops have no batching or functorch rules)."""
    return _transforms_active()


def masked_linear_backward(
    dy: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    k: int,
    mode: str,
    generator: torch.Generator | None,
    needs: tuple[bool, bool, bool],
    bias_grad: str,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """``(grad_input (N, m), grad_weight (n, m), grad_bias (n,))``, each None where not needed.

    ``dy: (N, n)``, ``x: (N, m)``, ``weight: (n, m)``; ``needs`` says which of the three
    gradients are wanted. Differentiable in ``dy``, ``x`` and ``weight``; vmappable.
    """
    need_input, need_weight, need_bias = needs
    n = weight.shape[0]
    kept = dy  # every entry kept (the dense backward) unless the call selects
    if is_sparse(k, n, dy.shape[0]):
        if mode in SAMPLED_MODES:
            kept = dy * sampled_scale(dy.detach(), k, mode, generator)  # (N, n): unbiased, 1/p where kept
        else:
            idx = select(dy.detach(), k, mode, generator)  # (N, k), or (k,) for unified
            if idx.dim() == 1:
                mask = dy.new_zeros(n).index_fill(0, idx, 1).expand_as(dy)  # (N, n)
            else:
                mask = torch.zeros_like(dy).scatter(1, idx, 1)  # (N, n)
            kept = dy * mask
    grad_input = kept @ weight if need_input else None  # (N, m)
    grad_weight = kept.t() @ x if need_weight else None  # (n, m)
    grad_bias = None
    if need_bias:
        grad_bias = (dy if bias_grad == "dense" else kept).sum(0)  # (n,)
    return grad_input, grad_weight, grad_bias


class TransformFunction(torch.autograd.Function):
    """meprop_linear under torch.func transforms: forward without ctx, ``setup_context``,
    and the differentiable, vmappable backward (:func:`masked_linear_backward`).

    Gradients come back dense, in the dtypes of the operands (``sparse_grad=True`` is
    refused: transforms carry no COO gradients). Per-sample gradients (``vmap(grad(loss))``)
    select the k entries of each sample's own output gradient.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(input, weight, bias, k, mode, bias_grad, generator, compute_dtype, sparse_grad):
        if sparse_grad:
            raise ValueError(
                "meprop_linear: sparse_grad=True cannot be used under torch.func transforms "
                "(they do not carry COO gradients); use sparse_grad=False there"
            )
        if compute_dtype is None:
            return F.linear(input, weight, bias)
        bias = None if bias is None else bias.to(compute_dtype)
        with torch.autocast(input.device.type, enabled=False):
            return F.linear(input.to(compute_dtype), weight.to(compute_dtype), bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, bias, k, mode, bias_grad, generator, compute_dtype, _ = inputs
        ctx.save_for_backward(input, weight)
        ctx.has_bias, ctx.bias_dtype = bias is not None, None if bias is None else bias.dtype
        ctx.k, ctx.mode, ctx.bias_grad = k, mode, bias_grad
        ctx.generator, ctx.compute_dtype = generator, compute_dtype

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        dtype = ctx.compute_dtype or weight.dtype
        n, m = weight.shape
        batch = math.prod(input.shape[:-1])
        dy = grad_output.to(dtype).reshape(batch, n)  # (N, n)
        x = input.to(dtype).reshape(batch, m)  # (N, m)
        needs = ctx.needs_input_grad[:2] + (ctx.needs_input_grad[2] and ctx.has_bias,)
        grad_input, grad_weight, grad_bias = masked_linear_backward(
            dy, x, weight.to(dtype), ctx.k, ctx.mode, ctx.generator, needs, ctx.bias_grad
        )
        if grad_input is not None:
            grad_input = grad_input.reshape(input.shape).to(input.dtype)
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        if grad_bias is not None:
            grad_bias = grad_bias.to(ctx.bias_dtype)
        return grad_input, grad_weight, grad_bias, None, None, None, None, None, None


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
    batch = math.prod(input.shape[:-1])  # not -1 in the reshapes: n or m may be 0
    dy = grad_output.reshape(batch, n)
    kept = torch.where(mask.reshape(batch, n), dy, torch.zeros_like(dy))  # (N, n)
    x = input.reshape(batch, m)
    grad_input = (kept @ weight).reshape(input.shape)
    grad_weight = kept.t() @ x
    grad_bias = (kept if bias_grad == "sparse" else dy).sum(0)
    return grad_input, grad_weight, grad_bias
