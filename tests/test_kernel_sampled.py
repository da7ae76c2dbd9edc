"""torch.ops.meprop.sampled_backward (mode="sampled" on the compiled path) against the PyTorch
solver and float64 references: probabilities, unbiasedness, expected count, reproducibility,
touched rows, formulations, empty shapes, k >= n, NaN/inf, opcheck."""

from __future__ import annotations

import pytest
import torch

from meprop import kernels
from meprop.sampling import sampling_probabilities

FORMULATIONS = ["gather", "masked_gemm", "masked_dense", "auto"]


@pytest.fixture(autouse=True)
def _need_kernels():
    if not (kernels.enabled() and kernels.load()):
        pytest.skip("compiled kernels unavailable")


def _kept(dy, k, gen, formulation="gather"):
    """The op's kept, rescaled (B, n) matrix: with x = I (m = B) the dense weight gradient is kept^T."""
    eye = torch.eye(dy.shape[0], dtype=dy.dtype)
    w = torch.zeros(dy.shape[1], dy.shape[0], dtype=dy.dtype)
    _, _, rows, _ = torch.ops.meprop.sampled_backward(dy, eye, w, k, gen, False, True, False, False, True,
                                                      formulation)
    return rows.t()


def _rows(seed=0, dtype=torch.float64):
    """(8, 40) gradients: plain, saturated, at most k positive, tied, dominated, a geometric row
    (many water-filling passes: the sorted solve takes over), half zeros (after a ReLU)."""
    gen = torch.Generator().manual_seed(seed)
    dy = torch.randn(8, 40, generator=gen, dtype=dtype)
    dy[1, :5] = 50.0
    dy[2, 3:] = 0.0
    dy[3] = -1.0
    dy[4, 0] = 1e6
    dy[5] = 0.5 ** torch.arange(40, dtype=dtype)
    dy[6, ::2] = 0.0
    return dy


@pytest.mark.parametrize("k", [1, 4, 9])
@pytest.mark.parametrize("formulation", ["gather", "masked_gemm"])
def test_probabilities_match_the_pytorch_solver(k, formulation):
    dy = _rows()
    p = sampling_probabilities(dy.abs(), k)  # (8, 40) the reference
    gen = torch.Generator().manual_seed(k)
    ever = torch.zeros_like(dy, dtype=torch.bool)
    for _ in range(300):
        kept = _kept(dy, k, gen, formulation)
        on = kept != 0
        ever |= on
        torch.testing.assert_close(dy[on] / kept[on], p[on], rtol=1e-12, atol=0)  # kept: dy / p
    assert not ever[p == 0].any()  # zeros never kept
    assert ever[p > 0.05].all()  # P(never in 300 draws) < 2e-7 each


def test_unbiased_and_k_kept_in_expectation():
    dy = _rows(1)
    k = 6
    p = sampling_probabilities(dy.abs(), k)
    gen = torch.Generator().manual_seed(0)
    draws = 3000
    kept = torch.stack([_kept(dy, k, gen) for _ in range(draws)])  # (draws, 8, 40)
    var = torch.where(p > 0, dy ** 2 * (1 / p - 1), torch.zeros_like(dy))  # of one draw
    assert ((kept.mean(0) - dy).abs() <= 5.5 * (var / draws).sqrt() + 1e-12).all()
    counts = (kept != 0).sum(-1).double()  # (draws, 8)
    sd = (p * (1 - p)).sum(-1).sqrt() / draws ** 0.5
    want = torch.clamp((dy != 0).sum(1), max=k).double()
    assert ((counts.mean(0) - want).abs() <= 5 * sd + 1e-9).all(), (counts.mean(0), want)


def test_same_generator_state_same_draws_on_any_threads():
    dy = torch.randn(128, 300, generator=torch.Generator().manual_seed(0))  # parallel row blocks
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _kept(dy, 20, torch.Generator().manual_seed(5), "masked_gemm")
        torch.set_num_threads(2)
        two = _kept(dy, 20, torch.Generator().manual_seed(5), "masked_gemm")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)
    assert torch.equal(one, _kept(dy, 20, torch.Generator().manual_seed(5), "gather"))  # formulations agree
    assert not torch.equal(one, _kept(dy, 20, torch.Generator().manual_seed(6)))
    gen = torch.Generator().manual_seed(5)
    assert not torch.equal(_kept(dy, 20, gen), _kept(dy, 20, gen))  # each call advances the generator
    torch.manual_seed(3)
    first = _kept(dy, 20, None)
    torch.manual_seed(3)
    assert torch.equal(first, _kept(dy, 20, None))  # None: the default CPU generator


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("dense_weight", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_and_touched_rows_are_those_of_the_kept_set(formulation, dense_weight, dtype):
    gen = torch.Generator().manual_seed(1)
    dy, x, w = (torch.randn(*s, generator=gen, dtype=dtype) for s in ((20, 30), (20, 11), (30, 11)))
    dy[:, 4] = 0.0  # a column nobody can keep
    kept = _kept(dy, 5, torch.Generator().manual_seed(9), formulation)
    gi, row_index, rows, gb = torch.ops.meprop.sampled_backward(
        dy, x, w, 5, torch.Generator().manual_seed(9), True, True, True, False, dense_weight, formulation)
    k64, x64, w64 = kept.double(), x.double(), w.double()
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gi.double(), k64 @ w64, **tol)
    torch.testing.assert_close(gb.double(), k64.sum(0), **tol)
    touched = (kept != 0).any(0).nonzero().squeeze(1)
    assert 4 not in touched.tolist() and len(touched) < 30
    if dense_weight:
        torch.testing.assert_close(rows.double(), k64.t() @ x64, **tol)
    else:
        assert torch.equal(row_index, touched)
        torch.testing.assert_close(rows.double(), (k64.t() @ x64)[touched], **tol)
    _, _, _, dense_bias = torch.ops.meprop.sampled_backward(dy, x, w, 5, None, False, False, True, True, False,
                                                            formulation)
    torch.testing.assert_close(dense_bias, dy.sum(0))


@pytest.mark.parametrize("shape", [(0, 7, 5), (4, 0, 5), (4, 7, 0)])
@pytest.mark.parametrize("formulation", ["gather", "masked_gemm"])
def test_empty_shapes(shape, formulation):
    batch, n, m = shape
    dy, x, w = torch.randn(batch, n), torch.randn(batch, m), torch.randn(n, m)
    gi, _, rows, gb = torch.ops.meprop.sampled_backward(dy, x, w, 3, None, True, True, True, False, True, formulation)
    assert gi.shape == (batch, m) and rows.shape == (n, m) and gb.shape == (n,)
    assert not gi.any() and not rows.any()  # every product has an empty side
    if batch == 0:
        assert not gb.any()
    _, row_index, rows, _ = torch.ops.meprop.sampled_backward(dy, x, w, 3, None, False, True, False, False, False,
                                                              formulation)
    assert rows.shape[1] == m and row_index.shape[0] == rows.shape[0] <= n


@pytest.mark.parametrize("formulation", ["gather", "masked_gemm"])
def test_k_at_least_n_keeps_every_nonzero_at_scale_one(formulation):
    dy = _rows(2)
    for k in (40, 100):
        assert torch.equal(_kept(dy, k, torch.Generator().manual_seed(0), formulation), dy)
    dy[0, :38] = 0.0  # at most k positive in a row: kept surely, unscaled
    assert torch.equal(_kept(dy, 3, torch.Generator().manual_seed(0), formulation)[0], dy[0])


@pytest.mark.parametrize("formulation", ["gather", "masked_gemm"])
def test_nan_and_inf_are_kept_outside_the_budget(formulation):
    dy = _rows(3)
    dy[0, 2], dy[1, 5], dy[1, 6] = float("nan"), float("inf"), -float("inf")
    p = sampling_probabilities(dy.abs(), 4)
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(8, dtype=torch.float64)
    draws = 1000
    for _ in range(draws):
        # rows apart: through x = I a NaN/inf would reach its whole column (NaN * 0)
        kept = torch.cat([_kept(dy[:1], 4, gen, formulation), _kept(dy[1:2], 4, gen, formulation),
                          _kept(dy[2:], 4, gen, formulation)])
        assert kept[0, 2].isnan() and kept[1, 5] == float("inf") and kept[1, 6] == -float("inf")
        finite = dy.isfinite() & (kept != 0)
        torch.testing.assert_close(dy[finite] / kept[finite], p[finite], rtol=1e-12, atol=0)
        counts += (kept != 0).sum(1)
    extra = torch.tensor([1, 2, 0, 0, 0, 0, 0, 0], dtype=torch.float64)
    sd = (p * (1 - p)).sum(-1).sqrt() / draws ** 0.5
    assert ((counts / draws - extra - torch.clamp((dy[:, :] != 0).sum(1) - extra, max=4)).abs()
            <= 5 * sd + 1e-9).all()


@pytest.mark.parametrize("dense_weight", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(dense_weight, dtype):
    gen = torch.Generator().manual_seed(0)
    dy, x, w = (torch.randn(*s, generator=gen, dtype=dtype) for s in ((6, 12), (6, 9), (12, 9)))
    # Schema and fake tensors; the op draws (nondeterministic_seeded), so no eager/compiled comparison.
    for formulation in ("gather", "masked_gemm"):
        for flags in [(True, True, True, False), (True, False, True, True), (False, True, False, False)]:
            torch.library.opcheck(torch.ops.meprop.sampled_backward.default,
                                  (dy, x, w, 3, torch.Generator().manual_seed(1), *flags, dense_weight, formulation),
                                  test_utils=("test_schema", "test_faketensor"))
    with pytest.raises(RuntimeError, match="formulation"):
        torch.ops.meprop.sampled_backward(dy, x, w, 3, None, True, True, True, False, True, "bogus")
    with pytest.raises(RuntimeError, match="k must be >= 1"):
        torch.ops.meprop.sampled_backward(dy, x, w, 0, None, True, True, True, False, True, "auto")
