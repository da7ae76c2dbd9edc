"""The tools around a training loop, with a lazy meprop.optim optimizer: clip, autocast, compile,
gradient accumulation, state dicts, zero_grad, and the errors for what cannot work."""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
import torch.nn as nn

import meprop
from optim_helpers import (
    assert_same_params,
    batches,
    converted_twins,
    loss_of,
    meprop_weights,
    mlp,
    other_params,
    train,
)


def _sparse_twin(model):
    for module in model.modules():
        if isinstance(module, meprop.MepropLinear):
            module.sparse_grad = True
    return model


@pytest.mark.parametrize("foreach", [None, False, True])
def test_clip_grad_norm_on_row_sparse_gradients_equals_dense(foreach):
    lazy_model, dense_model = converted_twins(2)
    opt = meprop.optim.Adam(lazy_model.parameters(), lazy=True)  # noqa: F841 (asks for row-sparse gradients while it lives)
    x, y = batches(1)[0]
    for model in (lazy_model, dense_model):
        loss_of(model, x, y).backward()
    assert all(w.grad.is_sparse for w in meprop_weights(lazy_model))
    norms = [nn.utils.clip_grad_norm_(m.parameters(), 0.1, foreach=foreach) for m in (lazy_model, dense_model)]
    torch.testing.assert_close(norms[0], norms[1])
    assert norms[0] > 0.1  # so the gradients really were scaled
    for p, q in zip(lazy_model.parameters(), dense_model.parameters()):
        torch.testing.assert_close(p.grad.to_dense(), q.grad)


@pytest.mark.parametrize("foreach", [None, False, True])
def test_clip_grad_value_on_row_sparse_gradients_equals_dense(foreach):
    lazy_model, dense_model = converted_twins(2)
    opt = meprop.optim.SGD(lazy_model.parameters(), lr=0.1, lazy=True)  # noqa: F841 (its request lives with it)
    x, y = batches(1)[0]
    for model in (lazy_model, dense_model):
        loss_of(model, x, y).backward()
        loss_of(model, x, y).backward()  # accumulated: the COO gradient is uncoalesced
    for model in (lazy_model, dense_model):
        nn.utils.clip_grad_value_(model.parameters(), 0.01, foreach=foreach)
    for p, q in zip(lazy_model.parameters(), dense_model.parameters()):
        torch.testing.assert_close(p.grad.to_dense(), q.grad)
        assert q.grad.abs().max() <= 0.01


def test_sparse_norm_orders_and_refusals():
    dense = torch.zeros(6, 3, dtype=torch.float64)
    dense[[1, 4]] = torch.randn(2, 3, dtype=torch.float64)
    sparse = dense.to_sparse(1)
    for order in (1, 2, 3, float("inf"), 0, -1, float("-inf")):
        torch.testing.assert_close(
            torch.linalg.vector_norm(sparse, order), torch.linalg.vector_norm(dense, order)
        )
    with pytest.raises(NotImplementedError, match="dim=None"):
        torch.linalg.vector_norm(sparse, 2, dim=(1,))
    with pytest.raises(NotImplementedError, match="implicit zeros"):
        sparse.clone().clamp_(min=0.5)


@pytest.mark.parametrize("mode", ["per_example", "unified"])
@pytest.mark.parametrize("lazy", [True, False])
def test_autocast_bf16_trains_and_returns_float32_gradients(mode, lazy):
    model, reference = converted_twins(2, mode=mode)
    model, reference = model.float(), reference.float()
    opt = meprop.optim.Adam(model.parameters(), lr=1e-2, lazy=lazy)
    x, y = batches(1, dtype=torch.float32)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_of(model, x, y)
    loss.backward()
    for w in meprop_weights(model):
        assert w.grad.dtype == torch.float32 and w.grad.is_sparse == lazy
    # The same computation by hand: bf16 operands, meProp backward, float32 gradients.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_of(reference, x, y).backward()
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad.to_dense(), q.grad.to_dense())
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_autocast_with_sparse_grad_true_and_preallocated_grad():
    layer = meprop.MepropLinear(8, 16, k=3, sparse_grad=True)
    layer.weight.grad = torch.zeros_like(layer.weight)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(torch.randn(4, 8))
    out.float().sum().backward()
    assert layer.weight.grad.layout == torch.strided and layer.weight.grad.dtype == torch.float32
    assert 0 < int((layer.weight.grad.abs().sum(1) != 0).sum()) <= 12


@pytest.mark.slow
@pytest.mark.parametrize("fullgraph", [False, True])
def test_compiled_model_trains_like_eager(fullgraph):
    eager, compiled = converted_twins(2)
    data = batches(3)
    train(eager, meprop.optim.Adam(eager.parameters(), lr=1e-2, lazy=True), data)
    opt = meprop.optim.Adam(compiled.parameters(), lr=1e-2, lazy=True)
    train(torch.compile(compiled, fullgraph=fullgraph), opt, data)
    assert all(w.grad.is_sparse for w in meprop_weights(compiled))
    assert_same_params(eager, compiled, rtol=1e-12, atol=1e-14)


def test_gradient_accumulation_sums_before_one_lazy_step():
    ours, theirs = converted_twins(2)
    _sparse_twin(theirs)
    opt = meprop.optim.Adam(ours.parameters(), lr=1e-2, lazy=True)
    ref = [torch.optim.SparseAdam(meprop_weights(theirs), lr=1e-2),
           torch.optim.Adam(other_params(theirs), lr=1e-2)]
    micro = batches(3)
    for model, opts in ((ours, [opt]), (theirs, ref)):
        for o in opts:
            o.zero_grad()
        for x, y in micro:
            (loss_of(model, x, y) / len(micro)).backward()
        for o in opts:
            o.step()
    assert_same_params(ours, theirs, rtol=1e-12, atol=1e-14)


def test_zero_grad_frees_row_sparse_gradients_and_set_to_none_false_empties_them():
    (model,) = converted_twins(1)
    opt = meprop.optim.Adam(model.parameters(), lazy=True)
    x, y = batches(1)[0]
    loss_of(model, x, y).backward()
    rows = [w.grad._nnz() for w in meprop_weights(model)]
    assert all(0 < r < w.shape[0] for r, w in zip(rows, meprop_weights(model)))
    opt.zero_grad()
    assert all(w.grad is None for w in meprop_weights(model))
    loss_of(model, x, y).backward()
    opt.zero_grad(set_to_none=False)
    assert all(w.grad.is_sparse and not w.grad.to_dense().any() for w in meprop_weights(model))


def test_optimizer_state_dict_round_trip_continues_identically():
    a, b = converted_twins(2)
    opt_a = meprop.optim.Adam(a.parameters(), lr=1e-2, lazy=True, amsgrad=True)
    data = batches(6)
    train(a, opt_a, data[:3])
    buffer = io.BytesIO()
    torch.save({"model": a.state_dict(), "opt": opt_a.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    b.load_state_dict(saved["model"])
    opt_b = meprop.optim.Adam(b.parameters(), lr=1.0, lazy=False)  # both overwritten by the load
    opt_b.load_state_dict(saved["opt"])
    assert opt_b.param_groups[0]["lazy"] is True and opt_b.param_groups[0]["lr"] == 1e-2
    train(a, opt_a, data[3:])
    train(b, opt_b, data[3:])
    assert_same_params(a, b, rtol=0, atol=0)


def test_lazy_state_dict_loads_into_torch_adam():
    (model,) = converted_twins(1)
    opt = meprop.optim.Adam(model.parameters(), lr=1e-2, lazy=True)
    train(model, opt, batches(2))
    plain = torch.optim.Adam(model.parameters(), lr=1e-2)
    plain.load_state_dict(opt.state_dict())
    for p in model.parameters():
        assert plain.state[p]["exp_avg"].shape == p.shape
        assert float(plain.state[p]["step"]) == 2.0


@pytest.mark.parametrize("name, kwargs", [
    ("Adam", {"amsgrad": True}), ("AdamW", {"weight_decay": 0.1}), ("SGD", {"momentum": 0.9}),
])
def test_a_torch_optim_state_dict_loads_into_a_lazy_optimizer(name, kwargs):
    """A checkpoint of torch.optim (no ``lazy`` in its groups) takes the lazy optimizer's own
    default, and the next steps are those of a lazy optimizer loaded with ``lazy=True`` spelled out."""
    a, b = converted_twins(2)
    data = batches(4)
    plain = getattr(torch.optim, name)(a.parameters(), lr=1e-2, **kwargs)
    train(a, plain, data[:2])
    saved = copy.deepcopy(plain.state_dict())
    b.load_state_dict(a.state_dict())
    loaded = getattr(meprop.optim, name)(a.parameters(), lr=1.0, lazy=True)
    loaded.load_state_dict(saved)
    assert all(group["lazy"] is True for group in loaded.param_groups)
    spelled = copy.deepcopy(saved)
    for group in spelled["param_groups"]:
        group["lazy"] = True
    reference = getattr(meprop.optim, name)(b.parameters(), lr=1.0, lazy=False)
    reference.load_state_dict(spelled)
    train(a, loaded, data[2:])
    train(b, reference, data[2:])
    assert_same_params(a, b, rtol=0, atol=0)
    assert copy.deepcopy(loaded).param_groups[0]["lazy"] is True


def test_gradients_are_left_untouched_by_the_step():
    (model,) = converted_twins(1)
    opt = meprop.optim.Adam(model.parameters(), lr=1e-2, lazy=True, weight_decay=0.1, maximize=True)
    x, y = batches(1)[0]
    loss_of(model, x, y).backward()
    grads = [p.grad.to_dense().clone() for p in model.parameters()]
    opt.step()
    for p, g in zip(model.parameters(), grads):
        assert torch.equal(p.grad.to_dense(), g)


def test_lazy_without_meprop_layers_warns_once():
    model = mlp()
    opt = meprop.optim.Adam(model.parameters(), lazy=True)
    x, y = batches(1)[0]
    loss_of(model, x, y).backward()
    with pytest.warns(UserWarning, match="none of the optimized parameters"):
        opt.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()


def test_converted_model_with_lazy_optimizer_does_not_warn():
    (model,) = converted_twins(1)
    opt = meprop.optim.Adam(copy.copy(list(model.parameters())), lazy=True)
    x, y = batches(1)[0]
    loss_of(model, x, y).backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()


def test_sparse_gradient_of_a_non_meprop_parameter_names_it():
    model = nn.ModuleDict({"emb": nn.Embedding(10, 4, sparse=True), "out": nn.Linear(4, 2)})
    lazy = meprop.optim.Adam(model.named_parameters(), lazy=True)
    model["out"](model["emb"](torch.tensor([1, 3]))).sum().backward()
    with pytest.raises(RuntimeError, match=r"'emb.weight'.*not a meProp layer's weight.*lazy=False"):
        lazy.step()
    exact = meprop.optim.Adam(model.parameters(), lazy=False)
    reference = torch.optim.Adam([torch.nn.Parameter(model["emb"].weight.detach().clone())])
    reference.param_groups[0]["params"][0].grad = model["emb"].weight.grad.to_dense()
    exact.step()  # exact mode: the dense equivalent, as torch.optim.Adam on the dense gradient
    reference.step()
    torch.testing.assert_close(model["emb"].weight.detach(), reference.param_groups[0]["params"][0].detach())


def test_unsupported_gradient_layout_names_the_parameter():
    (model,) = converted_twins(1)
    opt = meprop.optim.Adam(model.named_parameters(), lazy=True)
    weight = model[2].weight
    weight.grad = torch.ones_like(weight).to_sparse()  # element-sparse (sparse_dim=2), not row-sparse
    with pytest.raises(RuntimeError, match=r"'2.weight'.*sparse_dim=2"):
        opt.step()


def test_bad_lazy_values_are_refused():
    params = list(mlp().parameters())
    with pytest.raises(TypeError, match="lazy must be a bool"):
        meprop.optim.Adam(params, lazy="yes")
    with pytest.raises(TypeError, match="lazy must be a bool"):
        meprop.optim.SGD([{"params": params, "lazy": 1}], lr=0.1)
    with pytest.raises(ValueError, match="differentiable"):
        meprop.optim.Adam(params, lazy=True, differentiable=True)


def test_drop_in_constructor_arguments_match_torch():
    params = list(mlp().parameters())
    ours = meprop.optim.AdamW(params, 1e-3, (0.8, 0.9), 1e-6, 0.05, True, maximize=True)
    theirs = torch.optim.AdamW(params, 1e-3, (0.8, 0.9), 1e-6, 0.05, True, maximize=True)
    ours_group = {k: v for k, v in ours.param_groups[0].items() if k != "lazy"}
    assert ours_group == theirs.param_groups[0]
    assert isinstance(ours, torch.optim.AdamW)
