"""meprop.optim under DistributedDataParallel: gloo, 2 processes on 127.0.0.1, float64.

Per-example mode selects per example, so 2 ranks equal 1 process on the concatenated
batch. Unified mode selects one column set per rank's batch (documented), so ranks stay
identical to each other but differ from the single process.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

import meprop
from optim_helpers import batches, loss_of, mlp

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo"),
]

STEPS, BATCH = 4, 8


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SCENARIOS = {  # name: (mode, lazy, clip)
    "per_example-lazy": ("per_example", True, None),
    "per_example-lazy-clip": ("per_example", True, 0.05),
    "per_example-exact-clip": ("per_example", False, 0.05),
    "unified-lazy": ("unified", True, None),
}


def _worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for name, (mode, lazy, clip) in SCENARIOS.items():
            model = meprop.convert(mlp(), k=4, mode=mode)
            ddp = DistributedDataParallel(model)
            opt = meprop.optim.Adam(ddp.parameters(), lr=1e-2, lazy=lazy)
            for x, y in batches(STEPS, batch=BATCH):
                shard = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
                opt.zero_grad()
                loss_of(ddp, x[shard], y[shard]).backward()
                if clip:
                    torch.nn.utils.clip_grad_norm_(ddp.parameters(), clip)
                opt.step()
            params = [p.detach() for p in model.parameters()]
            torch.save(params, os.path.join(out_dir, f"{name}-rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _single_process(mode, lazy, clip):
    model = meprop.convert(mlp(), k=4, mode=mode)
    opt = meprop.optim.Adam(model.parameters(), lr=1e-2, lazy=lazy)
    for x, y in batches(STEPS, batch=BATCH):
        opt.zero_grad()
        loss_of(model, x, y).backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
    return [p.detach() for p in model.parameters()]


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    """Parameters after training each scenario with DDP on 2 ranks: {name: (rank0, rank1)}."""
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return {
        name: tuple(torch.load(out / f"{name}-rank{r}.pt") for r in range(2)) for name in SCENARIOS
    }


@pytest.mark.parametrize("name", [n for n in SCENARIOS if n.startswith("per_example")])
def test_per_example_ddp_equals_one_process_on_the_whole_batch(ddp_results, name):
    rank0, rank1 = ddp_results[name]
    for a, b in zip(rank0, rank1):
        assert torch.equal(a, b), "ranks must stay identical"
    for a, b in zip(rank0, _single_process(*SCENARIOS[name])):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_unified_ddp_ranks_stay_identical(ddp_results):
    rank0, rank1 = ddp_results["unified-lazy"]
    for a, b in zip(rank0, rank1):
        assert torch.equal(a, b)
    initial = [p.detach() for p in mlp().parameters()]
    assert all(not torch.equal(a, b) for a, b in zip(rank0, initial)), "every parameter trained"
