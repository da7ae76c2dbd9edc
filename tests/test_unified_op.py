"""The compiled unified op (``torch.ops.meprop.unified_linear``): gradients against the float64
masked reference (every layout, bias option, shape edge and create_graph), that the dispatch
picks it exactly where it applies (CPU float32/64, kernels on, outside autocast and without
selection agreed across ranks), and that the PyTorch path runs everywhere else.
"""

from __future__ import annotations

import pytest
import torch

import meprop
from meprop import dispatch, kernels
from meprop.functional import meprop_linear

pytestmark = pytest.mark.usefixtures("meprop_path", "cold_tuning_cache")
TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 5e-2, torch.float32: 1e-5, torch.float64: 1e-10}


@pytest.fixture
def unified_op_calls(monkeypatch):
    """How many forwards went through the compiled unified op during the test."""
    calls, real = [], dispatch.unified_op_applies

    def spy(*args):
        applies = real(*args)
        calls.append(applies)
        return applies

    monkeypatch.setattr(dispatch, "unified_op_applies", spy)
    return calls


def _reference(x, weight, dy, k, bias_grad):
    """float64: dy masked to the k columns of largest sum |dy|, then the dense backward."""
    x, weight, dy = x.double(), weight.double(), dy.double()
    n = weight.shape[0]
    mask = torch.ones(n, dtype=torch.bool)
    if k < n and dy.shape[0] > 0:
        mask = torch.zeros(n, dtype=torch.bool).index_fill(0, dy.abs().sum(0).topk(k).indices, True)
    kept = dy * mask  # (N, n)
    return kept @ weight, kept.t() @ x, (dy if bias_grad == "dense" else kept).sum(0)


def _close(got, want, dtype):
    tol = TOLERANCE[dtype] * max(1.0, float(want.abs().max())) if want.numel() else 0.0
    torch.testing.assert_close(got.double(), want, rtol=TOLERANCE[dtype], atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("sparse_grad", [False, True])
@pytest.mark.parametrize("bias_grad", ["sparse", "dense"])
@pytest.mark.parametrize("shape", [(10, 50, 78, 5), (1, 7, 5, 2), (0, 7, 5, 2), (4, 7, 5, 7), (3, 300, 400, 20)])
def test_unified_gradients_match_the_float64_reference(dtype, sparse_grad, bias_grad, shape, unified_op_calls):
    batch, n, m, k = shape
    gen = torch.Generator().manual_seed(batch + n + k)
    layer = meprop.MepropLinear(m, n, k=k, mode="unified", bias_grad=bias_grad, sparse_grad=sparse_grad).to(dtype)
    x = torch.randn(batch, m, generator=gen).to(dtype).requires_grad_()
    dy = torch.randn(batch, n, generator=gen).to(dtype)
    for _ in range(2):
        x.grad = layer.weight.grad = layer.bias.grad = None
        layer(x).backward(dy)
        assert layer.weight.grad.layout == (torch.sparse_coo if sparse_grad else torch.strided)
        grads = (x.grad, layer.weight.grad.to_dense(), layer.bias.grad)
        for got, want in zip(grads, _reference(x.detach(), layer.weight.detach(), dy, k, bias_grad)):
            assert got.dtype == dtype
            _close(got, want, dtype)
    expected = dispatch.compiled_op_applies("cpu", dtype)
    assert unified_op_calls == [expected, expected]


def test_three_dimensional_input_and_no_bias(unified_op_calls):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 16, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(24, 16, generator=gen, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(2, 3, 24, generator=gen, dtype=torch.float64)
    meprop_linear(x, weight, None, k=5, mode="unified").backward(dy)
    want = _reference(x.detach().reshape(6, 16), weight.detach(), dy.reshape(6, 24), 5, "sparse")
    _close(x.grad.reshape(6, 16), want[0], torch.float64)
    _close(weight.grad, want[1], torch.float64)


def test_create_graph_gives_second_order_terms(unified_op_calls):
    """A gradient penalty through the op equals the same penalty through the masked reference."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(6, 9, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(12, 9, generator=gen, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(6, 12, generator=gen, dtype=torch.float64, requires_grad=True)
    (grad_x,) = torch.autograd.grad(meprop_linear(x, weight, None, k=4, mode="unified"), x, dy, create_graph=True)
    grad_x.square().sum().backward()
    mask = torch.zeros(12, dtype=torch.float64).index_fill(0, dy.detach().abs().sum(0).topk(4).indices, 1)
    x2 = x.detach().clone().requires_grad_()
    w2, dy2 = weight.detach().clone().requires_grad_(), dy.detach().clone().requires_grad_()
    ((dy2 * mask) @ w2).square().sum().backward()
    _close(weight.grad, w2.grad, torch.float64)
    _close(dy.grad, dy2.grad, torch.float64)


def test_autocast_and_synchronized_selection_take_the_python_function(unified_op_calls):
    x = torch.randn(4, 8, requires_grad=True)
    weight = torch.randn(10, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        meprop_linear(x, weight, None, k=3, mode="unified").sum().backward()
    assert unified_op_calls == [False]
    assert not dispatch.unified_op_applies(x, weight, "unified", "dense", None, True)  # sync_selection
    assert not dispatch.unified_op_applies(x, weight, "unified", "dense_tracked", None, False)
    assert not dispatch.unified_op_applies(x, weight, "per_example", "dense", None, False)


def test_the_backward_is_counted_as_unified(unified_op_calls):
    before = kernels.formulation_counts().get("unified", 0)
    x = torch.randn(4, 8, requires_grad=True)
    meprop_linear(x, torch.randn(10, 8, requires_grad=True), None, k=3, mode="unified").sum().backward()
    assert kernels.formulation_counts()["unified"] == before + 1
    assert kernels.last_formulation() == "unified"
