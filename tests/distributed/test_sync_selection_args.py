"""``sync_selection``: refused outside unified mode; without a process group it is plain unified."""

from __future__ import annotations

import pytest
import torch

import meprop
from meprop.selection import topk_unified, topk_unified_synchronized


def test_refused_outside_unified_mode():
    x, w = torch.randn(4, 6), torch.randn(5, 6)
    with pytest.raises(ValueError, match="sync_selection=True applies to mode='unified'.*per_example"):
        meprop.meprop_linear(x, w, k=2, mode="per_example", sync_selection=True)
    with pytest.raises(ValueError, match="sync_selection=True applies to mode='unified'"):
        meprop.MepropLinear(6, 5, k=2, mode="random", sync_selection=True)
    with pytest.raises(TypeError, match="sync_selection"):
        meprop.meprop_linear(x, w, k=2, mode="unified", sync_selection="yes")


def test_without_a_process_group_it_is_unified_selection():
    dy = torch.randn(8, 20, dtype=torch.float64)
    assert torch.equal(topk_unified_synchronized(dy, 5).sort().values, topk_unified(dy, 5).sort().values)
    torch.manual_seed(0)
    plain = meprop.convert(torch.nn.Sequential(torch.nn.Linear(6, 20), torch.nn.Linear(20, 3)).double(),
                           k=5, mode="unified")
    synced = meprop.convert(torch.nn.Sequential(torch.nn.Linear(6, 20), torch.nn.Linear(20, 3)).double(),
                            k=5, mode="unified", sync_selection=True)
    synced.load_state_dict(plain.state_dict())
    assert "sync_selection=True" in repr(synced[0]) and "sync_selection" not in repr(plain[0])
    x = torch.randn(7, 6, dtype=torch.float64)
    for model in (plain, synced):
        model(x).square().sum().backward()
    for a, b in zip(plain.parameters(), synced.parameters()):
        assert torch.equal(a.grad, b.grad)
