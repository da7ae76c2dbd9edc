"""What the layers promise: the LSTM is exported, sparse_grad=True means COO at every k, and
meta tensors go through backward like nn.Linear's."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import meprop

pytestmark = pytest.mark.usefixtures("meprop_path")


def test_meprop_lstm_is_exported():
    assert meprop.MepropLSTM is meprop.lstm.MepropLSTM
    assert "MepropLSTM" in meprop.__all__


@pytest.mark.parametrize("mode", ["per_example", "unified", "random"])
def test_sparse_grad_with_k_equal_out_features_is_coo_and_sparse_adam_steps(mode):
    torch.manual_seed(0)
    dense = nn.Linear(5, 4).double()
    layer = meprop.MepropLinear.from_linear(
        nn.Linear(5, 4).double(), k=4, mode=mode, sparse_grad=True
    )
    layer.load_state_dict(dense.state_dict())
    x = torch.randn(3, 5, dtype=torch.float64)
    layer(x).square().sum().backward()
    dense(x).square().sum().backward()
    assert layer.weight.grad.layout == torch.sparse_coo
    torch.testing.assert_close(layer.weight.grad.to_dense(), dense.weight.grad)
    torch.optim.SparseAdam([layer.weight], lr=0.1).step()


def test_meta_backward_gives_meta_gradients_like_nn_linear():
    layer = meprop.MepropLinear(6, 5, k=2, device="meta")
    x = torch.empty(4, 6, device="meta", requires_grad=True)
    layer(x).sum().backward()
    assert layer.weight.grad.shape == (5, 6) and layer.weight.grad.device.type == "meta"
    assert x.grad.shape == (4, 6) and layer.bias.grad.shape == (5,)
