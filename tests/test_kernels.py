"""The compiled kernels: built and loaded, opcheck on every op, both formulations, the fallback
warning, torch.compile through the kernels. Gradients against the reference: test_functional.py
and test_lstm.py (each test there runs on both paths)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

import meprop
import meprop.functional as functional
from meprop import dispatch, kernels, tuning
from meprop.functional import masked_dense_linear_backward
from meprop.kernels import _build
from meprop.selection import select


def _need_kernels():
    if not kernels.enabled():
        pytest.skip("MEPROP_KERNELS=off")
    if not kernels.load():
        pytest.fail(f"the meprop kernels are not available: {kernels.unavailable_reason()} "
                    f"(make setup builds them: python -m meprop.kernels build)")


def test_kernels_are_built_and_loaded():
    """`make setup` builds the kernels; CI (a fresh clone) exercises them through this suite."""
    _need_kernels()
    assert kernels.available()
    assert kernels.library_path() == str(_build.library_path())


def _operands(batch, n, m, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=gen, dtype=dtype) for shape in ((batch, n), (batch, m), (n, m))]


@pytest.mark.parametrize("dense_weight", [False, True])
@pytest.mark.parametrize("formulation", ["gather", "masked_gemm", "masked_dense", "auto"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_per_example_backward(dense_weight, formulation, dtype):
    _need_kernels()
    dy, x, w = _operands(6, 12, 9, dtype)
    for flags in [(True, True, True, False), (True, False, True, True), (False, True, False, False)]:
        args = (dy, x, w, 3, None, *flags, dense_weight, formulation)
        torch.library.opcheck(torch.ops.meprop.per_example_backward.default, args)
    given = select(dy, 3, "random", torch.Generator().manual_seed(0))
    torch.library.opcheck(torch.ops.meprop.per_example_backward.default,
                          (dy, x, w, 3, given, True, True, True, True, dense_weight, formulation))


@pytest.mark.parametrize("sparse_grad", [False, True])
def test_opcheck_linear(sparse_grad):
    _need_kernels()
    dy, x, w = _operands(5, 12, 9, torch.float64)
    bias = torch.randn(12, dtype=torch.float64)
    for requires in (False, True):
        args = (x.clone().requires_grad_(requires), w.clone().requires_grad_(requires),
                bias.clone().requires_grad_(requires), 4, False, sparse_grad)
        # the backward's weight-gradient row count depends on the data: no dynamic-shape AOT test
        tests = ("test_schema", "test_autograd_registration", "test_faketensor")
        torch.library.opcheck(torch.ops.meprop.linear.default, args, test_utils=tests)


@pytest.mark.parametrize("k, create_graph", [(12, False), (12, True), (4, True)])
def test_linear_row_sparse_gradient_lists_every_kept_row_even_when_zero(k, create_graph):
    """sparse_grad=True: a row kept with a zero gradient is still a touched row of the COO gradient.

    At k >= n every row is kept; under create_graph the touched rows are those of the top-k.
    The Python path (weight_grad_from_dense) lists the same rows.
    """
    _need_kernels()
    dy, x, w = _operands(5, 12, 9, torch.float64)
    x[:, :] = 0.0  # every weight-gradient row is exactly zero
    w = w.clone().requires_grad_()
    out = torch.ops.meprop.linear(x, w, None, k, False, True)
    (grad,) = torch.autograd.grad(out, w, dy, create_graph=create_graph)
    assert grad.is_sparse and grad.is_coalesced() and grad.sparse_dim() == 1
    kept = torch.zeros(12, dtype=torch.bool)
    kept[dy.abs().topk(k, dim=1).indices.flatten()] = True
    assert torch.equal(grad._indices()[0], kept.nonzero().flatten())
    assert torch.equal(grad.to_dense(), torch.zeros_like(w))


def _lstm_operands(dtype=torch.float64, batch=2, steps=3, inputs=4, hidden=3):
    gen = torch.Generator().manual_seed(0)
    def r(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype)
    return (r(batch, steps, inputs), r(batch, hidden), r(batch, hidden), r(4 * hidden, inputs),
            r(4 * hidden, hidden), r(4 * hidden), r(4 * hidden))


@pytest.mark.parametrize("lengths", [None, torch.tensor([3, 2])], ids=["full", "padded"])
def test_opcheck_lstm_ops(lengths):
    _need_kernels()
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = _lstm_operands()
    forward_args = (x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths)
    torch.library.opcheck(torch.ops.meprop.lstm_forward.default, forward_args)
    output, h_n, c_n, gates, cells = torch.ops.meprop.lstm_forward(*forward_args)
    for dense_weight in (False, True):
        args = (torch.randn_like(output), torch.randn_like(h_n), torch.randn_like(c_n), x, h0, c0, w_ih, w_hh,
                output, gates, cells, lengths, 2, True, False, dense_weight)
        torch.library.opcheck(torch.ops.meprop.lstm_backward.default, args)


@pytest.mark.parametrize("bias_grad", ["sparse", "dense"])
@pytest.mark.parametrize("batch, n, m, k", [(1, 12, 9, 3), (40, 50, 70, 30), (20, 300, 140, 5)])
def test_both_formulations_equal_the_reference(batch, n, m, k, bias_grad):
    _need_kernels()
    dy, x, w = _operands(batch, n, m, torch.float64)
    idx = select(dy, k, "per_example")
    mask = torch.zeros_like(dy, dtype=torch.bool).scatter_(1, idx, True)
    want = masked_dense_linear_backward(x, w, dy, mask, bias_grad=bias_grad)
    for formulation in ("gather", "masked_gemm", "masked_dense"):
        for dense_weight in (False, True):
            gi, row_index, rows, gb = torch.ops.meprop.per_example_backward(
                dy, x, w, k, None, True, True, True, bias_grad == "dense", dense_weight, formulation)
            assert kernels.last_formulation() == formulation
            gw = rows if dense_weight else torch.zeros_like(w).index_copy_(0, row_index, rows)
            if not dense_weight:
                assert torch.equal(row_index, mask.any(0).nonzero().flatten())  # sorted unique touched rows
            for got, expected in zip((gi, gw, gb), want):
                torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("m", [784, 500, 71])  # whole 64-float tiles + 2 vectors; + 6 vectors + 4; + scalars
def test_float32_gathers_at_the_paper_shapes_equal_a_float64_reference(m):
    # The vectorised row gathers and scatters (rows.h) in float32, every tile / vector / scalar
    # tail of a row, against the same kept entries computed in float64.
    _need_kernels()
    batch, n, k = 10, 500, 20
    dy, x, w = _operands(batch, n, m, torch.float32)
    idx = select(dy, k, "per_example")
    mask = torch.zeros_like(dy, dtype=torch.bool).scatter_(1, idx, True)
    want = masked_dense_linear_backward(x.double(), w.double(), dy.double(), mask)
    gi, row_index, rows, gb = torch.ops.meprop.per_example_backward(
        dy, x, w, k, None, True, True, True, False, False, "gather")
    assert kernels.last_formulation() == "gather"
    gw = torch.zeros_like(w).index_copy_(0, row_index, rows)
    for got, expected in zip((gi, gw, gb), want):
        torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.usefixtures("tuning_off_for_determinism")  # the cost model decides, not a measurement
def test_formulation_choice_follows_the_cost_model():
    _need_kernels()
    assert kernels.choose_formulation(1, 500, 784, 20) == "gather"  # the paper's CPU setting
    assert kernels.choose_formulation(10, 500, 784, 250) == "gather"  # small batch: GEMV-bound
    assert kernels.choose_formulation(1024, 4096, 4096, 41) == "gather"
    assert kernels.choose_formulation(256, 4096, 4096, 2048) == "masked_gemm"  # 50%: GEMMs
    before = kernels.formulation_counts().get("gather", 0)
    layer = meprop.MepropLinear(9, 12, k=3)
    layer(torch.randn(4, 9)).sum().backward()
    assert kernels.last_formulation() == "gather"
    assert kernels.formulation_counts()["gather"] == before + 1


@pytest.fixture
def compiled_op_forbidden(monkeypatch):
    """Fails the test if the compiled per-example backward runs (it exists in this process
    once the kernels were loaded, whatever MEPROP_KERNELS says now)."""
    def refuse(call, formulation):
        raise AssertionError(f"the compiled op ran ({formulation}) where the PyTorch path was due")

    monkeypatch.setattr(functional, "_per_example_backward_kernel", refuse)


def test_off_forces_the_pytorch_path(monkeypatch, compiled_op_forbidden):
    monkeypatch.setenv("MEPROP_KERNELS", "off")
    assert not kernels.available() and not kernels.enabled()
    assert kernels.unavailable_reason() == "MEPROP_KERNELS=off"
    tuning.clear_memory()
    for k in (3, 12):  # a measured choice among the PyTorch path's formulations; dense
        layer = meprop.MepropLinear(9, 12, k=k)
        layer(torch.randn(4, 9)).sum().backward()
        assert kernels.last_formulation() in dispatch.candidates(False) + ("dense",)


def test_bad_setting_is_named(monkeypatch):
    monkeypatch.setenv("MEPROP_KERNELS", "maybe")
    with pytest.raises(ValueError, match="MEPROP_KERNELS.*maybe"):
        kernels.enabled()


def test_unavailable_kernels_warn_once_and_fall_back(monkeypatch, compiled_op_forbidden):
    """A failed build or load: one warning naming the reason, then the PyTorch path."""
    monkeypatch.setattr(kernels, "_state", {"loaded": False, "tried": False, "error": None, "warned": False,
                                            "path": None})
    monkeypatch.setattr(_build, "library_path", lambda: _build.Path("/nonexistent/meprop_kernels.so"))

    def failing_build(verbose=False):
        raise RuntimeError("Error building extension 'meprop_kernels': no C++ compiler")

    monkeypatch.setattr(_build, "build", failing_build)
    monkeypatch.setenv("MEPROP_KERNELS", "auto")
    x, w = torch.randn(4, 9, dtype=torch.float64, requires_grad=True), torch.randn(12, 9, dtype=torch.float64)
    w.requires_grad_()
    with pytest.warns(kernels.KernelsUnavailableWarning, match="no C\\+\\+ compiler") as record:
        y = meprop.meprop_linear(x, w, None, k=3)
    assert len(record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        y.sum().backward()
        meprop.meprop_linear(x, w, None, k=3)
    assert kernels.last_formulation() in dispatch.candidates(False)
    assert "no C++ compiler" in kernels.unavailable_reason()
    monkeypatch.setenv("MEPROP_KERNELS", "on")
    with pytest.raises(RuntimeError, match="MEPROP_KERNELS=on.*no C\\+\\+ compiler"):
        kernels.available()


def test_no_compiler_in_a_fresh_process(tmp_path):
    """End to end: an empty build folder and a compiler that does not exist."""
    script = textwrap.dedent("""
        import warnings, torch, meprop
        from meprop import kernels
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            layer = meprop.MepropLinear(9, 12, k=3)
            layer(torch.randn(4, 9)).sum().backward()
            layer(torch.randn(4, 9)).sum().backward()
        messages = [str(w.message) for w in caught if issubclass(w.category, kernels.KernelsUnavailableWarning)]
        assert len(messages) == 1, messages
        print(messages[0])
        print(kernels.last_formulation())
    """)
    env = dict(os.environ, MEPROP_KERNELS="auto", MEPROP_KERNELS_DIR=str(tmp_path), CXX=str(tmp_path / "no-c++"))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    warning, formulation = result.stdout.strip().splitlines()[-2:]
    assert "compiled kernels unavailable" in warning and "PyTorch path" in warning
    assert formulation in ("pytorch", "masked_dense")  # the PyTorch path's tuning candidates


def test_torch_compile_fullgraph_runs_through_the_kernels():
    """A converted per-example MLP compiles with fullgraph=True; its backward runs the kernel op."""
    _need_kernels()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32),
                                torch.nn.ReLU(), torch.nn.Linear(32, 4))
    sparse = meprop.convert(model, k=5, mode="per_example")
    x, labels = torch.randn(8, 16), torch.randint(4, (8,))

    def step(model, x):
        return torch.nn.functional.cross_entropy(model(x), labels)

    eager = step(sparse, x)
    eager.backward()
    want = [p.grad.clone() for p in sparse.parameters()]
    sparse.zero_grad(set_to_none=True)
    compiled = torch.compile(step, fullgraph=True)
    before = kernels.formulation_counts().get("gather", 0)
    loss = compiled(sparse, x)
    loss.backward()
    assert kernels.formulation_counts().get("gather", 0) == before + 2  # both hidden layers, in the kernel
    torch.testing.assert_close(loss, eager)
    for got, expected in zip((p.grad for p in sparse.parameters()), want):
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_lazy_adam_rows(amsgrad, dtype):
    _need_kernels()
    gen = torch.Generator().manual_seed(3)
    param, exp_avg = (torch.randn(9, 5, generator=gen, dtype=dtype) for _ in range(2))
    exp_avg_sq, max_sq = (torch.rand(9, 5, generator=gen, dtype=dtype) for _ in range(2))
    rows = torch.randn(3, 5, generator=gen, dtype=dtype)
    args = (param, exp_avg, exp_avg_sq, max_sq if amsgrad else None, torch.tensor([0, 4, 8]), rows,
            0.01, 0.01, 0.9, 0.999, 1e-8, 0.1, False, True)
    torch.library.opcheck(torch.ops.meprop.lazy_adam_rows_.default, args)


def test_status_names_the_library_and_the_selection_in_use(capsys):
    _need_kernels()
    from meprop.kernels.__main__ import main

    before = kernels.vector_selection()
    try:
        for use_avx512 in (False, True):
            in_use = kernels.vector_selection(use_avx512)
            assert main(["status"]) == 0
            out = capsys.readouterr().out
            assert str(kernels.library_path()) in out
            assert ("AVX-512 quickselect" if in_use else "portable radix select") in out
    finally:
        kernels.vector_selection(before)
