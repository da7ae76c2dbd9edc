"""The measured formulation choice (meprop.tuning, meprop.dispatch): gradients do not depend
on which formulation runs, and the per-machine disk cache is written, reused, ignored when
corrupt or foreign."""

from __future__ import annotations

import json

import pytest
import torch

from meprop import dispatch, kernels, tuning
from meprop.functional import masked_dense_linear_backward, meprop_linear, run_formulation
from meprop.selection import select


@pytest.fixture
def tuned(cold_tuning_cache):
    """Tuning on, with an empty cache folder of its own (yielded) and no choice in memory."""
    return cold_tuning_cache


def _operands(batch=12, n=20, m=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, m, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(n, m, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(n, generator=gen, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(batch, n, generator=gen, dtype=torch.float64)
    return x, w, b, dy


def _reference(x, w, dy, k, bias_grad):
    idx = select(dy, k, "per_example")
    mask = torch.zeros_like(dy, dtype=torch.bool).scatter_(1, idx, True)
    return masked_dense_linear_backward(x.detach(), w.detach(), dy, mask, bias_grad=bias_grad)


def _call(x, w, dy, k, layout="dense", bias_grad="sparse"):
    return dispatch.LinearBackward(dy, x.detach(), w.detach(), w, k, "per_example", bias_grad, layout, None,
                                   True, True, True)


@pytest.mark.parametrize("bias_grad", ["sparse", "dense"])
@pytest.mark.parametrize("k", [1, 5, 19])
def test_every_formulation_gives_the_reference_gradients(meprop_path, k, bias_grad):
    x, w, _, dy = _operands()
    want = _reference(x, w, dy, k, bias_grad)
    names = dispatch.candidates(kernels.supports(dy, x, w)) + ("auto",) * kernels.supports(dy, x, w)
    for name in names:
        got = run_formulation(_call(x, w, dy, k, bias_grad=bias_grad), name)
        for g, r in zip(got, want):
            torch.testing.assert_close(g, r, msg=lambda text, name=name: f"{name}: {text}")


@pytest.mark.parametrize("layout", ["row_sparse", "dense_tracked"])
def test_every_formulation_gives_the_same_row_sparse_gradient(meprop_path, layout):
    x, w, _, dy = _operands(seed=1)
    want = _reference(x, w, dy, 4, "sparse")[1]
    for name in dispatch.candidates(kernels.supports(dy, x, w)):
        grad = run_formulation(_call(x, w, dy, 4, layout=layout), name)[1]
        torch.testing.assert_close(grad.to_dense(), want, msg=lambda text, name=name: f"{name}: {text}")


@pytest.mark.parametrize("tuning_on", [False, True])
def test_layer_gradients_equal_the_reference_with_tuning_on_and_off(meprop_path, tuning_on, tuned, monkeypatch):
    monkeypatch.setenv("MEPROP_TUNING", "on" if tuning_on else "off")
    x, w, b, dy = _operands(batch=24, n=30, m=9, seed=2)
    want = _reference(x, w, dy, 6, "sparse")
    for _ in range(2):  # the first backward measures (tuning on), the second reuses the choice
        for t in (x, w, b):
            t.grad = None
        meprop_linear(x, w, b, k=6).backward(dy)
        for got, ref in zip((x.grad, w.grad, b.grad), want):
            torch.testing.assert_close(got, ref)
    written = list(tuned.glob("*.json"))
    assert bool(written) == tuning_on


def test_the_cache_is_written_and_reused_by_a_later_process(tuned, monkeypatch):
    key = "cpu|float64|t1|b16|n20|m7|k5|dense|gi"
    times = {"gather": 3.0, "masked_gemm": 1.0, "masked_dense": 2.0, "pytorch": 4.0}
    monkeypatch.setattr(tuning, "measure", lambda names, run, sync=None: {n: times[n] for n in names})
    assert tuning.pick(key, tuple(times), lambda name: None) == "masked_gemm"
    data = json.loads(tuning.cache_path().read_text())
    assert data["fingerprint"] == tuning.fingerprint()
    assert data["entries"][key]["formulation"] == "masked_gemm"
    tuning.clear_memory()  # as a new process: only the disk knows
    entry = tuning.lookup(key)
    assert entry["formulation"] == "masked_gemm" and entry["source"] == "cached"
    assert tuning.cache_path().parent == tuned


def test_a_corrupt_cache_is_ignored_with_a_warning_and_rebuilt(tuned, monkeypatch):
    path = tuning.cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    with pytest.warns(tuning.TuningCacheWarning, match="rebuilt"):
        assert tuning.lookup("cpu|float32|t1|b1|n2|m2|k1|dense|gi") is None
    monkeypatch.setattr(tuning, "measure", lambda names, run, sync=None: {n: float(i) for i, n in enumerate(names)})
    tuning.pick("cpu|float32|t1|b1|n2|m2|k1|dense|gi", ("pytorch", "masked_dense"), lambda name: None)
    assert json.loads(path.read_text())["entries"]["cpu|float32|t1|b1|n2|m2|k1|dense|gi"]["formulation"] == "pytorch"


def test_another_machines_entry_is_not_used(tuned):
    key = "cpu|float32|t1|b1|n2|m2|k1|dense|gi"
    path = tuning.cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    foreign = {"format": 1, "fingerprint": "0123456789abcdef", "entries": {key: {"formulation": "gather"}}}
    path.write_text(json.dumps(foreign))
    with pytest.warns(tuning.TuningCacheWarning, match="machine"):
        assert tuning.lookup(key) is None
    assert tuning.cache_path().name == f"{tuning.fingerprint()}.json"


def test_tuning_off_reads_nothing_and_measures_nothing(tuned, monkeypatch):
    monkeypatch.setenv("MEPROP_TUNING", "off")
    monkeypatch.setattr(tuning, "pick", lambda *a, **k: pytest.fail("measured with tuning off"))
    x, w, b, dy = _operands()
    meprop_linear(x, w, b, k=3).backward(dy)
    assert not list(tuned.glob("*.json"))


def test_a_bad_tuning_setting_is_refused(monkeypatch):
    monkeypatch.setenv("MEPROP_TUNING", "sometimes")
    with pytest.raises(ValueError, match="MEPROP_TUNING must be on or off, got 'sometimes'"):
        tuning.enabled()


def test_the_default_cache_is_a_user_cache_outside_the_package(monkeypatch, tmp_path):
    monkeypatch.delenv("MEPROP_TUNING_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert tuning.cache_dir() == tmp_path / "meprop" / "tuning"


def test_measured_choice_feeds_the_compiled_op(tuned, monkeypatch):
    """After a bucket is measured, the forward hands the winner to the compiled op."""
    x, w, b, dy = _operands(batch=16, n=20, m=7, seed=3)
    if not kernels.supports(x, w):
        pytest.skip("meprop kernels not loaded")
    monkeypatch.setattr(tuning, "measure", lambda names, run, sync=None: {
        n: (0.0 if n == "masked_dense" else 1.0) for n in names})
    assert dispatch.linear_forward_formulation(x, w, 5, "per_example", "dense", None) is None  # not measured yet
    meprop_linear(x, w, b, k=5).backward(dy)  # the Python Function measures
    assert kernels.last_formulation() == "masked_dense"
    assert dispatch.linear_forward_formulation(x, w, 5, "per_example", "dense", None) == 5
    before = kernels.formulation_counts().get("masked_dense", 0)
    meprop_linear(x, w, b, k=5).backward(dy)
    assert kernels.formulation_counts()["masked_dense"] == before + 1


def test_the_first_forward_measures_so_its_own_graph_runs_the_winner(tuned, monkeypatch):
    """A graph recorded before its bucket was measured (a retained graph timed many times)
    still runs the measured winner: the forward measures, on a stand-in output gradient from
    a private generator, before recording; the program's random stream is left alone."""
    x, w, b, dy = _operands(batch=16, n=20, m=7, seed=4)
    if not kernels.supports(x, w):
        pytest.skip("meprop kernels not loaded")
    timed = []

    def fake_measure(names, run, sync=None):
        for name in names:
            timed.append(name)
            run(name)  # the probe's backward runs for real
        return {n: (0.0 if n == "masked_gemm" else 1.0) for n in names}

    monkeypatch.setattr(tuning, "measure", fake_measure)
    rng = torch.get_rng_state()
    y = meprop_linear(x, w, b, k=5)
    assert torch.equal(torch.get_rng_state(), rng)
    assert set(timed) == set(dispatch.candidates(True))
    assert "MepropLinearFunction" not in type(y.grad_fn).__name__  # the compiled op recorded the graph
    expected = _reference(x, w, dy, 5, "sparse")
    for _ in range(2):
        x.grad = w.grad = b.grad = None
        y.backward(dy, retain_graph=True)
        assert kernels.last_formulation() == "masked_gemm"
        for got, want in zip((x.grad, w.grad, b.grad), expected):
            torch.testing.assert_close(got, want)
    with torch.no_grad():  # no backward will follow: nothing to measure
        timed.clear()
        meprop_linear(torch.randn(32, 7, dtype=torch.float64), w, b, k=5)
    assert timed == []


def test_a_remembered_forward_decision_follows_a_changed_setting(tuned, monkeypatch):
    """A layer's forward decision is remembered, yet switching the kernels or the tuning off
    between two forwards takes effect at the next one, and a bad value is still refused."""
    x, w, _, _ = _operands(batch=16, n=20, m=7, seed=4)
    if not kernels.supports(x, w):
        pytest.skip("meprop kernels not loaded")
    monkeypatch.setattr(tuning, "measure", lambda names, run, sync=None: {
        n: (0.0 if n == "gather" else 1.0) for n in names})
    meprop_linear(x, w, None, k=5).sum().backward()  # the Python Function measures
    code = dispatch.KERNEL_CODES["gather"]
    assert dispatch.linear_forward_code(x, w, 5, "per_example", "dense", None) == code
    assert dispatch.linear_forward_code(x, w, 5, "per_example", "dense", None) == code  # remembered
    monkeypatch.setenv("MEPROP_TUNING", "off")
    assert dispatch.linear_forward_code(x, w, 5, "per_example", "dense", None) == dispatch.KERNEL_CODES["auto"]
    monkeypatch.setenv("MEPROP_KERNELS", "off")
    assert dispatch.linear_forward_code(x, w, 5, "per_example", "dense", None) is None
    monkeypatch.setenv("MEPROP_KERNELS", "sometimes")
    with pytest.raises(ValueError, match="MEPROP_KERNELS must be"):
        dispatch.linear_forward_code(x, w, 5, "per_example", "dense", None)
