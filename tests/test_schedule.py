"""meprop.schedule: k_at builders, KScheduler on layers, refusals, checkpoint resume, optimizers, compile."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import meprop
from meprop import schedule
from meprop.schedule import KScheduler


def _model(seed=0):
    torch.manual_seed(seed)
    base = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))
    return meprop.convert(base.double(), k=4)


def _batches(count, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(5, 6, generator=gen, dtype=torch.float64), torch.randint(0, 3, (5,), generator=gen))
            for _ in range(count)]


def _train(model, opt, sched, data):
    for x, y in data:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        sched.step()


def test_builders():
    assert [schedule.dense_warmup(3, 5)(s) for s in range(5)] == [None, None, None, 5, 5]
    assert [schedule.linear_ramp(10, 2, 4)(s) for s in range(6)] == [10, 8, 6, 4, 2, 2]
    cosine = [schedule.cosine_ramp(2, 10, 4)(s) for s in range(6)]
    assert cosine[0] == 2 and cosine[2] == 6 and cosine[4:] == [10, 10] and cosine == sorted(cosine)
    stepped = [schedule.linear_ramp(100, 10, 1000, levels=4)(s) for s in range(0, 1200, 7)]
    assert sorted(set(stepped)) == [10, 40, 70, 100] and stepped[-1] == 10
    assert [schedule.interleaved(5, 1, 2)(s) for s in range(6)] == [None, 5, 5, None, 5, 5]
    epochs = schedule.interleaved(5, 1, 1, steps_per_epoch=3)
    assert [epochs(s) for s in range(7)] == [None] * 3 + [5] * 3 + [None]
    chained = schedule.dense_warmup(2, schedule.linear_ramp(9, 3, 2))
    assert [chained(s) for s in range(6)] == [None, None, 9, 6, 3, 3]
    assert "dense_warmup(2" in repr(chained)


@pytest.mark.parametrize("spec, values", [
    ("constant", [7, 7, 7]),
    ("warmup:2", [None, None, 7]),
    ("linear:1:2", [1, 4, 7]),
    ("cosine:1:2:2", [1, 1, 7]),
    ("interleave:1:1", [None, 7, None]),
    ("interleave:1:1:2", [None, None, 7]),
    ("warmup:1,linear:3:1", [None, 3, 7]),
])
def test_parse(spec, values):
    k_at = schedule.parse(spec, 7)
    assert [k_at(s) for s in range(3)] == values


@pytest.mark.parametrize("spec", ["", "ramp:3", "linear:3", "linear:a:3", "constant,warmup:2", "warmup:-1"])
def test_parse_refuses_bad_specs_naming_them(spec):
    with pytest.raises(ValueError) as info:
        schedule.parse(spec, 7)
    assert repr(spec) in str(info.value) or "steps" in str(info.value) or "spec" in str(info.value)


def test_scheduler_sets_every_meprop_layer_and_dense_steps_are_exact():
    model = _model()
    lstm = meprop.MepropLSTM(3, 2, k=2)
    holder = nn.ModuleDict({"mlp": model, "lstm": lstm})
    sched = KScheduler(holder, schedule.dense_warmup(1, 3))
    assert (model[0].k, model[2].k, lstm.k, sched.k) == (16, 12, 8, None)  # dense: each layer's width
    x, y = _batches(1)[0]
    F.cross_entropy(model(x), y).backward()
    reference = copy.deepcopy(model)
    dense = nn.Sequential(*(nn.Linear(m.in_features, m.out_features).double() if isinstance(m, nn.Linear) else m
                            for m in reference))
    dense.load_state_dict(reference.state_dict())
    F.cross_entropy(dense(x), y).backward()
    for mine, want in zip(model.parameters(), dense.parameters()):
        torch.testing.assert_close(mine.grad.to_dense(), want.grad)
    sched.step()
    assert (model[0].k, model[2].k, lstm.k, sched.k) == (3, 3, 3, 3)


@pytest.mark.parametrize("value, exc, words", [
    (2.5, TypeError, ["k_at(2)", "2.5"]),
    (True, TypeError, ["k_at(2)", "True"]),
    (-1, ValueError, ["k_at(2)", "-1"]),
    (0, ValueError, ["k_at(2)", "0"]),
    (13, ValueError, ["k_at(2)", "13", "'2'", "12"]),
])
def test_bad_k_values_are_refused_naming_step_and_value(value, exc, words):
    sched = KScheduler(_model(), lambda step: value if step == 2 else 4)
    sched.step()
    with pytest.raises(exc) as info:
        sched.step()
    for word in words:
        assert word in str(info.value)


def test_constructor_refusals():
    with pytest.raises(ValueError, match="no meProp layer"):
        KScheduler(nn.Linear(2, 2), schedule.constant(1))
    with pytest.raises(TypeError, match="k_at"):
        KScheduler(_model(), 3)
    with pytest.raises(ValueError, match="step"):
        KScheduler(_model(), schedule.constant(2)).load_state_dict({})


@pytest.mark.parametrize("lazy", [False, True])
def test_checkpoint_resumes_at_its_step_and_training_is_identical(lazy):
    k_at = schedule.dense_warmup(2, schedule.linear_ramp(10, 3, 3))
    data = _batches(8)
    model = _model()
    opt = meprop.optim.Adam(model.parameters(), lr=0.01, lazy=lazy)
    _train(model, opt, KScheduler(model, k_at), data)

    first = _model()
    opt1 = meprop.optim.Adam(first.parameters(), lr=0.01, lazy=lazy)
    sched1 = KScheduler(first, k_at)
    _train(first, opt1, sched1, data[:4])
    checkpoint = copy.deepcopy({"model": first.state_dict(), "opt": opt1.state_dict(), "sched": sched1.state_dict()})
    resumed = _model(seed=5)
    resumed.load_state_dict(checkpoint["model"])
    opt2 = meprop.optim.Adam(resumed.parameters(), lr=0.01, lazy=lazy)
    opt2.load_state_dict(checkpoint["opt"])
    sched2 = KScheduler(resumed, k_at)
    sched2.load_state_dict(checkpoint["sched"])
    assert sched2.last_step == 4 and resumed[0].k == k_at(4)
    _train(resumed, opt2, sched2, data[4:])
    for a, b in zip(model.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_lazy_adam_updates_every_row_on_a_dense_step_and_touched_rows_otherwise():
    model = _model()
    opt = meprop.optim.Adam(model.parameters(), lr=0.01, lazy=True)
    sched = KScheduler(model, schedule.interleaved(1, 1, 1))
    (x, y), = _batches(1)
    for dense in (True, False):
        before = model[0].weight.detach().clone()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        grad = model[0].weight.grad
        assert grad.is_sparse  # the lazy optimizer's row-sparse layout, dense step included
        rows = grad.coalesce()._indices()[0]
        opt.step()
        sched.step()
        changed = set((model[0].weight.detach() != before).any(1).nonzero().squeeze(1).tolist())
        assert len(rows) == 16 if dense else len(rows) <= 5
        assert changed <= set(rows.tolist())


@pytest.mark.parametrize("kernels", ["auto", "off"])
def test_compile_recompiles_only_for_a_new_k_and_never_once_k_is_fixed(kernels, monkeypatch):
    """Each distinct k compiles its graphs once (how many frames a k needs depends on the path:
    the compiled op or the Python autograd Function); a k seen before and a fixed k add none."""
    from torch._dynamo.utils import counters

    monkeypatch.setenv("MEPROP_KERNELS", kernels)
    torch._dynamo.reset()
    counters.clear()
    model = meprop.convert(nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)), k=4)
    k_at = schedule.dense_warmup(1, schedule.linear_ramp(8, 2, 6, levels=3))
    sched = KScheduler(model, k_at)
    compiled = torch.compile(model, backend="eager")
    x = torch.randn(5, 6)

    def run(steps):
        seen = []
        for _ in range(steps):
            seen.append(sched.k)
            compiled(x).sum().backward()
            sched.step()
        return seen
    first = run(8)
    assert set(first) == {None, 8, 5, 2} and first[-1] == 2
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 4
    assert run(6) == [2] * 6 and counters["stats"]["unique_graphs"] == graphs  # k fixed: no recompile
    sched.load_state_dict({"step": 1})  # back to k = 8, seen before
    assert run(3)[0] == 8 and counters["stats"]["unique_graphs"] == graphs
    assert model[0].weight.grad is not None