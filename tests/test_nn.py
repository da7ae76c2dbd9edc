"""MepropLinear as a drop-in for nn.Linear, convert(model), and a short training run per mode."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from meprop import MepropLinear, convert, sparsified_layers
from meprop.selection import FIXED_K_MODES as MODES  # the sampled modes: tests/test_sampled.py


def test_same_parameters_and_initialisation_as_nn_linear():
    torch.manual_seed(0)
    linear = nn.Linear(20, 30)
    torch.manual_seed(0)
    sparse = MepropLinear(20, 30, k=5)
    assert isinstance(sparse, nn.Linear)
    assert [name for name, _ in sparse.named_parameters()] == ["weight", "bias"]
    torch.testing.assert_close(sparse.weight, linear.weight, rtol=0, atol=0)
    torch.testing.assert_close(sparse.bias, linear.bias, rtol=0, atol=0)
    assert MepropLinear(4, 6, bias=False, k=1).bias is None


def test_state_dict_round_trip_with_nn_linear():
    linear = nn.Linear(8, 6)
    sparse = MepropLinear(8, 6, k=2)
    sparse.load_state_dict(linear.state_dict())
    torch.testing.assert_close(sparse.weight, linear.weight, rtol=0, atol=0)
    back = nn.Linear(8, 6)
    back.load_state_dict(sparse.state_dict())
    torch.testing.assert_close(back.bias, linear.bias, rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs, k", [({"k": 7}, 7), ({"k_ratio": 0.1}, 5), ({"k_ratio": 0.001}, 1), ({"k_ratio": 1.0}, 50)]
)
def test_k_and_k_ratio_resolution(kwargs, k):
    assert MepropLinear(10, 50, **kwargs).k == k


def test_extra_repr_shows_k_and_mode():
    text = repr(MepropLinear(10, 50, k_ratio=0.1, mode="unified"))
    assert "k=5" in text and "k_ratio=0.1" in text and "mode=unified" in text


def test_eval_and_no_grad_behave_like_nn_linear():
    layer = MepropLinear(6, 10, k=1)
    x = torch.randn(4, 6, requires_grad=True)
    dy = torch.randn(4, 10)
    layer.eval()
    layer(x).backward(dy)
    dense_grad = x.grad.clone()
    torch.testing.assert_close(dense_grad, dy @ layer.weight.detach())
    layer.train()
    x.grad = None
    layer(x).backward(dy)
    assert not torch.allclose(x.grad, dense_grad)  # k=1 of 10 really is sparser
    with torch.no_grad():
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))


def test_from_linear_shares_parameters():
    linear = nn.Linear(5, 7)
    sparse = MepropLinear.from_linear(linear, k=3, mode="unified")
    assert sparse.weight is linear.weight and sparse.bias is linear.bias
    assert (sparse.in_features, sparse.out_features, sparse.k, sparse.mode) == (5, 7, 3, "unified")
    no_bias = MepropLinear.from_linear(nn.Linear(5, 7, bias=False), k=3)
    assert no_bias.bias is None and "bias" not in dict(no_bias.named_parameters())


class _Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU())
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.norm(self.encoder(x)))


def test_convert_nested_model_keeps_output_dense_and_shares_parameters():
    model = _Nested()
    converted = convert(model, k=4, mode="unified")
    assert converted is not model
    assert isinstance(converted.encoder[0], MepropLinear)
    assert isinstance(converted.encoder[2], MepropLinear)
    assert type(converted.head) is nn.Linear
    assert converted.encoder[0].weight is model.encoder[0].weight
    assert converted.head.weight is model.head.weight
    assert converted.norm.weight is model.norm.weight
    assert type(model.encoder[0]) is nn.Linear  # the original is left as it was
    x = torch.randn(3, 6)
    torch.testing.assert_close(converted(x), model(x))


def test_convert_inplace_skip_and_output_layer_option():
    model = _Nested()
    same = convert(model, k=2, skip=["encoder.2"], inplace=True)
    assert same is model
    assert isinstance(model.encoder[0], MepropLinear) and type(model.encoder[2]) is nn.Linear
    everything = convert(_Nested(), k=2, keep_output_layer=False)
    assert isinstance(everything.head, MepropLinear)
    by_predicate = convert(_Nested(), k=2, skip=lambda name, module: module.in_features == 6)
    assert type(by_predicate.encoder[0]) is nn.Linear
    assert isinstance(by_predicate.encoder[2], MepropLinear)


def test_convert_single_linear():
    layer = nn.Linear(4, 9)
    assert isinstance(convert(layer, k=2, keep_output_layer=False), MepropLinear)
    assert type(convert(layer, k=2)) is nn.Linear  # it is the output layer


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        ({}, ValueError, ["k", "k_ratio"]),
        ({"k": 2, "k_ratio": 0.5}, ValueError, ["k=2", "k_ratio=0.5"]),
        ({"k_ratio": 0.0}, ValueError, ["k_ratio", "0.0", "(0, 1]"]),
        ({"k_ratio": 1.5}, ValueError, ["k_ratio", "1.5"]),
        ({"k_ratio": "half"}, TypeError, ["k_ratio", "half"]),
        ({"k": 0}, ValueError, ["k", "0"]),
        ({"k": 3.0}, TypeError, ["k", "3.0"]),
        ({"k": 11}, ValueError, ["k=11", "out_features=10"]),
        ({"k": 2, "mode": "Unified"}, ValueError, ["mode", "Unified"]),
        ({"k": 2, "bias_grad": "zero"}, ValueError, ["bias_grad", "zero"]),
    ],
)
def test_bad_module_arguments(kwargs, exc, words):
    with pytest.raises(exc) as info:
        MepropLinear(4, 10, **kwargs)
    for word in words:
        assert word in str(info.value)


def test_convert_bad_arguments():
    with pytest.raises(ValueError, match="encoder.9"):
        convert(_Nested(), k=2, skip=["encoder.9"])
    with pytest.raises(TypeError, match="skip"):
        convert(_Nested(), k=2, skip="encoder.0")
    with pytest.raises(ValueError, match="encoder.0"):
        convert(_Nested(), k=17)  # larger than the hidden layers' 16 outputs
    with pytest.raises(TypeError, match="model"):
        convert("not a model", k=2)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sparse_grad", [False, True])
def test_short_training_lowers_loss(mode, sparse_grad):
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 20, generator=gen) * 2
    labels = torch.randint(0, 4, (512,), generator=gen)
    data = centers[labels] + torch.randn(512, 20, generator=gen)
    torch.manual_seed(0)
    model = nn.Sequential(
        MepropLinear(20, 64, k=8, mode=mode, sparse_grad=sparse_grad), nn.ReLU(),
        MepropLinear(64, 64, k=8, mode=mode, sparse_grad=sparse_grad), nn.ReLU(),
        nn.Linear(64, 4),
    )
    optimizer = torch.optim.Adagrad(model.parameters(), lr=0.05)

    def loss_on_all():
        with torch.no_grad():
            return F.cross_entropy(model(data), labels).item()

    before = loss_on_all()
    for step in range(300):
        batch = torch.randint(0, 512, (32,), generator=gen)
        optimizer.zero_grad()
        F.cross_entropy(model(data[batch]), labels[batch]).backward()
        optimizer.step()
    after = loss_on_all()
    assert after < 0.5 * before, (before, after)


def test_convert_leaves_multihead_attention_projections_dense_and_says_so():
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
    with pytest.warns(UserWarning, match=r"'self_attn.out_proj' \(nn.MultiheadAttention"):
        converted = convert(layer, k=2, keep_output_layer=False)
    assert sparsified_layers(converted) == ["linear1", "linear2"]
    assert not isinstance(converted.self_attn.out_proj, MepropLinear)
    converted(torch.randn(2, 5, 16)).sum().backward()
    rows = converted.linear1.weight.grad.abs().sum(1) != 0  # (32,) at most 2 per token
    assert 0 < int(rows.sum()) <= 2 * 2 * 5
    assert bool((converted.self_attn.out_proj.weight.grad.abs().sum(1) != 0).all())


class _HeadFirst(nn.Module):
    """A language-model-like module whose head is registered before its last projection."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8, 3)
        self.inp = nn.Linear(4, 8)
        self.proj = nn.Linear(8, 8)
        self.unused = nn.Linear(8, 8)
        self.norm = nn.BatchNorm1d(8)

    def forward(self, x):
        return self.head(self.norm(self.proj(torch.relu(self.inp(x)))))


def test_convert_finds_the_output_layer_by_forward_order_from_example_inputs():
    model = _HeadFirst()
    by_registration = convert(model, k=2)
    assert "head" in sparsified_layers(by_registration)  # the documented registration rule
    stats = model.norm.running_mean.clone()
    with pytest.warns(UserWarning, match=r"'unused' \(not called"):
        by_forward = convert(model, k=2, example_inputs=torch.randn(6, 4))
    assert sparsified_layers(by_forward) == ["inp", "proj"]
    assert torch.equal(model.norm.running_mean, stats), "the probe leaves buffers as they were"


def test_zero_in_features_and_empty_batches_train_like_nn_linear():
    layer = MepropLinear(0, 12, k=3)
    out = layer(torch.randn(5, 0))
    out.sum().backward()
    assert layer.weight.grad.shape == (12, 0)
    assert int((layer.bias.grad != 0).sum()) <= 3 * 5
    empty = MepropLinear(4, 6, k=2)
    empty(torch.randn(0, 4)).sum().backward()
    assert not empty.weight.grad.any() and not empty.bias.grad.any()
