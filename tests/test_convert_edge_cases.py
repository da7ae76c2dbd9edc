"""convert() on models as users write them: subclasses, reparametrised weights, shared and
lazy modules, keyword example inputs, dropout under the probe."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.nn.utils import parametrizations, prune

import meprop


class Doubled(nn.Linear):
    def forward(self, x):
        return super().forward(x) * 2


class Renamed(nn.Linear):  # no forward of its own: converts
    pass


def _mlp(first=nn.Linear):
    torch.manual_seed(0)
    return nn.Sequential(first(4, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 2))


def test_subclass_overriding_forward_stays_dense_with_a_warning_naming_it():
    model = _mlp(Doubled)
    x = torch.randn(3, 4)
    with pytest.warns(UserWarning, match=r"'0' \(Doubled overrides forward\)"):
        converted = meprop.convert(model, k=2)
    assert type(converted[0]) is Doubled
    torch.testing.assert_close(converted(x), model(x))
    assert meprop.sparsified_layers(converted) == ["2"]


def test_subclass_without_its_own_forward_converts():
    converted = meprop.convert(_mlp(Renamed), k=2)
    assert meprop.sparsified_layers(converted) == ["0", "2"]


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("how", ["weight_norm", "prune"])
def test_reparametrised_weight_is_refused_naming_layer_and_reason(how, inplace):
    model = _mlp()
    if how == "weight_norm":
        parametrizations.weight_norm(model[2])
        reason = "parametrized"
    else:
        prune.l1_unstructured(model[2], "weight", 0.5)
        reason = "not a Parameter"
    with pytest.raises(ValueError, match=rf"layer '2'.*{reason}.*skip=\['2'\]"):
        meprop.convert(model, k=2, inplace=inplace)
    assert type(model[2]) is not meprop.MepropLinear  # nothing half-done in place


@pytest.mark.parametrize("how", ["weight_norm", "prune"])
def test_reparametrised_layer_left_dense_by_skip_keeps_training(how):
    model = _mlp()
    if how == "weight_norm":
        parametrizations.weight_norm(model[2])
    else:
        prune.l1_unstructured(model[2], "weight", 0.5)
    converted = meprop.convert(model, k=2, skip=["2"])
    assert meprop.sparsified_layers(converted) == ["0"]
    names = {name for name, _ in converted.named_parameters()}
    assert names == {name for name, _ in model.named_parameters()}
    for _ in range(2):  # a second step would fail on a stale computed weight
        converted(torch.randn(3, 4)).sum().backward()


def test_module_registered_twice_becomes_one_shared_meprop_layer():
    torch.manual_seed(0)
    shared = nn.Linear(5, 5)
    model = nn.Sequential(shared, nn.Tanh(), shared, nn.Tanh(), nn.Linear(5, 2))
    converted = meprop.convert(model, k=2)
    assert converted[0] is converted[2]
    assert isinstance(converted[0], meprop.MepropLinear)
    assert meprop.sparsified_layers(converted) == ["0", "2"]
    x = torch.randn(4, 5)
    torch.testing.assert_close(converted(x), model(x))


def test_shared_module_that_is_also_skipped_stays_dense_everywhere():
    shared = nn.Linear(5, 5)
    model = nn.Sequential(shared, nn.Tanh(), shared, nn.Tanh(), nn.Linear(5, 2))
    converted = meprop.convert(model, k=2, skip=["2"])
    assert type(converted[0]) is nn.Linear and converted[0] is converted[2]
    assert meprop.sparsified_layers(converted) == []


def test_uninitialised_lazy_linear_is_refused_with_the_fix():
    model = nn.Sequential(nn.LazyLinear(6), nn.Tanh(), nn.Linear(6, 6), nn.Linear(6, 2))
    with pytest.raises(ValueError, match=r"layer '0'.*uninitialised LazyLinear.*run one forward"):
        meprop.convert(model, k=2)
    model(torch.randn(3, 4))  # the fix
    assert meprop.sparsified_layers(meprop.convert(model, k=2)) == ["0", "2"]


class KeywordModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.head = nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, *, features, scale=1.0):
        return self.head(torch.tanh(self.body(features))) * scale


def test_example_inputs_as_a_dict_are_keyword_arguments():
    converted = meprop.convert(KeywordModel(), k=2, example_inputs={"features": torch.randn(3, 4)})
    assert meprop.sparsified_layers(converted) == ["body"]


def test_example_inputs_the_forward_rejects_name_example_inputs():
    with pytest.raises(TypeError, match=r"example_inputs.*model\(\*\*example_inputs\) for a dict"):
        meprop.convert(KeywordModel(), k=2, example_inputs=torch.randn(3, 4))


def test_probe_leaves_the_global_rng_untouched():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.5), nn.Linear(6, 6), nn.Linear(6, 2))
    torch.manual_seed(123)
    meprop.convert(model, k=2, example_inputs=torch.randn(3, 4))
    after_convert = torch.rand(3)
    torch.manual_seed(123)
    torch.randn(3, 4)
    assert torch.equal(after_convert, torch.rand(3))


@pytest.mark.parametrize("register", ["register_forward_hook", "register_full_backward_hook"])
def test_layer_with_module_hooks_is_refused_rather_than_losing_them(register):
    model = _mlp()
    getattr(model[0], register)(lambda *args: None)
    with pytest.raises(ValueError, match=r"layer '0'.*module hooks.*skip=\['0'\]"):
        meprop.convert(model, k=2)
