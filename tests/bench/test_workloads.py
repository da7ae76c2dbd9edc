"""The measured operations do what their names say, for dense and meProp alike."""

import pytest
import torch

from meprop.lab.plan.cases import Case
from meprop.lab.ops.build import Unsupported, build, build_model, estimate_bytes
from meprop.nn import MepropLinear


def _case(**kw):
    args = dict(workload="linear", measurement="linear_backward", hidden=32, k=4, batch=8,
                mode="unified", threads=1)
    args.update(kw)
    return Case(**args)


def test_models_match_and_meprop_converts_hidden_layers_only():
    case = _case(workload="mlp", in_features=16, layers=2)
    dense, meprop = build_model(case, "dense"), build_model(case, "meprop")
    kinds = [type(m).__name__ for m in meprop if isinstance(m, torch.nn.Linear)]
    assert kinds == ["MepropLinear", "MepropLinear", "Linear"]
    assert all(m.sparse_grad and m.k == 4 for m in meprop if isinstance(m, MepropLinear))
    for a, b in zip(dense.parameters(), meprop.parameters()):
        assert torch.equal(a, b)  # seeded: the same weights
    single = build_model(_case(), "meprop")
    assert isinstance(single, MepropLinear)
    with pytest.raises(ValueError, match="variant"):
        build_model(_case(), "sparse")


@pytest.mark.parametrize("measurement", ["linear_backward", "overall_backward"])
def test_backward_accumulates_k_rows_for_meprop_and_all_rows_for_dense(measurement):
    case = _case(measurement=measurement)
    for variant, rows in (("dense", 32), ("meprop", 4)):
        fn = build(case, variant)
        weight = fn.model.weight
        assert weight.grad is not None and not weight.grad.any()  # preallocated zeros
        buffer = weight.grad
        fn()
        assert weight.grad is buffer  # accumulated in place, same buffer
        changed = weight.grad.abs().sum(1).ne(0).sum().item()
        assert changed == rows
        first = weight.grad.clone()
        fn()
        assert torch.allclose(weight.grad, 2 * first)  # the same backward again, accumulated


def test_linear_backward_includes_grad_input():
    for variant in ("dense", "meprop"):
        fn = build(_case(), variant)
        (leaf,) = fn.inputs
        assert leaf.shape == (8, 32) and not leaf.grad.any()
        fn()
        assert leaf.grad.abs().sum() > 0
    mlp = build(_case(workload="mlp", in_features=16), "meprop")
    assert [tuple(t.shape) for t in mlp.inputs] == [(8, 16), (8, 32), (8, 32)]


def test_forward_and_train_step_run_and_train_step_updates():
    case = _case(measurement="train_step", workload="mlp", in_features=16)
    for variant in ("dense", "meprop"):
        fn = build(case, variant)
        model = fn.model
        before = [p.detach().clone() for p in model.parameters()]
        fn()
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    out = build(_case(measurement="forward"), "meprop")()
    assert out is None  # the callable returns nothing (the graph is dropped)


def test_cuda_absent_is_unsupported():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(Unsupported, match="cuda not available"):
        build(_case(device="cuda"), "dense")
    assert issubclass(Unsupported, NotImplementedError)


def test_too_large_is_unsupported():
    huge = _case(hidden=2**20, k=1, batch=2**16)
    assert estimate_bytes(huge) > 2**40
    with pytest.raises(Unsupported, match="out of memory: needs about"):
        build(huge, "dense")
