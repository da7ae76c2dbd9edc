"""Empty shapes (batch 0, in_features 0, out_features 0, no time step) behave as nn.Linear and
nn.LSTM do, on both paths and with tuning on and a cold cache (the first backward measures)."""

from __future__ import annotations

import pytest
import torch

import meprop
from meprop import MODES
from meprop.functional import masked_dense_linear_backward

pytestmark = pytest.mark.usefixtures("meprop_path", "cold_tuning_cache")



@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("in_features, out_features, shape", [
    (0, 12, (4, 0)), (16, 12, (0, 16)), (16, 0, (4, 16)), (0, 12, (0, 0)), (16, 12, (2, 0, 16)),
    (0, 12, (3, 2, 0)), (16, 12, (4, 16)),
], ids=str)
def test_empty_shapes_give_what_nn_linear_gives(mode, in_features, out_features, shape):
    gen = torch.Generator().manual_seed(0)
    dense = torch.nn.Linear(in_features, out_features).double()
    with torch.no_grad():
        for p in dense.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    k = out_features or None  # k = n: exactly nn.Linear's gradient, whatever the shape
    layer = meprop.MepropLinear(in_features, out_features, k=k, k_ratio=None if k else 0.5, mode=mode).double()
    layer.load_state_dict(dense.state_dict())
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    dy = torch.randn(*shape[:-1], out_features, generator=gen, dtype=torch.float64)
    xs = [x.clone().requires_grad_() for _ in range(2)]
    outs = [module(xi) for module, xi in zip((layer, dense), xs)]
    torch.testing.assert_close(outs[0], outs[1])
    for out in outs:
        out.backward(dy)
    torch.testing.assert_close(xs[0].grad, xs[1].grad)
    for got, want in zip(layer.parameters(), dense.parameters()):
        torch.testing.assert_close(got.grad.to_dense(), want.grad)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_sparse_k_on_zero_in_features_keeps_k_bias_entries():
    layer = meprop.MepropLinear(0, 12, k=3)
    x = torch.randn(4, 0, requires_grad=True)
    out = layer(x)
    assert torch.equal(out, layer.bias.detach().expand(4, 12))
    out.backward(torch.randn(4, 12))
    assert layer.weight.grad.shape == (12, 0) and x.grad.shape == (4, 0)
    assert 3 <= int(layer.bias.grad.ne(0).sum()) <= 12


def test_the_masked_reference_takes_empty_shapes():
    for batch, n, m in [(4, 12, 0), (0, 12, 5), (4, 0, 5)]:
        x, w, dy = torch.randn(batch, m), torch.randn(n, m), torch.randn(batch, n)
        gi, gw, gb = masked_dense_linear_backward(x, w, dy, torch.ones(batch, n, dtype=torch.bool))
        assert gi.shape == (batch, m) and gw.shape == (n, m) and gb.shape == (n,)


@pytest.mark.parametrize("batch, steps", [(0, 4), (3, 0), (0, 0)])
def test_lstm_empty_batch_or_no_step_stays_in_the_graph(batch, steps):
    lstm = meprop.MepropLSTM(5, 6, k=4)
    x = torch.randn(batch, steps, 5, requires_grad=True)
    output, (h, c) = lstm(x)
    assert output.shape == (batch, steps, 6) and h.shape == c.shape == (batch, 6)
    output.sum().backward()  # nn.LSTM refuses no step; here a backward gives zero gradients
    assert x.grad.shape == x.shape
    for weight in (lstm.weight_ih, lstm.weight_hh):  # zero, or None where no projection ran
        assert weight.grad is None or not weight.grad.any()
