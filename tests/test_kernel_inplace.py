"""The compiled linear backward masks its incoming gradient in place only when nothing else holds it.

The masked formulations zero the dropped entries of ``dy`` where it lies, rather than write
the kept ones into a new (B, n) matrix, when the autograd node holds the only references to
``dy`` and its storage. Every other holder (a hook that kept the gradient or a view of it, a
gradient the caller passed in, ``retain_grad``) must see ``dy`` unchanged, and the gradients
must equal the float64 reference either way.
"""

from __future__ import annotations

import pytest
import torch

from meprop import kernels

CODES = {"masked_gemm": 1, "masked_dense": 5}  # torch.ops.meprop.linear's formulation codes
BATCH, N, M, K = 16, 40, 12, 10


@pytest.fixture(autouse=True)
def _kernels():
    if not kernels.available():
        pytest.skip("compiled kernels unavailable (MEPROP_KERNELS=off or no compiler)")


def _layer(formulation: str, sparse_grad: bool):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, M, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(N, M, dtype=torch.float64, generator=gen, requires_grad=True)
    c = torch.randn(BATCH, N, dtype=torch.float64, generator=gen)
    y = torch.ops.meprop.linear(x, w, None, K, False, sparse_grad, CODES[formulation])  # (B, n)
    return x, w, c, y


def _check_gradients(dy, x, w, grad_x, grad_w):
    """The per-example top-k backward of dy, from a float64 reference."""
    idx = dy.abs().topk(K, dim=1).indices
    kept = torch.zeros_like(dy).scatter(1, idx, dy.gather(1, idx))  # (B, n)
    torch.testing.assert_close(grad_x, kept @ w.detach())
    torch.testing.assert_close(grad_w.to_dense() if grad_w.is_sparse else grad_w, kept.t() @ x.detach())


def _relu_gradient(y, c):
    return (y.detach() > 0).to(c.dtype) * c  # d/dy of (relu(y) * c).sum()


@pytest.mark.parametrize("sparse_grad", [False, True])
@pytest.mark.parametrize("formulation", sorted(CODES))
def test_an_owned_gradient_gives_the_reference_gradients(formulation, sparse_grad):
    """dy made by the ReLU's backward and handed on: nothing else holds it (the in-place case)."""
    x, w, c, y = _layer(formulation, sparse_grad)
    grad_x, grad_w = torch.autograd.grad((torch.relu(y) * c).sum(), (x, w))
    _check_gradients(_relu_gradient(y, c), x, w, grad_x, grad_w)


@pytest.mark.parametrize("formulation", sorted(CODES))
@pytest.mark.parametrize("keep", ["tensor", "view"])
def test_a_gradient_a_hook_kept_is_left_as_it_was(formulation, keep):
    x, w, c, y = _layer(formulation, False)
    held = []
    y.register_hook(lambda g: held.append(g if keep == "tensor" else g[1:]))
    grad_x, grad_w = torch.autograd.grad((torch.relu(y) * c).sum(), (x, w))
    dy = _relu_gradient(y, c)
    assert torch.equal(held[0], dy if keep == "tensor" else dy[1:])
    _check_gradients(dy, x, w, grad_x, grad_w)


@pytest.mark.parametrize("formulation", sorted(CODES))
@pytest.mark.parametrize("how", ["autograd.grad", "Tensor.backward"])
def test_a_gradient_the_caller_passed_in_is_left_as_it_was(formulation, how):
    x, w, c, y = _layer(formulation, False)
    g = c.clone()
    if how == "autograd.grad":
        grad_x, grad_w = torch.autograd.grad(y, (x, w), g)
    else:
        y.backward(g)
        grad_x, grad_w = x.grad, w.grad
    assert torch.equal(g, c)
    _check_gradients(c, x, w, grad_x, grad_w)


@pytest.mark.parametrize("formulation", sorted(CODES))
def test_retain_grad_and_an_output_used_twice(formulation):
    x, w, c, y = _layer(formulation, False)
    y.retain_grad()
    grad_x, grad_w = torch.autograd.grad((torch.relu(y) * c).sum() + (y * c).sum(), (x, w))
    dy = _relu_gradient(y, c) + c
    assert torch.equal(y.grad, dy)
    _check_gradients(dy, x, w, grad_x, grad_w)


@pytest.mark.parametrize("formulation", sorted(CODES))
def test_two_layers_given_one_gradient(formulation):
    """z = a(x) + b(x): the sum's backward hands the same dy to both layers. The first to run
    sees it held by the other's input buffer; neither may change what the other reads."""
    x, w, c, y = _layer(formulation, False)
    w2 = (w.detach() * 0.5).requires_grad_()
    y2 = torch.ops.meprop.linear(x, w2, None, K, False, False, CODES[formulation])
    grad_w, grad_w2 = torch.autograd.grad(((y + y2) * c).sum(), (w, w2))
    idx = c.abs().topk(K, dim=1).indices
    kept = torch.zeros_like(c).scatter(1, idx, c.gather(1, idx))  # both layers keep the same entries of dy = c
    torch.testing.assert_close(grad_w, kept.t() @ x.detach())
    torch.testing.assert_close(grad_w2, kept.t() @ x.detach())
