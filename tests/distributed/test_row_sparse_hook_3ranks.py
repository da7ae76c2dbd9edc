"""row_sparse_hook on 3 ranks: the rank-order sum of gathered rows (more than two ranks)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ddp_scenarios import free_port, single_process, worker

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo"),
]

WORLD = 3
SCENARIOS = {
    "plain": dict(k=2, batch=1, lazy=True),
    "hook": dict(k=2, batch=1, lazy=True, hook="row"),
    "hook-sync-unified": dict(k=3, batch=2, mode="unified", sync=True, hook="row"),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp_hook3")
    mp.spawn(worker, args=(WORLD, free_port(), str(out), SCENARIOS), nprocs=WORLD, join=True)
    return {name: [torch.load(out / f"{name}-rank{r}.pt", weights_only=False) for r in range(WORLD)]
            for name in SCENARIOS}


def _identical(results):
    for other in results[1:]:
        for a, b in zip(results[0]["params"], other["params"]):
            assert torch.equal(a, b), "ranks must hold identical parameters"
    return results[0]["params"]


def test_gathered_rows_of_three_ranks_equal_plain_ddp(runs):
    assert runs["hook"][0]["counter"]["forms"]["gather"] >= 1, "the case exercises the gather form"
    for a, b in zip(_identical(runs["hook"]), _identical(runs["plain"])):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_synchronized_unified_on_three_ranks_equals_one_process(runs):
    assert runs["hook-sync-unified"][0]["counter"]["forms"] == {"dense": 0, "union": 2, "gather": 0}
    expected = single_process(SCENARIOS["hook-sync-unified"], world=WORLD)
    for a, b in zip(_identical(runs["hook-sync-unified"]), expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
