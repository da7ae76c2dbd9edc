"""meProp layers under torch.func: grad, functional_call, vmap (per-sample gradients)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.func import functional_call, grad, vmap

import meprop

pytestmark = pytest.mark.usefixtures("meprop_path")

K = 3


def _model(mode="per_example", sparse_grad=False):
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    return meprop.convert(base, k=K, mode=mode, sparse_grad=sparse_grad)


def _data(batch=6):
    gen = torch.Generator().manual_seed(1)
    return (torch.randn(batch, 5, generator=gen, dtype=torch.float64),
            torch.randn(batch, 2, generator=gen, dtype=torch.float64))


def _loss(model, params, x, y):
    return ((functional_call(model, params, (x,)) - y) ** 2).sum()


def _eager_grads(model, x, y):
    model.zero_grad()
    ((model(x) - y) ** 2).sum().backward()
    return {name: p.grad.to_dense().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("mode", ["per_example", "unified"])
def test_func_grad_with_functional_call_equals_eager_backward(mode):
    model = _model(mode)
    x, y = _data()
    params = {name: p.detach() for name, p in model.named_parameters()}
    grads = grad(lambda p: _loss(model, p, x, y))(params)
    torch.testing.assert_close(grads, _eager_grads(model, x, y))


def test_vmap_per_sample_gradients_sum_to_the_batch_gradient():
    model = _model("per_example")
    x, y = _data()
    params = {name: p.detach() for name, p in model.named_parameters()}

    def one(p, xi, yi):
        return _loss(model, p, xi.unsqueeze(0), yi.unsqueeze(0))

    per_sample = vmap(grad(one), in_dims=(None, 0, 0))(params, x, y)
    for i in range(x.shape[0]):  # each sample's gradient is that sample's own meProp backward
        expected = _eager_grads(model, x[i : i + 1], y[i : i + 1])
        torch.testing.assert_close({n: g[i] for n, g in per_sample.items()}, expected)
    summed = {n: g.sum(0) for n, g in per_sample.items()}
    torch.testing.assert_close(summed, _eager_grads(model, x, y))  # per-example top-k


def test_vmap_forward_of_a_unified_layer():
    model = _model("unified")
    x, _ = _data()
    out = vmap(model)(x.unsqueeze(1))  # (B, 1, 2)
    torch.testing.assert_close(out.squeeze(1), model(x))


def test_sparse_grad_under_a_transform_is_refused_naming_meprop():
    model = _model(sparse_grad=True)
    x, y = _data()
    params = {name: p.detach() for name, p in model.named_parameters()}
    with pytest.raises(ValueError, match="meprop_linear: sparse_grad=True.*torch.func"):
        grad(lambda p: _loss(model, p, x, y))(params)


def test_func_grad_through_meprop_lstm_equals_eager_backward():
    torch.manual_seed(0)
    lstm = meprop.MepropLSTM(3, 4, k=5).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    params = {name: p.detach() for name, p in lstm.named_parameters()}
    grads = grad(lambda p: functional_call(lstm, p, (x,))[0].square().sum())(params)
    lstm(x)[0].square().sum().backward()
    torch.testing.assert_close(grads, {name: p.grad for name, p in lstm.named_parameters()})
