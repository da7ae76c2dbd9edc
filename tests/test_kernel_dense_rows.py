"""meprop::dense_from_rows: the dense weight gradient from its kept rows, each row written once.

It must equal the PyTorch path it replaces (``zeros(n, m).index_copy_(0, row_index, rows)``)
bit for bit, with regular and with streaming stores, and refuse a row index it cannot place.
"""

from __future__ import annotations

import pytest
import torch

from meprop import kernels
from meprop._impl.grad_layout import weight_grad_from_rows


@pytest.fixture(autouse=True)
def _kernels():
    if not kernels.available():
        pytest.skip("compiled kernels unavailable (MEPROP_KERNELS=off or no compiler)")


def _rows(n, m, kept, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    row_index = torch.randperm(n, generator=gen)[:kept].sort().values  # (U,)
    return row_index, torch.randn(kept, m, dtype=dtype, generator=gen)  # (U, m)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("stream_above", [-1, 0], ids=["machine", "streaming"])
@pytest.mark.parametrize("n, m, kept", [(1, 1, 1), (7, 3, 0), (7, 3, 7), (64, 33, 1), (300, 17, 41), (513, 129, 200)])
def test_equals_zeros_then_index_copy(n, m, kept, dtype, stream_above):
    row_index, rows = _rows(n, m, kept, dtype)
    expected = rows.new_zeros(n, m).index_copy_(0, row_index, rows)
    got = torch.ops.meprop.dense_from_rows(row_index, rows, n, stream_above)
    assert got.shape == (n, m) and got.dtype == dtype
    assert torch.equal(got, expected)


def test_first_and_last_rows_and_empty_shapes():
    rows = torch.arange(6.0).reshape(2, 3)
    got = torch.ops.meprop.dense_from_rows(torch.tensor([0, 4]), rows, 5, 0)
    assert torch.equal(got, torch.tensor([[0.0, 1, 2], [0] * 3, [0] * 3, [0] * 3, [3, 4, 5]]))
    assert torch.ops.meprop.dense_from_rows(torch.tensor([], dtype=torch.long), torch.empty(0, 4), 0).shape == (0, 4)
    assert torch.equal(torch.ops.meprop.dense_from_rows(torch.tensor([1]), torch.empty(1, 0), 3), torch.empty(3, 0))


@pytest.mark.parametrize("row_index, message", [
    ([2, 1], "sorted, unique"), ([1, 1], "sorted, unique"), ([0, 5], r"in \[0, 5\)"), ([-1, 2], "sorted, unique"),
])
def test_refuses_a_row_index_it_cannot_place(row_index, message):
    with pytest.raises(RuntimeError, match=message):
        torch.ops.meprop.dense_from_rows(torch.tensor(row_index), torch.ones(2, 3), 5)


def test_refuses_mismatched_rows_and_a_bad_threshold():
    with pytest.raises(RuntimeError, match="rows must be"):
        torch.ops.meprop.dense_from_rows(torch.tensor([0, 1]), torch.ones(3, 4), 5)
    with pytest.raises(RuntimeError, match="stream_above"):
        torch.ops.meprop.dense_from_rows(torch.tensor([0]), torch.ones(1, 4), 5, -2)


def test_opcheck():
    row_index, rows = _rows(50, 9, 12, torch.float64)
    torch.library.opcheck(torch.ops.meprop.dense_from_rows.default, (row_index, rows, 50),
                          test_utils=("test_schema", "test_faketensor"))


def test_the_dense_layout_goes_through_it_only_outside_a_recorded_graph():
    """Under create_graph the dense gradient must stay differentiable: the PyTorch path."""
    weight = torch.zeros(20, 6, dtype=torch.float64)
    row_index, rows = _rows(20, 6, 5, torch.float64)
    expected = rows.new_zeros(20, 6).index_copy_(0, row_index, rows)
    assert torch.equal(weight_grad_from_rows(row_index, rows, weight, "dense"), expected)
    rows.requires_grad_()
    with torch.enable_grad():
        grad = weight_grad_from_rows(row_index, rows, weight, "dense")
    assert grad.grad_fn is not None
    (grad * torch.arange(120.0, dtype=torch.float64).reshape(20, 6)).sum().backward()
    torch.testing.assert_close(rows.grad, torch.arange(120.0, dtype=torch.float64).reshape(20, 6)[row_index])
