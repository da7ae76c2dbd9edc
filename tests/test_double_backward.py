"""Double backward (create_graph=True) through meProp layers: every path keeps every term.

A gradient penalty built on ``grad_input`` (WGAN-GP, R1, input-gradient regularisation)
must change the weight gradient exactly as the float64 reference says: the masked
backward ``g = (v * mask) @ W`` differentiated again, with the mask meProp used.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import meprop
from meprop.selection import random_per_example

pytestmark = pytest.mark.usefixtures("meprop_path")

N, M, NOUT, K = 5, 7, 9, 3


def _operands(seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N, M, generator=gen, dtype=torch.float64)
    w = torch.randn(NOUT, M, generator=gen, dtype=torch.float64)
    b = torch.randn(NOUT, generator=gen, dtype=torch.float64)
    v = torch.randn(N, NOUT, generator=gen, dtype=torch.float64)  # the output gradient
    return x, w, b, v


def _mask(v, mode, seed):
    if mode == "per_example":
        idx = v.abs().topk(K, dim=1).indices
    elif mode == "random":
        idx = random_per_example(v, K, torch.Generator().manual_seed(seed))
    else:
        cols = v.abs().sum(0).topk(K).indices
        return torch.zeros(NOUT, dtype=torch.float64).index_fill(0, cols, 1).expand(N, NOUT)
    return torch.zeros_like(v).scatter(1, idx, 1)


@pytest.mark.parametrize("mode", ["per_example", "unified", "random"])
@pytest.mark.parametrize("bias_grad", ["sparse", "dense"])
def test_gradient_penalty_reaches_the_weight_exactly(mode, bias_grad):
    x0, w0, b0, v = _operands()
    x, w, b = (t.clone().requires_grad_() for t in (x0, w0, b0))
    gen = torch.Generator().manual_seed(3) if mode == "random" else None
    out = meprop.meprop_linear(x, w, b, k=K, mode=mode, bias_grad=bias_grad, generator=gen)
    (g,) = torch.autograd.grad(out, x, grad_outputs=v, create_graph=True)
    assert g.requires_grad
    (g**2).sum().backward()

    xr, wr, br = (t.clone().requires_grad_() for t in (x0, w0, b0))
    kept = v * _mask(v, mode, 3)
    g_ref = kept @ wr  # meProp's grad_input, differentiable in W
    (g_ref**2).sum().backward()
    torch.testing.assert_close(g.detach(), g_ref.detach())
    torch.testing.assert_close(w.grad, wr.grad)  # 2 * kept^T (kept @ W): the penalty's term
    assert x.grad is None or not x.grad.any()  # g does not depend on x (the layer is linear)


@pytest.mark.parametrize("bias_grad", ["sparse", "dense"])
def test_create_graph_first_order_gradients_equal_the_plain_backward(bias_grad):
    x0, w0, b0, v = _operands(2)
    results = []
    for create_graph in (False, True):
        x, w, b = (t.clone().requires_grad_() for t in (x0, w0, b0))
        out = meprop.meprop_linear(x, w, b, k=K, bias_grad=bias_grad)
        grads = torch.autograd.grad(out, (x, w, b), grad_outputs=v, create_graph=create_graph)
        # as nn.Linear: grad_input depends on W and grad_weight on x (grad_bias on v alone)
        assert grads[0].requires_grad == grads[1].requires_grad == create_graph
        results.append([g.detach() for g in grads])
    torch.testing.assert_close(results[0], results[1])


def test_penalty_changes_the_weight_gradient_of_a_converted_model():
    torch.manual_seed(0)
    model = meprop.convert(
        nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1)), k=3
    ).double()
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)

    def weight_grad(with_penalty):
        model.zero_grad()
        out = model(x).sum()
        loss = out
        if with_penalty:
            (g,) = torch.autograd.grad(out, x, create_graph=True)
            loss = out + 10 * (g**2).sum()
        loss.backward()
        return model[0].weight.grad.clone()

    assert not torch.allclose(weight_grad(False), weight_grad(True))


def test_second_derivative_of_a_k_equal_n_layer_matches_nn_linear():
    x0, w0, b0, v = _operands(1)
    layer = nn.Linear(M, NOUT).double()
    twin = meprop.MepropLinear.from_linear(
        nn.Linear(M, NOUT).double().requires_grad_(), k=NOUT
    )
    with torch.no_grad():
        for module in (layer, twin):
            module.weight.copy_(w0)
            module.bias.copy_(b0)
    grads = []
    for module in (layer, twin):
        x = x0.clone().requires_grad_()
        (g,) = torch.autograd.grad(torch.tanh(module(x)), x, grad_outputs=v, create_graph=True)
        (g**2).sum().backward()
        grads.append((module.weight.grad, x.grad))
    torch.testing.assert_close(grads[0], grads[1])


def test_meprop_lstm_double_backward_is_exact_or_refused_never_dropped(meprop_path):
    torch.manual_seed(0)
    reference = nn.LSTM(3, 4, batch_first=True).double()
    lstm = meprop.MepropLSTM.from_lstm(reference, k=16)  # k = 4h: nn.LSTM's gradients
    x0 = torch.randn(2, 5, 3, dtype=torch.float64)
    if meprop_path == "kernels":  # the compiled path refuses, naming the way out
        x = x0.clone().requires_grad_()
        with pytest.raises(RuntimeError, match="MepropLSTM: double backward.*MEPROP_KERNELS=off"):
            torch.autograd.grad(lstm(x)[0].sum(), x, create_graph=True)
        return
    grads = []
    for module in (reference, lstm):  # the PyTorch path: through meprop_linear, exact
        x = x0.clone().requires_grad_()
        (g,) = torch.autograd.grad(module(x)[0].sum(), x, create_graph=True)
        g.square().sum().backward()
        grads.append([p.grad for p in module.parameters()])
    torch.testing.assert_close(grads[0], grads[1])
