"""convert(k={name: k} or callable): per-layer k; meprop.options: the release's bias gradient and initialisation."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import meprop
from meprop import options


def _base():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))


def _ks(model):
    return {name: module.k for name, module in model.named_modules() if isinstance(module, meprop.MepropLinear)}


def test_dict_converts_the_named_layers_with_their_k():
    model = meprop.convert(_base(), k={"0": 3, "2": None})
    assert _ks(model) == {"0": 3}
    model = meprop.convert(_base(), k={"0": 3, "2": 5})
    assert _ks(model) == {"0": 3, "2": 5}
    model = meprop.convert(_base(), k={"4": 2}, keep_output_layer=False)
    assert _ks(model) == {"4": 2}


def test_callable_is_asked_for_each_layer_that_would_be_converted():
    asked = []

    def k_of(name, module):
        asked.append(name)
        return None if name == "2" else module.out_features // 4

    model = meprop.convert(_base(), k=k_of)
    assert asked == ["0", "2"] and _ks(model) == {"0": 4}


def test_gradients_follow_each_layers_k_against_float64_masked_reference():
    model = meprop.convert(_base().double(), k={"0": 2, "2": 7})
    x = torch.randn(5, 4, dtype=torch.float64)
    model(x).pow(2).sum().backward()
    for name, k in (("0", 2), ("2", 7)):
        bias_grad = model.get_submodule(name).bias.grad
        assert int((bias_grad != 0).sum()) <= 5 * k  # each example kept k of this layer's entries


@pytest.mark.parametrize("spec, words", [
    ({"9": 2}, ["'9'", "not nn.Linear"]),
    ({"1": 2}, ["'1'"]),  # a ReLU
    ({"4": 2}, ["'4'", "output layer"]),  # the kept-dense output layer
    ({"0": 17}, ["'0'", "17", "out_features=16"]),
    ({"0": 2.5}, ["'0'", "2.5"]),
])
def test_bad_per_layer_k_is_refused_naming_the_layer(spec, words):
    with pytest.raises((ValueError, TypeError)) as info:
        meprop.convert(_base(), k=spec)
    for word in words:
        assert word in str(info.value)


def test_callable_returning_a_bad_k_names_the_layer():
    with pytest.raises(ValueError, match="'2'.*k must be at most out_features=12"):
        meprop.convert(_base(), k=lambda name, module: 14)


def test_release_options_and_initialisations():
    model = meprop.convert(_base(), k=3, **options.RELEASE)
    assert all(m.bias_grad == "dense" for m in model.modules() if isinstance(m, meprop.MepropLinear))
    torch.manual_seed(1)
    options.initialise(model, "release")
    bound = 3 ** -0.5  # the 12 -> 3 output layer: uniform(+-1/sqrt(out_features))
    assert model[4].weight.abs().max() <= bound and model[4].weight.abs().max() > 0.5 * bound
    assert model[4].bias.abs().max() <= bound
    options.initialise(model, "glorot")
    assert (model[0].bias == 0).all() and model[0].weight.std() > 0
    before = model[0].weight.detach().clone()
    options.initialise(model, "torch")
    assert torch.equal(before, model[0].weight)
    with pytest.raises(ValueError, match="init.*release.*'xavier'"):
        options.initialise(model, "xavier")
