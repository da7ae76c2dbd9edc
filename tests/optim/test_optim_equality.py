"""meprop.optim against torch.optim (exact mode) and SparseAdam / row-wise references (lazy mode), float64."""

from __future__ import annotations

import pytest
import torch

import meprop
from optim_helpers import (
    RowReference,
    assert_same_params,
    batches,
    converted_twins,
    loss_of,
    meprop_weights,
    other_params,
    touched_rows,
    train,
)

MODES = ["per_example", "unified"]

EXACT_CASES = [
    ("Adam", dict(lr=1e-2)),
    ("Adam", dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.1)),
    ("Adam", dict(lr=1e-2, fused=True)),  # torch's fastest Adam: one kernel for all parameters
    ("AdamW", dict(lr=1e-2, weight_decay=0.1, fused=True)),
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.5, dampening=0.3, maximize=True)),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sparse_grad", [False, True])
@pytest.mark.parametrize("name, kwargs", EXACT_CASES, ids=lambda v: str(v))
def test_exact_mode_equals_torch_optim(mode, sparse_grad, name, kwargs):
    ours, theirs = converted_twins(2, mode=mode, sparse_grad=sparse_grad)
    for module in theirs.modules():  # torch.optim needs dense gradients
        if isinstance(module, meprop.MepropLinear):
            module.sparse_grad = False
    data = batches(5)
    train(ours, getattr(meprop.optim, name)(ours.parameters(), **kwargs), data)
    train(theirs, getattr(torch.optim, name)(theirs.parameters(), **kwargs), data)
    assert_same_params(ours, theirs)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("maximize, fused", [(False, False), (True, False), (False, True)])
def test_lazy_adam_equals_sparse_adam_plus_adam(mode, maximize, fused, adam_rows_path):
    ours, theirs = converted_twins(2, mode=mode)
    for module in theirs.modules():
        if isinstance(module, meprop.MepropLinear):
            module.sparse_grad = True  # SparseAdam needs COO gradients
    data = batches(6)
    opt = meprop.optim.Adam(ours.parameters(), lr=1e-2, lazy=True, maximize=maximize, fused=fused)
    train(ours, opt, data)
    reference = [
        torch.optim.SparseAdam(meprop_weights(theirs), lr=1e-2, maximize=maximize),
        torch.optim.Adam(other_params(theirs), lr=1e-2, maximize=maximize, fused=fused),
    ]
    train(theirs, reference, data)
    assert_same_params(ours, theirs, rtol=1e-12, atol=1e-14)


ADAM_LAZY_CASES = [
    ("Adam", dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6)),
    ("Adam", dict(lr=1e-2, weight_decay=0.1)),
    ("Adam", dict(lr=1e-2, amsgrad=True, maximize=True)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.1)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
]
SGD_LAZY_CASES = [
    dict(lr=0.1),
    dict(lr=0.1, weight_decay=0.05),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    dict(lr=0.1, momentum=0.7, dampening=0.2, maximize=True),
]


def _check_lazy_against_rows(mode, optimizer, reference_update):
    """Step a converted model; replay each meProp weight's update with the row-wise reference."""
    (model,) = converted_twins(1, mode=mode)
    weights = meprop_weights(model)
    refs = {id(w): (w.detach().clone(), RowReference(w)) for w in weights}
    for x, y in batches(5):
        optimizer(model).zero_grad()
        loss_of(model, x, y).backward()
        for w in weights:
            assert w.grad.is_sparse, "a lazy optimizer gets row-sparse meProp gradients"
            expected, ref = refs[id(w)]
            reference_update(ref, expected, w.grad.to_dense(), touched_rows(w.grad))
        optimizer(model).step()
        for w in weights:
            torch.testing.assert_close(w.detach(), refs[id(w)][0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name, kwargs", ADAM_LAZY_CASES, ids=lambda v: str(v))
def test_lazy_adam_family_matches_row_reference(mode, name, kwargs, adam_rows_path):
    holder = {}

    def optimizer(model):
        if "opt" not in holder:
            holder["opt"] = getattr(meprop.optim, name)(model.parameters(), lazy=True, **kwargs)
        return holder["opt"]

    defaults = dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01 if name == "AdamW" else 0.0)
    settings = {**defaults, **kwargs}

    def update(ref, param, grad, rows):
        ref.adam(param, grad, rows, lr=settings["lr"], betas=settings["betas"], eps=settings["eps"],
                 weight_decay=settings["weight_decay"], decoupled=name == "AdamW",
                 amsgrad=settings.get("amsgrad", False), maximize=settings.get("maximize", False))

    _check_lazy_against_rows(mode, optimizer, update)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kwargs", SGD_LAZY_CASES, ids=str)
def test_lazy_sgd_matches_row_reference(mode, kwargs):
    holder = {}

    def optimizer(model):
        if "opt" not in holder:
            holder["opt"] = meprop.optim.SGD(model.parameters(), lazy=True, **kwargs)
        return holder["opt"]

    def update(ref, param, grad, rows):
        ref.sgd(param, grad, rows, **kwargs)

    _check_lazy_against_rows(mode, optimizer, update)


def test_lazy_sgd_without_momentum_equals_torch_sgd_on_sparse_gradients():
    ours, theirs = converted_twins(2)
    for module in theirs.modules():
        if isinstance(module, meprop.MepropLinear):
            module.sparse_grad = True
    data = batches(4)
    train(ours, meprop.optim.SGD(ours.parameters(), lr=0.1, lazy=True), data)
    train(theirs, torch.optim.SGD(theirs.parameters(), lr=0.1), data)
    assert_same_params(ours, theirs, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", ["Adam", "AdamW", "SGD"])
def test_lazy_leaves_untouched_rows_and_their_state_alone(name):
    (model,) = converted_twins(1, k=1)
    kwargs = dict(lr=0.1, momentum=0.9) if name == "SGD" else dict(lr=0.1)
    opt = getattr(meprop.optim, name)(model.parameters(), lazy=True, weight_decay=0.1, **kwargs)
    for x, y in batches(3, batch=1):  # one example, k=1: one row per meProp layer and step
        before = {id(w): w.detach().clone() for w in meprop_weights(model)}
        state_before = {
            id(w): {key: v.clone() for key, v in opt.state[w].items() if torch.is_tensor(v) and v.dim() == 2}
            for w in meprop_weights(model)
        }
        opt.zero_grad()
        loss_of(model, x, y).backward()
        rows = {id(w): touched_rows(w.grad) for w in meprop_weights(model)}
        opt.step()
        for w in meprop_weights(model):
            assert len(rows[id(w)]) == 1
            untouched = [r for r in range(w.shape[0]) if r not in rows[id(w)]]
            assert torch.equal(w.detach()[untouched], before[id(w)][untouched])
            assert not torch.equal(w.detach()[rows[id(w)]], before[id(w)][rows[id(w)]])
            for key, old in state_before[id(w)].items():
                assert torch.equal(opt.state[w][key][untouched], old[untouched]), key


def test_param_groups_choose_lazy_per_group():
    (model,) = converted_twins(1)
    first, second = meprop_weights(model)
    opt = meprop.optim.Adam(
        [{"params": [first], "lazy": True}, {"params": [second] + other_params(model)}], lr=1e-2
    )
    x, y = batches(1)[0]
    loss_of(model, x, y).backward()
    assert first.grad.is_sparse and not second.grad.is_sparse
    opt.step()
    assert [g["lazy"] for g in opt.param_groups] == [True, False]


def test_lr_scheduler_drives_the_lazy_update():
    ours, theirs = converted_twins(2)
    for module in theirs.modules():
        if isinstance(module, meprop.MepropLinear):
            module.sparse_grad = True
    opt = meprop.optim.Adam(ours.parameters(), lr=0.1, lazy=True)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    ref = [torch.optim.SparseAdam(meprop_weights(theirs), lr=0.1),
           torch.optim.Adam(other_params(theirs), lr=0.1)]
    ref_sched = [torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5) for o in ref]
    for x, y in batches(4):
        train(ours, opt, [(x, y)])
        train(theirs, ref, [(x, y)])
        sched.step()
        for s in ref_sched:
            s.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**4)
    assert_same_params(ours, theirs, rtol=1e-12, atol=1e-14)
