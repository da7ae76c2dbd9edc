"""The paper's models: MLP (meProp on hidden layers, output dense or own k) and the POS tagger."""

import pytest
import torch
import torch.nn as nn

from meprop.lstm import MepropLSTM
from meprop.lab.ops.models import MLP, PosTagger
from meprop.nn import MepropLinear


def _linears(model):
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def test_mlp_layout_dense_and_meprop():
    dense = MLP(784, 50, 3, 10)
    assert [type(m) for m in _linears(dense)] == [nn.Linear] * 4
    sparse = MLP(784, 50, 3, 10, k=5, dropout=0.1)
    layers = _linears(sparse)
    assert [type(m) for m in layers] == [MepropLinear] * 3 + [nn.Linear]
    assert [m.k for m in layers[:3]] == [5, 5, 5]
    assert sum(isinstance(m, nn.Dropout) for m in sparse.modules()) == 3
    own = MLP(784, 50, 2, 10, k=5, output_k=3)
    assert isinstance(_linears(own)[-1], MepropLinear) and _linears(own)[-1].k == 3
    assert sparse(torch.rand(4, 1, 28, 28)).shape == (4, 10)


def test_mlp_meprop_touches_k_rows_per_example():
    torch.manual_seed(0)
    model = MLP(20, 30, 2, 4, k=2)
    model(torch.randn(1, 20)).sum().backward()  # one example: k rows of each hidden weight change
    for layer in _linears(model)[:2]:
        assert (layer.weight.grad.abs().sum(1) != 0).sum().item() <= 2
    assert (_linears(model)[-1].weight.grad != 0).any()


def test_mlp_bad_arguments():
    with pytest.raises(ValueError, match=r"hidden layer 0: k must be at most out_features=50"):
        MLP(784, 50, 2, 10, k=51)
    with pytest.raises(ValueError, match=r"output layer: k must be at most out_features=10"):
        MLP(784, 50, 2, 10, k=5, output_k=11)
    with pytest.raises(ValueError, match=r"dropout must be a float in \[0, 1\), got 1.0"):
        MLP(dropout=1.0)
    with pytest.raises(ValueError, match="layers must be a positive int, got 0"):
        MLP(layers=0)
    with pytest.raises(ValueError, match="mode must be one of"):
        MLP(784, 50, 2, 10, k=5, mode="bottom")


def test_pos_tagger_shapes_and_lstm_k():
    tagger = PosTagger(30, 7, embed=8, hidden=6, k=3)
    assert isinstance(tagger.lstm, MepropLSTM) and tagger.lstm.k == 3
    assert type(tagger.classifier) is nn.Linear  # classifier dense, as in the paper
    words = torch.tensor([[3, 4, 5], [6, 7, 0]])
    logits = tagger(words, torch.tensor([3, 2]))
    assert logits.shape == (2, 3, 7)
    with pytest.raises(ValueError, match=r"LSTM \(4 \* hidden = 24 gate outputs\): k must be at most"):
        PosTagger(30, 7, embed=8, hidden=6, k=25)
    with pytest.raises(ValueError, match="vocab must be a positive int"):
        PosTagger(0, 7)


def test_mlp_initialisations_and_bias_grad():
    torch.manual_seed(0)
    torch_init = _linears(MLP(784, 500, 2, 10))
    release = _linears(MLP(784, 500, 2, 10, init="release"))
    glorot = _linears(MLP(784, 500, 2, 10, init="glorot"))
    # nn.Linear: uniform(+-1/sqrt(in)); the release: uniform(+-1/sqrt(out)), 10 outputs -> bound 0.316
    assert torch_init[-1].weight.abs().max() <= 500 ** -0.5
    assert 0.3 < release[-1].weight.abs().max() <= 10 ** -0.5
    assert 0.3 < release[-1].bias.abs().max() <= 10 ** -0.5
    assert release[0].weight.abs().max() <= 500 ** -0.5 < torch_init[0].weight.abs().max() * 1.3
    assert all(float(layer.bias.detach().abs().max()) == 0.0 for layer in glorot)  # C# code: zero biases
    assert abs(float(glorot[-1].weight.detach().std()) - (2 / 510) ** 0.5) < 0.01  # Glorot normal
    with pytest.raises(ValueError, match="init must be one of"):
        MLP(init="he")
    # bias_grad reaches the meProp layers: dense sums the whole output gradient
    for bias_grad, rows in (("sparse", 2), ("dense", 30)):
        torch.manual_seed(0)
        model = MLP(20, 30, 1, 4, k=2, bias_grad=bias_grad)
        model(torch.randn(1, 20)).sum().backward()
        hidden = _linears(model)[0]
        assert hidden.bias_grad == bias_grad
        assert int((hidden.bias.grad != 0).sum()) <= rows
    assert int((hidden.bias.grad != 0).sum()) > 2  # dense: more than the k kept entries
