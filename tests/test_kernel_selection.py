"""The compiled top-k selection: exact against a stable-sort reference in every regime.

The kernel selects a row's k largest magnitudes by a threshold heap (few kept) or the k-th
largest key (many kept: an AVX-512 quickselect where the CPU has it, else a radix select), and the masked formulations write the kept entries straight into a
(B, n) matrix. Whatever the path, the kept set must be the reference's: the k largest
``|dy|``, ties broken towards the lower index, NaN counted as the largest magnitude.
"""

from __future__ import annotations

import pytest
import torch

from meprop import kernels


@pytest.fixture(autouse=True, params=["avx512", "portable"])
def selection_path(request):
    """Every test runs on both threshold searches: the AVX-512 quickselect and the radix select."""
    if not kernels.available():
        pytest.skip("compiled kernels unavailable (MEPROP_KERNELS=off or no compiler)")
    before = kernels.vector_selection()
    if kernels.vector_selection(request.param == "avx512") != (request.param == "avx512"):
        pytest.skip("this CPU has no AVX-512")
    yield request.param
    kernels.vector_selection(before)


def reference_indices(dy: torch.Tensor, k: int) -> torch.Tensor:
    """(R, k) ascending column indices of the k largest |dy| per row (ties: lower index; NaN largest)."""
    key = dy.abs().double().nan_to_num(nan=float("inf"), posinf=float("inf"))
    key = torch.where(dy.isnan(), torch.full_like(key, float("inf")), key)
    # a NaN ranks above +inf: order by (is NaN, |dy|) descending, stably
    rank = torch.sort(-key, dim=1, stable=True).indices
    nan_first = torch.sort((~dy.isnan()).to(torch.int8).gather(1, rank), dim=1, stable=True).indices
    return rank.gather(1, nan_first)[:, :k].sort(1).values


def _rows(kind: str, r: int, n: int, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    if kind == "gaussian":
        return torch.randn(r, n, dtype=dtype, generator=gen)
    if kind == "ties":  # few distinct magnitudes: long runs of equal keys
        return torch.randint(-3, 4, (r, n), generator=gen).to(dtype)
    if kind == "sparse":  # mostly exact zeros
        dy = torch.randn(r, n, dtype=dtype, generator=gen)
        return dy * (torch.rand(r, n, generator=gen) < 0.2)
    if kind == "relu":  # half exact zeros, tied at the threshold when k is near n / 2
        return torch.randn(r, n, dtype=dtype, generator=gen) * (torch.rand(r, n, generator=gen) < 0.5)
    if kind == "wide":  # magnitudes over many decades (and some infinities)
        return torch.randn(r, n, dtype=dtype, generator=gen) * torch.exp(20 * torch.randn(r, n, generator=gen)).to(dtype)
    if kind == "nan":
        dy = torch.randn(r, n, dtype=dtype, generator=gen)
        dy[torch.rand(r, n, generator=gen) < 0.05] = float("nan")
        dy[:, 0] = float("inf")
        return dy
    if kind == "constant":
        return torch.full((r, n), -0.5, dtype=dtype)
    raise ValueError(kind)


KINDS = ("gaussian", "ties", "sparse", "relu", "wide", "nan", "constant")
SHAPES = [(n, k) for n in (1, 7, 17, 64, 130, 500, 4100) for k in sorted({1, max(1, n // 16), n // 16 + 1, n // 3, n // 2, n - 1, n})
          if 1 <= k <= n]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_select_rows_equals_the_reference(kind, dtype):
    gen = torch.Generator().manual_seed(1)
    for n, k in SHAPES:
        dy = _rows(kind, 5, n, dtype, gen)
        idx, val = torch.ops.meprop.select_rows(dy, k)
        expected = reference_indices(dy, k)
        assert torch.equal(idx, expected), (kind, n, k)
        torch.testing.assert_close(val, dy.gather(1, expected), equal_nan=True, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ("gaussian", "ties", "sparse", "relu", "constant"))
@pytest.mark.parametrize("formulation", ["masked_gemm", "masked_dense"])
def test_masked_formulations_keep_the_reference_entries(formulation, kind, dtype):
    """grad_input, the touched rows (kept zeros count as touched) and the bias, from the kept set."""
    gen = torch.Generator().manual_seed(2)
    r = 40  # R * n >= 32768 for n = 4100: the rows are split over threads
    # m < batch and m > batch: masked_dense copies the touched rows out after or before its GEMM
    for n, k, m in [(64, 3, 6), (64, 40, 6), (64, 40, 50), (500, 250, 6), (500, 250, 50), (500, 499, 6),
                    (4100, 2050, 6)]:
        dy = _rows(kind, r if n < 4100 else 9, n, dtype, gen)
        x = torch.randn(dy.shape[0], m, dtype=dtype, generator=gen)
        w = torch.randn(n, m, dtype=dtype, generator=gen)
        idx = reference_indices(dy, k)
        kept = torch.zeros_like(dy).scatter(1, idx, dy.gather(1, idx))  # (R, n)
        touched = torch.zeros(n, dtype=torch.bool).index_fill_(0, idx.flatten(), True).nonzero().flatten()
        for dense_weight in (False, True):
            gi, row_index, rows, gb = torch.ops.meprop.per_example_backward(
                dy, x, w, k, None, True, True, True, False, dense_weight, formulation)
            torch.testing.assert_close(gi, kept @ w)
            torch.testing.assert_close(gb, kept.sum(0))
            if dense_weight:
                torch.testing.assert_close(rows, kept.t() @ x)
            else:
                assert torch.equal(row_index, touched), (kind, n, k)
                torch.testing.assert_close(rows, (kept.t() @ x)[touched])


def _rows_with_nonzeros(counts, n, dtype, gen):
    """One row per count: that many nonzero entries at random positions, the rest exact zeros."""
    dy = torch.zeros(len(counts), n, dtype=dtype)
    for r, nonzero in enumerate(counts):
        dy[r, torch.randperm(n, generator=gen)[:nonzero]] = torch.randn(nonzero, dtype=dtype, generator=gen)
    return dy


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rows_with_about_k_nonzeros_keep_the_reference_entries(dtype):
    """Fewer than k nonzeros: every nonzero and then the first zeros are kept, with no search (the
    zeros still touch their weight rows); at k nonzeros and above the search runs."""
    gen = torch.Generator().manual_seed(3)
    for n, k in [(17, 9), (64, 32), (500, 100), (500, 250), (4100, 2050)]:
        dy = _rows_with_nonzeros([0, 1, k - 1, k, k + 1, min(n, k + 7), n], n, dtype, gen)
        idx, val = torch.ops.meprop.select_rows(dy, k)
        expected = reference_indices(dy, k)
        assert torch.equal(idx, expected), (n, k)
        torch.testing.assert_close(val, dy.gather(1, expected), rtol=0, atol=0)
        x = torch.randn(dy.shape[0], 5, dtype=dtype, generator=gen)
        w = torch.randn(n, 5, dtype=dtype, generator=gen)
        kept = torch.zeros_like(dy).scatter(1, expected, dy.gather(1, expected))
        touched = torch.zeros(n, dtype=torch.bool).index_fill_(0, expected.flatten(), True).nonzero().flatten()
        for formulation in ("masked_gemm", "masked_dense"):
            gi, row_index, rows, gb = torch.ops.meprop.per_example_backward(
                dy, x, w, k, None, True, True, True, False, False, formulation)
            torch.testing.assert_close(gi, kept @ w)
            assert torch.equal(row_index, touched), (n, k, formulation)
            torch.testing.assert_close(rows, (kept.t() @ x)[touched])
