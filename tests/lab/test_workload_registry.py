"""The workload registry: each workload's width, defaults and builder in one object."""

from __future__ import annotations

import pytest

from meprop.lab.plan.cases import Case, grid
from meprop.lab.cli.bench import select_cases
from meprop.lab.cli import build_parser
from meprop.lab.workloads import REGISTRY, WORKLOAD_NAMES, k_width, named_in, workload


def test_every_workload_is_registered_once_with_its_width():
    assert WORKLOAD_NAMES == ("linear", "mlp", "lstm", "transformer", "model")
    assert [k_width(name, 500) for name in WORKLOAD_NAMES] == [500, 500, 2000, 500, 500]
    assert workload("lstm").ideal(500, 5) == 400
    with pytest.raises(ValueError, match="workload must be one of .*got 'cnn'"):
        workload("cnn")


def test_cases_take_their_defaults_and_key_from_the_registry():
    lstm = Case("lstm", "linear_backward", 500, 5, 1, mode="per_example", layers=3)
    assert (lstm.in_features, lstm.layers, lstm.out_features) == (100, 1, 2000)
    mlp = Case("mlp", "overall_backward", 500, 20, 10, layers=3)
    assert (mlp.in_features, mlp.layers) == (784, 3)
    user = Case("model", "train_step", 64, 4, 1, model="pkg.mod:make")
    assert user.key.startswith("model[pkg.mod:make]/")
    with pytest.raises(ValueError, match="model .* is given exactly for workload 'model'"):
        Case("linear", "forward", 64, 4, 1, model="pkg.mod:make")
    # a ratio counts against the width: 1% of the LSTM's 2000 gate entries is k=20
    (case,) = grid(workload=("lstm",), hidden=(500,), k_ratio=(0.01,), batch=(1,), mode=("per_example",))
    assert case.k == 20


def test_profile_filters_count_k_ratios_against_the_workload_width():
    args = build_parser().parse_args(["bench", "--profile", "paper", "--workload", "lstm", "--k-ratio", "0.01"])
    cases, _ = select_cases(args)
    assert cases and {c.k for c in cases} == {20}


def test_builders_are_found_through_the_registry():
    for spec in REGISTRY.values():
        module, function = spec.builder.split(":")
        assert callable(getattr(__import__(module, fromlist=[function]), function)), spec.name


def test_a_benchmark_name_names_its_workload():
    assert named_in("test_mlp_overall_backward[500-0.04]") == "mlp"
    assert named_in("test_lstm_step") == "lstm"
    assert named_in("test_forward[1024]") == "linear"
    assert named_in("my_model_case") == "linear"  # a user's model is never guessed from a name


def test_each_workload_carries_the_shape_the_headline_quotes_it_at():
    shapes = {name: spec.typical_shape for name, spec in REGISTRY.items()}
    assert (shapes["mlp"]["hidden"], shapes["mlp"]["batch"], shapes["mlp"]["k_ratio"]) == (500, 10, 0.04)
    assert (shapes["lstm"]["hidden"], shapes["lstm"]["batch"], shapes["lstm"]["k_ratio"]) == (500, 1, 0.0025)
    assert (shapes["linear"]["hidden"], shapes["linear"]["batch"], shapes["linear"]["k_ratio"]) == (4096, 64, 0.01)
    assert shapes["model"]["hidden"] is None  # a user's model: its own width, batch 64, k/n 4%
    assert all(isinstance(shape["source"], str) and shape["source"] for shape in shapes.values())
