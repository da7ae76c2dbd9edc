"""meprop_linear's gradients against a float64 masked-dense reference, and its contract."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import meprop.functional as functional
from meprop import dispatch, kernels, meprop_linear, tuning
from meprop.selection import FIXED_K_MODES as MODES  # the sampled modes: tests/test_sampled.py
from meprop.functional import masked_dense_linear_backward
from meprop.selection import select

N_OUT, N_IN = 12, 9

# every test here runs through the compiled kernels and through the PyTorch fallback
pytestmark = pytest.mark.usefixtures("meprop_path")

def _operands(shape, dtype=torch.float32, device="cpu", seed=0):
    """input (*shape, N_IN), weight (N_OUT, N_IN), bias (N_OUT,), output gradient (*shape, N_OUT)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, N_IN, generator=gen, dtype=torch.float64)
    w = torch.randn(N_OUT, N_IN, generator=gen, dtype=torch.float64)
    b = torch.randn(N_OUT, generator=gen, dtype=torch.float64)
    dy = torch.randn(*shape, N_OUT, generator=gen, dtype=torch.float64)
    return [t.to(device=device, dtype=dtype) for t in (x, w, b, dy)]


def _run(x, w, b, dy, **kwargs):
    """Forward + backward through meprop_linear; returns (y, grad_input, grad_weight, grad_bias)."""
    x, w, b = (t.detach().clone().requires_grad_() for t in (x, w, b))
    if kwargs.get("mode", "per_example") != "random":
        kwargs.pop("generator", None)  # refused by the deterministic modes
    y = meprop_linear(x, w, b, **kwargs)
    y.backward(dy)
    grad_w = w.grad.to_dense() if w.grad.is_sparse else w.grad
    return y, x.grad, grad_w, b.grad


def _mask(dy, k, mode, seed=None):
    """The boolean (..., n) mask of the entries meProp keeps for this output gradient."""
    flat = dy.reshape(-1, dy.shape[-1])
    gen = None if seed is None else torch.Generator(device=dy.device).manual_seed(seed)
    idx = select(flat, min(k, flat.shape[1]), mode, gen)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if idx.dim() == 1:
        mask[:, idx] = True
    else:
        mask.scatter_(1, idx, True)
    return mask.reshape(dy.shape)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(1,), (7,), (64,), (3, 5)], ids=str)
@pytest.mark.parametrize("k", [1, 5, N_OUT - 1, N_OUT, N_OUT + 5])
@pytest.mark.parametrize("bias_grad", ["sparse", "dense"])
@pytest.mark.parametrize("sparse_grad", [False, True])
def test_gradients_match_float64_masked_reference(mode, shape, k, bias_grad, sparse_grad):
    _check_against_reference("cpu", mode, shape, k, bias_grad, sparse_grad)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("k", [1, 5, N_OUT])
@pytest.mark.parametrize("sparse_grad", [False, True])
def test_cuda_gradients_match_float64_masked_reference(mode, k, sparse_grad):
    for shape in [(1,), (64,), (3, 5)]:
        for bias_grad in ("sparse", "dense"):
            _check_against_reference("cuda", mode, shape, k, bias_grad, sparse_grad)


def _check_against_reference(device, mode, shape, k, bias_grad, sparse_grad):
    x, w, b, dy = _operands(shape, device=device)
    seed = 1234
    gen = torch.Generator(device=device).manual_seed(seed)
    y, gx, gw, gb = _run(
        x, w, b, dy, k=k, mode=mode, bias_grad=bias_grad, sparse_grad=sparse_grad, generator=gen
    )
    if device == "cpu" and mode != "unified" and k < N_OUT and kernels.enabled():
        # the compiled kernel ran its cost model's choice (tuning off, random mode), or the
        # measured winner among the candidates where the kernels apply
        measured = tuning.enabled() and mode == "per_example"
        assert kernels.last_formulation() in (dispatch.candidates(True) if measured else ("gather", "masked_gemm"))
    mask = _mask(dy, k, mode, seed)  # the same selection, recomputed
    ref = masked_dense_linear_backward(
        x.double(), w.double(), dy.double(), mask, bias_grad=bias_grad
    )
    torch.testing.assert_close(y, F.linear(x, w, b))
    for got, want in zip((gx, gw, gb), ref):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("k", [N_OUT, N_OUT + 5])
def test_k_at_least_out_features_is_nn_linear_gradient(mode, k):
    x, w, b, dy = _operands((16,))
    _, gx, gw, gb = _run(x, w, b, dy, k=k, mode=mode)
    linear = torch.nn.Linear(N_IN, N_OUT)
    with torch.no_grad():
        linear.weight.copy_(w)
        linear.bias.copy_(b)
    xr = x.clone().requires_grad_()
    linear(xr).backward(dy)
    torch.testing.assert_close(gx, xr.grad, rtol=1e-6, atol=0)
    torch.testing.assert_close(gw, linear.weight.grad, rtol=1e-6, atol=0)
    torch.testing.assert_close(gb, linear.bias.grad, rtol=1e-6, atol=0)


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_at_fixed_selection(monkeypatch, mode):
    """With the selection fixed, meProp's backward is the exact derivative of the masked forward.

    (gradcheck refuses sparse gradients of dense inputs; sparse_grad=True is covered by the
    float64 reference test above.)
    """
    k = 4
    x, w, b, _ = _operands((5,), dtype=torch.float64, seed=3)
    gen = torch.Generator().manual_seed(7)
    fixed = select(torch.randn(5, N_OUT, dtype=torch.float64, generator=gen), k, mode, gen)
    monkeypatch.setattr(functional, "select", lambda dy, k_, mode_, generator=None: fixed)
    mask = torch.zeros(5, N_OUT, dtype=torch.bool)
    if fixed.dim() == 1:
        mask[:, fixed] = True
    else:
        mask.scatter_(1, fixed, True)

    def masked_forward(x, w, b):
        y = meprop_linear(x, w, b, k=k, mode=mode)
        return torch.where(mask, y, torch.zeros_like(y))

    inputs = tuple(t.clone().requires_grad_() for t in (x, w, b))
    assert torch.autograd.gradcheck(masked_forward, inputs)


@pytest.mark.parametrize("mode", ["per_example", "random"])
def test_per_example_weight_grad_rows_are_the_union_of_selections(mode):
    x, w, b, dy = _operands((7,))
    k = 3
    gen = torch.Generator().manual_seed(5)
    _, _, gw, gb = _run(x, w, b, dy, k=k, mode=mode, generator=gen)
    mask = _mask(dy, k, mode, seed=5)
    kept_rows = mask.any(dim=0)  # (n,)
    assert torch.equal(gw.abs().sum(1) != 0, kept_rows)
    assert torch.equal(gb != 0, kept_rows)
    assert kept_rows.sum() < N_OUT  # the test means something: some rows untouched


def test_unified_touches_exactly_k_rows():
    x, w, b, dy = _operands((64,))
    k = 5
    _, gx, gw, gb = _run(x, w, b, dy, k=k, mode="unified")
    assert int((gw.abs().sum(1) != 0).sum()) == k
    assert int((gb != 0).sum()) == k
    expected = dy.abs().sum(0).topk(k).indices.sort().values
    assert torch.equal(torch.nonzero(gb).flatten(), expected)


def test_random_mode_is_reproducible_and_differs_from_topk():
    x, w, b, dy = _operands((8,))
    runs = [
        _run(x, w, b, dy, k=3, mode="random", generator=torch.Generator().manual_seed(11))
        for _ in range(2)
    ]
    for first, second in zip(runs[0][1:], runs[1][1:]):
        assert torch.equal(first, second)
    random_mask = _mask(dy, 3, "random", seed=11)
    topk_mask = _mask(dy, 3, "per_example")
    assert not torch.equal(random_mask, topk_mask)
    _, _, gw_topk, _ = _run(x, w, b, dy, k=3, mode="per_example")
    assert not torch.equal(runs[0][2], gw_topk)


def test_bias_grad_dense_uses_full_gradient():
    x, w, b, dy = _operands((7,))
    _, _, _, gb = _run(x, w, b, dy, k=2, bias_grad="dense")
    torch.testing.assert_close(gb, dy.sum(0))


def test_needs_input_grad_is_respected():
    x, w, b, dy = _operands((4,))
    w = w.clone().requires_grad_()
    y = meprop_linear(x, w, None, k=3)  # x needs no gradient, there is no bias
    y.backward(dy)
    assert x.grad is None
    assert w.grad is not None


def test_sparse_grad_accumulates_in_place_into_existing_dense_grad():
    x, w, b, dy = _operands((6,))
    w = w.clone().requires_grad_()
    w.grad = torch.ones_like(w)
    storage = w.grad.data_ptr()
    meprop_linear(x, w, None, k=2, mode="unified", sparse_grad=True).backward(dy)
    assert w.grad.layout == torch.strided and w.grad.data_ptr() == storage
    mask = _mask(dy, 2, "unified")
    _, ref_w, _ = masked_dense_linear_backward(x, w.detach(), dy, mask)
    torch.testing.assert_close(w.grad, ref_w + 1)


def test_sparse_grad_is_row_sparse_when_no_grad_exists():
    x, w, b, dy = _operands((6,))
    w = w.clone().requires_grad_()
    meprop_linear(x, w, None, k=2, mode="per_example", sparse_grad=True).backward(dy)
    assert w.grad.is_sparse and w.grad.sparse_dim() == 1
    assert w.grad._nnz() <= 6 * 2


def test_nan_in_gradient_propagates():
    x, w, b, dy = _operands((3,))
    dy[1, 4] = float("nan")
    _, gx, gw, gb = _run(x, w, b, dy, k=2)
    assert torch.isnan(gx[1]).all() and torch.isfinite(gx[0]).all()
    assert torch.isnan(gw[4]).all()
    assert torch.isnan(gb[4])


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("mode", MODES)
def test_other_dtypes(dtype, mode):
    x, w, b, dy = _operands((5,), dtype=dtype)
    y, gx, gw, gb = _run(x, w, b, dy, k=4, mode=mode, generator=torch.Generator().manual_seed(0))
    assert y.dtype == gx.dtype == gw.dtype == gb.dtype == dtype
    mask = _mask(dy, 4, mode, seed=0)
    ref = masked_dense_linear_backward(x.double(), w.double(), dy.double(), mask)
    tol = 1e-12 if dtype == torch.float64 else 0.1
    for got, want in zip((gx, gw, gb), ref):
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)


def test_autocast_cpu_bfloat16():
    x, w, b, dy = _operands((5,))
    x, w, b = (t.clone().requires_grad_() for t in (x, w, b))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = meprop_linear(x, w, b, k=4)
        reference = F.linear(x, w, b)
    assert y.dtype == reference.dtype == torch.bfloat16
    torch.testing.assert_close(y, reference)
    y.float().backward(dy)
    assert x.grad.dtype == w.grad.dtype == b.grad.dtype == torch.float32
    assert int((b.grad != 0).sum()) <= 5 * 4


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        ({"k": 0}, ValueError, ["k", "0"]),
        ({"k": -3}, ValueError, ["k", "-3"]),
        ({"k": 2.5}, TypeError, ["k", "2.5"]),
        ({"k": True}, TypeError, ["k", "True"]),
        ({"k": 2, "mode": "topk"}, ValueError, ["mode", "topk", "per_example"]),
        ({"k": 2, "bias_grad": "none"}, ValueError, ["bias_grad", "none", "sparse"]),
        ({"k": 2, "sparse_grad": 1}, TypeError, ["sparse_grad"]),
    ],
)
def test_bad_arguments_name_themselves(kwargs, exc, words):
    x, w, b, _ = _operands((2,))
    with pytest.raises(exc) as info:
        meprop_linear(x, w, b, **kwargs)
    for word in words:
        assert word in str(info.value)


def test_missing_k_is_an_error():
    x, w, b, _ = _operands((2,))
    with pytest.raises(TypeError, match="k"):
        meprop_linear(x, w, b)


@pytest.mark.parametrize(
    "change, exc, words",
    [
        (lambda x, w, b: (x.long(), w, b), TypeError, ["input", "int64"]),
        (lambda x, w, b: (x, w.bool(), b), TypeError, ["weight", "bool"]),
        (lambda x, w, b: (x, w.reshape(-1), b), ValueError, ["weight", "2-D"]),
        (lambda x, w, b: (x[:, :-1], w, b), ValueError, ["input", "in_features=9"]),
        (lambda x, w, b: (x, w, b[:-1]), ValueError, ["bias", "(11,)"]),
        (lambda x, w, b: (x.double(), w, b), TypeError, ["input", "weight", "float64"]),
    ],
)
def test_bad_operands_name_themselves(change, exc, words):
    operands = change(*_operands((2,))[:3])
    with pytest.raises(exc) as info:
        meprop_linear(*operands, k=2)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("mode", MODES)
def test_one_dimensional_and_empty_inputs(mode):
    _, w, b, _ = _operands((1,))
    x = torch.randn(N_IN, dtype=torch.float64).float()
    dy = torch.randn(N_OUT)
    y, gx, gw, gb = _run(x, w, b, dy, k=3, mode=mode, generator=torch.Generator().manual_seed(0))
    assert y.shape == (N_OUT,) and gx.shape == (N_IN,)
    assert int((gb != 0).sum()) == 3
    empty = torch.zeros(0, N_IN)
    y, gx, gw, gb = _run(empty, w, b, torch.zeros(0, N_OUT), k=3, mode=mode)
    assert y.shape == (0, N_OUT) and gx.shape == (0, N_IN)
    assert not gw.any() and not gb.any()


@pytest.mark.parametrize("mode", ["per_example", "unified"])
def test_generator_is_refused_by_deterministic_modes(mode):
    x, w, b, _ = _operands((3,))
    with pytest.raises(ValueError, match=r"generator is used only by mode='random'.*" + mode):
        meprop_linear(x, w, b, k=2, mode=mode, generator=torch.Generator())


def test_meta_device_forward_and_backward():
    x = torch.randn(4, N_IN, device="meta", requires_grad=True)
    w = torch.randn(N_OUT, N_IN, device="meta", requires_grad=True)
    y = meprop_linear(x, w, None, k=3, mode="unified")
    assert y.shape == (4, N_OUT) and y.device.type == "meta"
