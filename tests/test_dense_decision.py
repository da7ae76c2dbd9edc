"""The dense decision, made in one place per language: a backward selects only when ``k < n`` and
the batch is not empty (:func:`meprop.selection.is_sparse`; ``is_sparse`` in csrc/common.h).

At ``k == n``, ``k > n`` (meprop_linear takes it) and on an empty batch every path, the PyTorch
one and the compiled one, runs the dense backward: the gradients equal ``F.linear``'s in float64,
the recorded formulation is ``dense``, and a row-sparse weight gradient holds every row. The
compiled ops called directly keep their own entry checks and keep every entry at ``k >= n``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import meprop
from meprop import kernels
from meprop._impl.masked_backward import masked_linear_backward
from meprop.sampling import sampling_probabilities
from meprop.selection import MODES, is_sparse

N_IN, N_OUT = 7, 6


@pytest.mark.parametrize("k, n, batch, sparse", [
    (1, 6, 3, True), (5, 6, 1, True), (6, 6, 3, False), (7, 6, 3, False), (1, 6, 0, False), (6, 6, 0, False),
    (1, 0, 3, False),
])
def test_is_sparse_only_when_k_is_below_n_and_the_batch_is_not_empty(k, n, batch, sparse):
    assert is_sparse(k, n, batch) is sparse


def _dense_reference(x, weight, bias, dy):
    """F.linear's gradients in float64: (grad_input, grad_weight, grad_bias)."""
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, weight, bias))
    F.linear(x64, w64, b64).backward(dy.double())
    return x64.grad, w64.grad, b64.grad


def _operands(batch, dtype=torch.float64):
    gen = torch.Generator().manual_seed(batch + 1)
    x = torch.randn(batch, N_IN, generator=gen, dtype=dtype, requires_grad=True)
    weight = torch.randn(N_OUT, N_IN, generator=gen, dtype=dtype, requires_grad=True)
    bias = torch.randn(N_OUT, generator=gen, dtype=dtype, requires_grad=True)
    dy = torch.randn(batch, N_OUT, generator=gen, dtype=dtype)
    return x, weight, bias, dy


DENSE_CASES = [(N_OUT, 4), (N_OUT + 3, 4), (2, 0), (N_OUT, 0)]  # (k, batch): k == n, k > n, empty batches


@pytest.mark.usefixtures("meprop_path")
@pytest.mark.parametrize("tuning", ["on", "off"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k, batch", DENSE_CASES)
def test_a_call_that_selects_nothing_runs_the_dense_backward(k, batch, dtype, mode, tuning, monkeypatch, tmp_path):
    monkeypatch.setenv("MEPROP_TUNING", tuning)
    monkeypatch.setenv("MEPROP_TUNING_DIR", str(tmp_path))
    x, weight, bias, dy = _operands(batch, dtype)
    before = kernels.formulation_counts().get("dense", 0)
    meprop.meprop_linear(x, weight, bias, k=k, mode=mode, bias_grad="sparse").backward(dy)
    assert kernels.last_formulation() == "dense"
    assert kernels.formulation_counts().get("dense", 0) == before + 1
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    for mine, want in zip((x.grad, weight.grad, bias.grad), _dense_reference(x, weight, bias, dy)):
        torch.testing.assert_close(mine.double(), want, rtol=tolerance, atol=tolerance)


@pytest.mark.usefixtures("meprop_path")
@pytest.mark.parametrize("tuning", ["on", "off"])
@pytest.mark.parametrize("k, batch", DENSE_CASES)
def test_a_row_sparse_weight_gradient_of_a_dense_call_holds_every_row(k, batch, tuning, monkeypatch, tmp_path):
    monkeypatch.setenv("MEPROP_TUNING", tuning)
    monkeypatch.setenv("MEPROP_TUNING_DIR", str(tmp_path))
    x, weight, bias, dy = _operands(batch, torch.float32)
    meprop.meprop_linear(x, weight, bias, k=k, sparse_grad=True).backward(dy)
    grad = weight.grad.coalesce()
    assert grad.is_sparse and grad.indices().tolist() == [list(range(N_OUT))]
    torch.testing.assert_close(grad.to_dense().double(), _dense_reference(x, weight, bias, dy)[1])


@pytest.mark.usefixtures("meprop_path")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("k, batch", DENSE_CASES)
def test_the_twice_differentiable_backward_is_dense_there_too(k, batch, mode):
    x, weight, bias, dy = _operands(batch)
    dy = dy.requires_grad_()
    grads = masked_linear_backward(dy, x, weight, k, mode, None, (True, True, True), "sparse")
    for mine, want in zip(grads, _dense_reference(x, weight, bias, dy.detach())):
        torch.testing.assert_close(mine, want, rtol=1e-12, atol=1e-12)
    # create_graph=True through the layer (the compiled op's GradMode branch on the kernels path)
    out = meprop.meprop_linear(x, weight, bias, k=k, mode=mode)
    (gx,) = torch.autograd.grad(out, x, dy, create_graph=True)
    torch.testing.assert_close(gx, _dense_reference(x, weight, bias, dy.detach())[0], rtol=1e-12, atol=1e-12)


def test_sampling_probabilities_keep_every_positive_score_when_nothing_is_sampled():
    scores = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]])
    for k in (3, 4):  # k == n, k > n
        assert sampling_probabilities(scores, k).tolist() == [[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]
    assert sampling_probabilities(torch.empty(0, 3), 1).shape == (0, 3)


# ----------------------------------------------------------------- the compiled ops called directly

@pytest.fixture
def ops():
    if not (kernels.enabled() and kernels.load()):
        pytest.skip(f"meprop kernels unavailable or off: {kernels.unavailable_reason()}")
    return torch.ops.meprop


@pytest.mark.parametrize("formulation", ["auto", "gather", "masked_gemm", "masked_dense"])
@pytest.mark.parametrize("k", [N_OUT, N_OUT + 3])
def test_the_kernel_keeps_every_entry_at_k_of_n_or_more(ops, k, formulation):
    x, weight, bias, dy = _operands(5)
    gi, _, rows, gb = ops.per_example_backward(dy, x.detach(), weight.detach(), k, None, True, True, True,
                                               False, True, formulation)
    want = _dense_reference(x, weight, bias, dy)
    for mine, ref in zip((gi, rows, gb), want):
        torch.testing.assert_close(mine, ref, rtol=1e-12, atol=1e-12)
    idx, val = ops.select_rows(dy, k)
    assert idx.tolist() == [list(range(N_OUT))] * 5 and torch.equal(val, dy)


@pytest.mark.parametrize("sparse_grad", [False, True])
@pytest.mark.parametrize("k, batch", DENSE_CASES)
def test_the_linear_op_runs_dense_when_it_selects_nothing(ops, k, batch, sparse_grad):
    x, weight, bias, dy = _operands(batch)
    ops.linear(x, weight, bias, k, False, sparse_grad, -1).backward(dy)
    assert kernels.last_formulation() == "dense"
    grad_weight = weight.grad.to_dense() if sparse_grad else weight.grad
    if sparse_grad:
        assert weight.grad.coalesce().indices().tolist() == [list(range(N_OUT))]
    for mine, want in zip((x.grad, grad_weight, bias.grad), _dense_reference(x, weight, bias, dy)):
        torch.testing.assert_close(mine, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("call, message", [
    (lambda ops, x, w, dy: ops.linear(x, w, None, 0, False, False, -1),
     "meprop::linear: k must be >= 1, got 0"),
    (lambda ops, x, w, dy: ops.linear(x, w, None, 2, False, False, 3),
     r"meprop::linear: formulation must be -1 \(auto\), 0 \(gather\), 1 \(masked_gemm\) or 5 \(masked_dense\), got 3"),
    (lambda ops, x, w, dy: ops.per_example_backward(dy, x, w, 0, None, True, True, True, False, True, "auto"),
     "meprop::per_example_backward: k must be >= 1, got 0"),
    (lambda ops, x, w, dy: ops.per_example_backward(dy, x, w, 2, None, True, True, True, False, True, "dense"),
     "meprop::per_example_backward: formulation must be 'auto', 'gather', 'masked_gemm' or 'masked_dense', "
     "got dense"),
    (lambda ops, x, w, dy: ops.sampled_backward(dy, x, w, -1, None, True, True, True, False, True, "auto"),
     "meprop::sampled_backward: k must be >= 1, got -1"),
    (lambda ops, x, w, dy: ops.sampled_backward(dy, x[:, :3], w, 2, None, True, True, True, False, True, "auto"),
     "meprop::sampled_backward: shapes do not match"),
    (lambda ops, x, w, dy: ops.select_rows(dy, 0), "meprop::select_rows: k must be >= 1, got 0"),
])
def test_each_op_checks_its_arguments_at_its_entry(ops, call, message):
    x, weight, _, dy = _operands(3)
    with pytest.raises(RuntimeError, match=message):
        call(ops, x.detach(), weight.detach(), dy)
