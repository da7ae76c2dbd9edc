"""mode="sampled" / "sampled_unified": exact probabilities, unbiased gradients, layouts, transforms."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import meprop
from meprop import kernels
from meprop._impl import sampled_backward
from meprop.sampling import sampled_scale, sampling_probabilities

N_IN, N_OUT, BATCH, K = 9, 24, 6, 5
SAMPLED = ["sampled", "sampled_unified"]


def _reference_probabilities(scores: torch.Tensor, k: int) -> torch.Tensor:
    """float64 p = min(1, c a) with sum p = k, c found by bisection (independent of the library's solve)."""
    out = []
    for a in scores.double():
        if int((a > 0).sum()) <= k:
            out.append((a > 0).double())
            continue
        lo, hi = 0.0, 1.0
        while torch.clamp(hi * a, max=1).sum() < k:
            hi *= 2
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if torch.clamp(mid * a, max=1).sum() < k else (lo, mid)
        out.append(torch.clamp(hi * a, max=1))
    return torch.stack(out)


def _operands(seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, N_IN, generator=gen, dtype=dtype)
    w = torch.randn(N_OUT, N_IN, generator=gen, dtype=dtype)
    b = torch.randn(N_OUT, generator=gen, dtype=dtype)
    dy = torch.randn(BATCH, N_OUT, generator=gen, dtype=dtype) * torch.rand(N_OUT, generator=gen, dtype=dtype) * 3
    return x, w, b, dy


def _grads(x, w, b, dy, **kwargs):
    x, w, b = (t.clone().requires_grad_() for t in (x, w, b))
    meprop.meprop_linear(x, w, b, **kwargs).backward(dy)
    return x.grad, w.grad.to_dense(), b.grad


@pytest.fixture(params=["kernel", "pytorch"])
def path(request, monkeypatch):
    if request.param == "pytorch":
        monkeypatch.setattr(sampled_backward.kernels, "supports", lambda *tensors: False)
    elif not (kernels.enabled() and kernels.load()):
        pytest.skip("compiled kernels unavailable")
    return request.param


@pytest.mark.parametrize("k", [1, 3, 7, 23])
def test_probabilities_are_exact(k):
    gen = torch.Generator().manual_seed(k)
    scores = torch.rand(7, N_OUT, generator=gen, dtype=torch.float64) ** 4
    scores[1, :5] = 50.0  # saturated entries
    scores[2, 3:] = 0.0  # at most k positive
    scores[3] = 1.0  # all tied
    scores[4, 0] = 1e6  # one dominating entry
    p = sampling_probabilities(scores, k)
    torch.testing.assert_close(p, _reference_probabilities(scores, k), rtol=1e-9, atol=1e-12)
    expected_sum = torch.clamp((scores > 0).sum(1), max=k).double()
    torch.testing.assert_close(p.sum(1), expected_sum)
    assert ((p >= 0) & (p <= 1)).all() and (p[scores == 0] == 0).all()


def test_nonfinite_scores_are_always_kept_outside_the_budget():
    scores = torch.rand(2, 10, dtype=torch.float64)
    scores[0, 2], scores[1, 5] = float("nan"), float("inf")
    p = sampling_probabilities(scores, 3)
    assert p[0, 2] == 1 and p[1, 5] == 1
    torch.testing.assert_close(p.sum(1), torch.full((2,), 4.0, dtype=torch.float64))


@pytest.mark.parametrize("mode", SAMPLED)
def test_expected_count_is_k(mode):
    dy = _operands()[3]
    gen = torch.Generator().manual_seed(1)
    draws = 4000
    counts = torch.stack([(sampled_scale(dy, K, mode, gen) != 0).sum(-1).double() for _ in range(draws)])
    p = sampling_probabilities(dy.abs() if mode == "sampled" else dy.abs().sum(0, keepdim=True), K)
    sd = (p * (1 - p)).sum(-1).sqrt() / draws ** 0.5  # standard error of the mean count
    assert ((counts.mean(0) - K).abs() <= 5 * sd + 1e-9).all(), (counts.mean(0), sd)


@pytest.mark.parametrize("mode", SAMPLED)
def test_gradients_are_unbiased_against_float64_dense(mode, path):
    if mode == "sampled_unified" and path == "kernel":
        pytest.skip("the unified form has no kernel path (two GEMMs)")
    x, w, b, dy = _operands(dtype=torch.float32)
    draws = 800
    gen = torch.Generator().manual_seed(2)
    samples = [torch.cat([g.double().reshape(-1) for g in _grads(x, w, b, dy, k=K, mode=mode, generator=gen)])
               for _ in range(draws)]
    samples = torch.stack(samples)  # (draws, entries of grad_input, grad_weight, grad_bias)
    dense = _grads(*(t.double() for t in (x, w, b, dy)), k=N_OUT)
    want = torch.cat([g.reshape(-1) for g in dense])
    stderr = samples.std(0) / draws ** 0.5
    # 5.5 standard errors per entry: a false failure in any of the ~300 entries is ~1e-5
    assert ((samples.mean(0) - want).abs() <= 5.5 * stderr + 1e-4).all()
    assert samples.std(0).max() > 0  # it does sample


@pytest.mark.parametrize("mode", SAMPLED)
def test_a_generator_makes_a_draw_reproducible_and_the_global_rng_is_the_fallback(mode):
    x, w, b, dy = _operands(dtype=torch.float32)
    first = _grads(x, w, b, dy, k=K, mode=mode, generator=torch.Generator().manual_seed(5))
    again = _grads(x, w, b, dy, k=K, mode=mode, generator=torch.Generator().manual_seed(5))
    other = _grads(x, w, b, dy, k=K, mode=mode, generator=torch.Generator().manual_seed(6))
    for a, c in zip(first, again):
        torch.testing.assert_close(a, c, rtol=0, atol=0)
    assert any(not torch.equal(a, c) for a, c in zip(first, other))
    torch.manual_seed(11)
    global_first = _grads(x, w, b, dy, k=K, mode=mode)
    torch.manual_seed(11)
    for a, c in zip(global_first, _grads(x, w, b, dy, k=K, mode=mode)):
        torch.testing.assert_close(a, c, rtol=0, atol=0)


def test_kernel_path_runs_the_compiled_op_and_its_layouts_agree_draw_for_draw():
    """The compiled path draws its own stream (not torch.rand's): same generator state, same
    draws whatever the weight-gradient layout; the law is checked by the unbiasedness test."""
    if not (kernels.enabled() and kernels.load()):
        pytest.skip("compiled kernels unavailable")
    x, w, b, dy = _operands(dtype=torch.float32)
    dense = _grads(x, w, b, dy, k=K, mode="sampled", generator=torch.Generator().manual_seed(3))
    assert kernels.last_formulation() in ("gather", "masked_gemm", "masked_dense")
    sparse = _grads(x, w, b, dy, k=K, mode="sampled", generator=torch.Generator().manual_seed(3), sparse_grad=True)
    for a, c in zip(dense, sparse):
        torch.testing.assert_close(a, c, rtol=1e-6, atol=1e-6)


def _scale(dy, mode, seed, path):
    """1/p where kept, 0 elsewhere, as the path draws it with a generator seeded ``seed``."""
    if path == "kernel" and mode == "sampled":  # the op's kept matrix: x = I makes the weight gradient kept^T
        eye, zeros = torch.eye(dy.shape[0], dtype=dy.dtype), torch.zeros(dy.shape[1], dy.shape[0], dtype=dy.dtype)
        kept = torch.ops.meprop.sampled_backward(dy, eye, zeros, K, torch.Generator().manual_seed(seed), False,
                                                 True, False, False, True, "auto")[2].t()
        return torch.where(kept != 0, kept / dy, torch.zeros_like(dy))
    return sampled_scale(dy, K, mode, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("mode", SAMPLED)
def test_row_sparse_gradient_holds_exactly_the_rows_some_example_kept(mode, path):
    x, w, b, dy = _operands(dtype=torch.float32)
    scale = _scale(dy, mode, 4, path)
    kept_rows = ((scale != 0).reshape(-1, N_OUT).any(0)).nonzero().squeeze(1)
    w = w.clone().requires_grad_()
    meprop.meprop_linear(x, w, None, k=K, mode=mode, sparse_grad=True,
                         generator=torch.Generator().manual_seed(4)).backward(dy)
    assert w.grad.is_sparse and w.grad.sparse_dim() == 1
    torch.testing.assert_close(w.grad._indices()[0], kept_rows)
    want = (dy * scale).double().t() @ x.double()  # the float64 masked, rescaled reference
    torch.testing.assert_close(w.grad.to_dense().double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", SAMPLED)
def test_lazy_adam_updates_only_the_kept_rows(mode):
    torch.manual_seed(0)
    model = meprop.convert(nn.Sequential(nn.Linear(N_IN, N_OUT), nn.ReLU(), nn.Linear(N_OUT, 3)),
                           k=K, mode=mode, generator=torch.Generator().manual_seed(0))
    opt = meprop.optim.Adam(model.parameters(), lr=0.1, lazy=True)
    before = model[0].weight.detach().clone()
    x = torch.randn(BATCH, N_IN)
    F.cross_entropy(model(x), torch.tensor([0, 1, 2, 0, 1, 2])).backward()
    touched = model[0].weight.grad.coalesce()._indices()[0]
    opt.step()
    changed = (model[0].weight.detach() != before).any(1).nonzero().squeeze(1)
    assert set(changed.tolist()) <= set(touched.tolist()) and len(touched) < N_OUT


@pytest.mark.parametrize("mode", SAMPLED)
def test_double_backward_uses_the_same_draw(mode, monkeypatch):
    # create_graph=True runs the differentiable PyTorch ops: the PyTorch path's draws
    monkeypatch.setattr(sampled_backward.kernels, "supports", lambda *tensors: False)
    x, w, b, dy = _operands(dtype=torch.float64)
    plain = _grads(x, w, b, dy, k=K, mode=mode, generator=torch.Generator().manual_seed(8))
    xr, wr, br = (t.clone().requires_grad_() for t in (x, w, b))
    out = meprop.meprop_linear(xr, wr, br, k=K, mode=mode, generator=torch.Generator().manual_seed(8))
    gx, = torch.autograd.grad(out, xr, dy, create_graph=True)
    torch.testing.assert_close(gx, plain[0])
    penalty = (gx ** 2).sum()
    penalty.backward()  # second order reaches the weight (the mask and 1/p are constants)
    scale = sampled_scale(dy, K, mode, torch.Generator().manual_seed(8))
    kept = dy * scale
    torch.testing.assert_close(wr.grad, 2 * kept.t() @ (kept @ w))


@pytest.mark.parametrize("mode", SAMPLED)
def test_torch_func_grad_and_vmap_and_meta(mode, monkeypatch):
    # transforms run the differentiable PyTorch ops: compared with the PyTorch path's draws
    monkeypatch.setattr(sampled_backward.kernels, "supports", lambda *tensors: False)
    model = meprop.convert(nn.Sequential(nn.Linear(N_IN, N_OUT), nn.Linear(N_OUT, 2)), k=K, mode=mode)
    params = {name: p.detach() for name, p in model.named_parameters()}
    x = torch.randn(BATCH, N_IN)
    loss = lambda p, xs: torch.func.functional_call(model, p, (xs,)).pow(2).sum()  # noqa: E731
    torch.manual_seed(0)
    grads = torch.func.grad(loss)(params, x)
    torch.manual_seed(0)
    model.zero_grad()
    model(x).pow(2).sum().backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad.to_dense())
    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0), randomness="different")(
        params, x.unsqueeze(1))
    assert per_sample["0.weight"].shape == (BATCH, N_OUT, N_IN)
    meta = meprop.MepropLinear(N_IN, N_OUT, k=K, mode=mode, device="meta")
    xm = torch.empty(BATCH, N_IN, device="meta", requires_grad=True)
    meta(xm).sum().backward()
    assert xm.grad.shape == (BATCH, N_IN) and meta.weight.grad.device.type == "meta"


def test_meprop_lstm_sampled_is_unbiased_in_expectation_and_dense_at_full_k():
    torch.manual_seed(0)
    reference = nn.LSTM(4, 3, batch_first=True)
    x, target = torch.randn(2, 3, 4), torch.randn(2, 3, 3)

    def grads(**kwargs):
        lstm = meprop.MepropLSTM.from_lstm(reference, **kwargs)
        ((lstm(x)[0] - target) ** 2).sum().backward()
        return torch.cat([p.grad.to_dense().reshape(-1) for p in lstm.parameters()])

    dense = grads()
    torch.testing.assert_close(grads(k=12, mode="sampled"), dense)
    gen = torch.Generator().manual_seed(0)
    samples = torch.stack([grads(k=4, mode="sampled", generator=gen) for _ in range(500)])
    stderr = samples.std(0) / len(samples) ** 0.5
    assert ((samples.mean(0) - dense).abs() <= 5.5 * stderr + 1e-4).all()


@pytest.mark.parametrize("kwargs, words", [
    ({"mode": "per_example", "generator": torch.Generator()}, ["generator", "per_example", "sampled"]),
    ({"mode": "sampld"}, ["mode", "sampld", "sampled_unified"]),
    ({"mode": "sampled", "sync_selection": True}, ["sync_selection", "sampled"]),
])
def test_bad_arguments_name_themselves(kwargs, words):
    x, w, b, _ = _operands(dtype=torch.float32)
    with pytest.raises(ValueError) as info:
        meprop.meprop_linear(x, w, b, k=K, **kwargs)
    for word in words:
        assert word in str(info.value)
    with pytest.raises(ValueError, match="generator"):
        meprop.MepropLinear(N_IN, N_OUT, k=K, generator=torch.Generator())
