"""Selection functions: exact top-k semantics, the blocked CPU reduction, random-k."""

import pytest
import torch

import meprop.selection as selection


def test_per_example_topk_keeps_largest_magnitudes():
    dy = torch.tensor([[0.1, -5.0, 2.0, 0.3], [4.0, 0.0, -0.5, -6.0]])
    idx = selection.topk_per_example(dy, 2).sort(dim=1).values
    assert idx.tolist() == [[1, 2], [0, 3]]


def test_unified_topk_uses_column_sums_of_magnitudes():
    dy = torch.tensor([[1.0, -3.0, 0.0, 0.5], [1.0, 0.0, 0.1, -0.5], [-1.5, 0.0, 0.1, 0.5]])
    # |dy| column sums: 3.5, 3.0, 0.2, 1.5
    assert sorted(selection.topk_unified(dy, 2).tolist()) == [0, 1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_blocked_column_sum_equals_plain_reduction(monkeypatch, dtype):
    dy = torch.randn(300, 70, dtype=torch.float64).to(dtype)
    plain = dy.double().abs().sum(0)
    monkeypatch.setattr(selection, "CPU_BLOCK_ELEMENTS", 128)  # force many blocks
    blocked = selection.column_abs_sum(dy)
    assert blocked.dtype == torch.promote_types(dtype, torch.float32)
    torch.testing.assert_close(blocked.double(), plain, rtol=1e-5, atol=1e-5)


def test_random_selection_is_distinct_uniform_and_seeded():
    dy = torch.zeros(2000, 10)
    first = selection.random_per_example(dy, 3, torch.Generator().manual_seed(0))
    again = selection.random_per_example(dy, 3, torch.Generator().manual_seed(0))
    assert torch.equal(first, again)
    assert all(len(set(row)) == 3 for row in first.tolist())  # distinct within a row
    counts = torch.bincount(first.flatten(), minlength=10).double()
    expected = 2000 * 3 / 10
    assert ((counts - expected).abs() < 0.15 * expected).all()  # every column about equally often


def test_select_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode.*'best'"):
        selection.select(torch.zeros(2, 3), 1, "best")
