"""Which path a meProp backward takes per device and dtype, and that every path works as users
run it: tuning on with a cold cache, kernels on or off, float16 / bfloat16 / float32 / float64,
autocast and GradScaler (the linear layer, MepropLSTM and the lazy optimizers).

The decision is tested from device and dtype arguments (no GPU needed); the runs check the
gradients against the float64 masked reference, and that the compiled op never runs where it
does not apply (it exists in this process once loaded, whatever MEPROP_KERNELS says).
"""

from __future__ import annotations

import pytest
import torch

import meprop
import meprop.functional as functional
from meprop import dispatch, kernels, tuning
from meprop.functional import masked_dense_linear_backward
from meprop.selection import select

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
LOW = (torch.float16, torch.bfloat16)
TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 5e-2, torch.float32: 1e-5, torch.float64: 1e-10}
pytestmark = pytest.mark.usefixtures("meprop_path", "cold_tuning_cache")



@pytest.fixture
def compiled_runs(monkeypatch):
    """The (device, dtype) of every compiled per-example backward run during the test."""
    seen, real = [], functional._per_example_backward_kernel

    def spy(call, formulation):
        seen.append((call.dy.device.type, call.dy.dtype))
        return real(call, formulation)

    monkeypatch.setattr(functional, "_per_example_backward_kernel", spy)
    return seen


@pytest.mark.parametrize("device", ["cpu", "cuda", "meta", "mps"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_candidates_and_the_path_follow_device_and_dtype(device, dtype):
    on_kernels = kernels.enabled() and kernels.load()
    applies = dispatch.compiled_op_applies(device, dtype)
    assert applies == (on_kernels and device == "cpu" and dtype in (torch.float32, torch.float64))
    names = dispatch.candidates(applies)
    assert names == (("gather", "masked_gemm", "masked_dense", "pytorch") if applies else ("pytorch", "masked_dense"))
    for name in names + ("auto",):
        ran, compiled = dispatch.backward_implementation(name, device, dtype)
        assert compiled == (applies and name in dispatch.KERNEL_CODES)
        assert ran in kernels.FORMULATIONS + ("auto",)
        if not compiled:
            assert ran in ("pytorch", "masked_dense")  # what the PyTorch path implements
    for name in ("dense", "unified", "pytorch"):  # never the compiled op's
        assert dispatch.backward_implementation(name, device, dtype) == (name, False)


def test_a_measured_bucket_is_kept_apart_for_the_compiled_and_the_pytorch_path():
    keys = {tuning.bucket(torch.device("cpu"), torch.float32, 8, 32, 16, 4, "dense", True, compiled)
            for compiled in (True, False)}
    assert len(keys) == 2  # a winner timed with the kernels is never reused without them


def _masked_reference(x, w, dy, k):
    """float64 gradients of the entries meProp keeps of ``dy`` (selected in dy's own dtype)."""
    mask = torch.zeros_like(dy, dtype=torch.bool).scatter_(1, select(dy, k, "per_example"), True)
    return masked_dense_linear_backward(x.double(), w.double(), dy.double(), mask)


def _assert_close(got, want, dtype):
    tol = TOLERANCE[dtype] * max(1.0, float(want.abs().max()))
    torch.testing.assert_close(got.double(), want, rtol=TOLERANCE[dtype], atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sparse_grad", [False, True])
def test_linear_backward_in_every_dtype(dtype, sparse_grad, compiled_runs):
    gen = torch.Generator().manual_seed(0)
    layer = meprop.MepropLinear(16, 32, k=4, sparse_grad=sparse_grad).to(dtype)
    x = torch.randn(8, 16, generator=gen).to(dtype).requires_grad_()
    dy = torch.randn(8, 32, generator=gen).to(dtype)
    for _ in range(2):  # the first measures, the second reuses the winner
        x.grad = layer.weight.grad = layer.bias.grad = None
        layer(x).backward(dy)
        grads = (x.grad, layer.weight.grad.to_dense(), layer.bias.grad)
        for got, want in zip(grads, _masked_reference(x.detach(), layer.weight.detach(), dy, 4)):
            assert got.dtype == dtype
            _assert_close(got, want, dtype)
    assert all(dispatch.compiled_op_applies(*seen) for seen in compiled_runs)


@pytest.mark.parametrize("dtype", LOW)
def test_autocast_and_grad_scaler(dtype, compiled_runs):
    gen = torch.Generator().manual_seed(1)
    layer = meprop.MepropLinear(16, 32, k=4)
    before = layer.weight.detach().clone()
    x = torch.randn(8, 16, generator=gen)
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    with torch.autocast("cpu", dtype):
        y = layer(x)
    assert y.dtype == dtype
    dy = torch.randn(8, 32, generator=gen).to(dtype)
    scaler.scale((y * dy).float().sum()).backward()
    scaler.step(opt)
    scaler.update()
    assert layer.weight.grad.dtype == torch.float32  # the parameter's own dtype, as autocast gives
    want = _masked_reference(x.to(dtype), before.to(dtype), dy, 4)[1]
    _assert_close((before - layer.weight.detach()) / 0.5, want, dtype)
    assert compiled_runs == []  # the compiled op takes no float16 / bfloat16


@pytest.mark.parametrize("dtype", DTYPES)
def test_lstm_in_every_dtype_and_under_autocast(dtype, compiled_runs):
    gen = torch.Generator().manual_seed(2)
    lstm = meprop.MepropLSTM(5, 6, k=24).to(dtype)  # k = 4h: the exact gradient, nn.LSTM's
    reference = torch.nn.LSTM(5, 6, batch_first=True).double()
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(reference, f"{name}_l0").copy_(getattr(lstm, name))
    x = torch.randn(3, 4, 5, generator=gen).to(dtype)
    lstm(x)[0].float().sum().backward()
    reference(x.double())[0].sum().backward()
    _assert_close(lstm.weight_hh.grad, reference.weight_hh_l0.grad, dtype)
    sparse = meprop.MepropLSTM(5, 6, k=3)
    with torch.autocast("cpu", torch.bfloat16):
        out = sparse(x.float())[0]
    out.float().sum().backward()
    assert sparse.weight_ih.grad.dtype == torch.float32 and int(sparse.weight_ih.grad.ne(0).any(1).sum()) > 0
    assert all(dispatch.compiled_op_applies(*seen) for seen in compiled_runs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make", [
    lambda p: meprop.optim.Adam(p, lr=0.1, lazy=True),
    lambda p: meprop.optim.AdamW(p, lr=0.1, lazy=True, amsgrad=True),
    lambda p: meprop.optim.SGD(p, lr=0.1, momentum=0.9, lazy=True),
], ids=["adam", "adamw-amsgrad", "sgd-momentum"])
def test_lazy_optimizers_in_every_dtype(dtype, make):
    gen = torch.Generator().manual_seed(3)
    layer = meprop.MepropLinear(16, 32, k=4).to(dtype)
    opt = make(layer.parameters())
    before = layer.weight.detach().clone()
    for _ in range(2):
        opt.zero_grad()
        layer(torch.randn(8, 16, generator=gen).to(dtype)).float().sum().backward()
        opt.step()
    changed = layer.weight.detach().ne(before).any(1)
    assert layer.weight.dtype == dtype and torch.isfinite(layer.weight).all()
    assert 0 < int(changed.sum()) <= 2 * 8 * 4  # only touched rows moved
