"""Error feedback: the dropped-gradient memory against a float64 reference, its paths, state and refusals."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import meprop
from meprop.error_feedback import ErrorFeedback
from meprop.functional import masked_dense_linear_backward
from meprop.selection import select

N_IN, N_OUT, BATCH, K = 7, 12, 5, 3


def _reference_steps(x, w, dys, k, mode, decay, bias_grad):
    """float64: per step dy' = dy + m/N, top-k mask of dy', m = decay * (sum dy' - sum kept)."""
    memory = torch.zeros(N_OUT, dtype=torch.float64)
    out = []
    for dy in dys:
        shifted = dy.double() + memory / dy.shape[0]
        idx = select(shifted, k, mode)
        mask = torch.zeros_like(shifted, dtype=torch.bool)
        if idx.dim() == 1:
            mask[:, idx] = True
        else:
            mask.scatter_(1, idx, True)
        gx, gw, gb = masked_dense_linear_backward(x.double(), w.double(), shifted, mask, bias_grad=bias_grad)
        if bias_grad == "dense":
            gb = dy.double().sum(0)
        memory = decay * (shifted.sum(0) - (shifted * mask).sum(0))
        out.append((gx, gw, gb, memory.clone()))
    return out


@pytest.mark.parametrize("mode", ["per_example", "unified"])
@pytest.mark.parametrize("bias_grad", ["sparse", "dense"])
@pytest.mark.parametrize("sparse_grad", [False, True])
def test_memory_and_gradients_match_float64_reference(mode, bias_grad, sparse_grad):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, N_IN, generator=gen)
    w = torch.randn(N_OUT, N_IN, generator=gen)
    b = torch.randn(N_OUT, generator=gen)
    dys = [torch.randn(BATCH, N_OUT, generator=gen) for _ in range(4)]
    feedback = ErrorFeedback(N_OUT, 0.9)
    want = _reference_steps(x, w, dys, K, mode, 0.9, bias_grad)
    for dy, (gx_ref, gw_ref, gb_ref, memory_ref) in zip(dys, want):
        xr, wr, br = (t.clone().requires_grad_() for t in (x, w, b))
        meprop.meprop_linear(xr, wr, br, k=K, mode=mode, bias_grad=bias_grad, sparse_grad=sparse_grad,
                             error_feedback=feedback).backward(dy)
        for got, ref in ((xr.grad, gx_ref), (wr.grad.to_dense(), gw_ref), (br.grad, gb_ref),
                         (feedback.memory, memory_ref)):
            torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)
    assert feedback.memory.abs().sum() > 0


def test_nothing_is_lost_with_decay_one_and_a_dense_step_flushes_the_memory():
    gen = torch.Generator().manual_seed(1)
    x, w = torch.randn(BATCH, N_IN, generator=gen, dtype=torch.float64), torch.randn(N_OUT, N_IN, dtype=torch.float64)
    b = torch.zeros(N_OUT, dtype=torch.float64, requires_grad=True)
    layer_feedback = ErrorFeedback(N_OUT, 1.0, dtype=torch.float64)
    total_dy = torch.zeros(N_OUT, dtype=torch.float64)
    total_bias = torch.zeros(N_OUT, dtype=torch.float64)
    for step in range(5):
        dy = torch.randn(BATCH, N_OUT, generator=gen, dtype=torch.float64)
        b.grad = None
        k = N_OUT if step == 4 else K  # the last step is dense
        meprop.meprop_linear(x, w, b, k=k, error_feedback=layer_feedback).backward(dy)
        total_dy += dy.sum(0)
        total_bias += b.grad
    torch.testing.assert_close(total_bias, total_dy)  # every unit's gradient got through
    assert layer_feedback.memory.abs().max() < 1e-12


def test_module_and_convert_hold_a_memory_in_the_state_dict():
    torch.manual_seed(0)
    model = meprop.convert(nn.Sequential(nn.Linear(N_IN, N_OUT), nn.ReLU(), nn.Linear(N_OUT, 2)),
                           k=K, error_feedback=0.5)
    assert isinstance(model[0].error_feedback, ErrorFeedback) and model[0].error_feedback.decay == 0.5
    model(torch.randn(BATCH, N_IN)).pow(2).sum().backward()
    state = model.state_dict()
    assert "0.error_feedback.memory" in state and state["0.error_feedback.memory"].abs().sum() > 0
    fresh = meprop.convert(nn.Sequential(nn.Linear(N_IN, N_OUT), nn.ReLU(), nn.Linear(N_OUT, 2)),
                           k=K, error_feedback=0.5)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh[0].error_feedback.memory, model[0].error_feedback.memory)
    plain = meprop.MepropLinear(N_IN, N_OUT, k=K)
    assert plain.error_feedback is None and "error_feedback" not in str(plain.state_dict().keys())


def test_double_backward_and_meta_work_and_torch_func_is_refused():
    x = torch.randn(BATCH, N_IN, dtype=torch.float64, requires_grad=True)
    w = torch.randn(N_OUT, N_IN, dtype=torch.float64, requires_grad=True)
    feedback = ErrorFeedback(N_OUT, 0.9, dtype=torch.float64)
    out = meprop.meprop_linear(x, w, None, k=K, error_feedback=feedback)
    gx, = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)
    gx.pow(2).sum().backward()
    assert w.grad is not None and feedback.memory.abs().sum() > 0
    meta = meprop.MepropLinear(N_IN, N_OUT, k=K, error_feedback=0.9, device="meta")
    meta(torch.empty(BATCH, N_IN, device="meta")).sum().backward()
    assert meta.weight.grad.device.type == "meta"
    model = meprop.MepropLinear(N_IN, N_OUT, k=K, error_feedback=0.9)
    params = {name: p.detach() for name, p in model.named_parameters()}
    with pytest.raises(ValueError, match="error_feedback.*torch.func"):
        torch.func.grad(lambda p: torch.func.functional_call(model, p, (x.float(),)).sum())(params)


@pytest.mark.parametrize("decay, exc", [(0.0, ValueError), (1.5, ValueError), (float("nan"), ValueError),
                                        ("0.9", TypeError), (True, TypeError)])
def test_bad_decay_is_refused_naming_it(decay, exc):
    with pytest.raises(exc, match="error_feedback"):
        meprop.MepropLinear(N_IN, N_OUT, k=K, error_feedback=decay)


def test_wrong_memory_type_or_shape_is_refused():
    x, w = torch.randn(BATCH, N_IN), torch.randn(N_OUT, N_IN, requires_grad=True)
    with pytest.raises(TypeError, match="error_feedback"):
        meprop.meprop_linear(x, w, None, k=K, error_feedback=torch.zeros(N_OUT))
    with pytest.raises(ValueError, match=r"error_feedback's memory.*\(12,\)"):
        meprop.meprop_linear(x, w, None, k=K, error_feedback=ErrorFeedback(N_OUT + 1)).sum().backward()
