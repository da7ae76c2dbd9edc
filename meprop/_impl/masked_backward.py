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

import torch

from meprop.selection import select

__all__ = ["masked_linear_backward", "functorch_active"]


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
    kept = dy
    if k < n and dy.shape[0] > 0:
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
