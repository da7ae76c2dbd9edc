"""2-rank gloo training runs shared by the meprop.distributed tests (float64, a small MLP).

A scenario trains a copy of one seeded MLP for a few steps under DistributedDataParallel,
each rank on its half of every global batch, and saves the final parameters, the hook's
byte counts of the last step, the rows each rank's meProp layers touched in that step
(from a local backward without DDP, the reference for the byte counts) and the warnings.
"""

from __future__ import annotations

import os
import socket
import warnings

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

import meprop
import meprop.distributed as md

IN, HIDDEN, OUT = 12, 32, 5
STEPS = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(IN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, OUT)
    ).to(torch.float64)


def build(spec: dict) -> nn.Module:
    model = mlp()
    if spec.get("k"):
        model = meprop.convert(model, k=spec["k"], mode=spec.get("mode", "per_example"),
                               sync_selection=spec.get("sync", False),
                               sparse_grad=spec.get("sparse_grad", False))
    return model


def global_batches(batch: int, micro: int = 1, seed: int = 1):
    """STEPS lists of ``micro`` global batches ``(x: (batch, IN), y: (batch,))``."""
    gen = torch.Generator().manual_seed(seed)
    return [[(torch.randn(batch, IN, generator=gen, dtype=torch.float64),
              torch.randint(0, OUT, (batch,), generator=gen)) for _ in range(micro)]
            for _ in range(STEPS)]


def loss_of(model, x, y, penalty: float = 0.0):
    loss = nn.functional.cross_entropy(model(x), y)
    if penalty:
        loss = loss + penalty * sum(m.weight.square().sum() for m in model.modules()
                                    if isinstance(m, meprop.MepropLinear))
    return loss


def _touched_rows(spec, model, x, y) -> list[list[int]]:
    """Rows of each meProp weight a local (no DDP) backward on ``x`` gives a non-zero gradient."""
    twin = build(spec)
    twin.load_state_dict(model.state_dict())
    loss_of(twin, x, y).backward()
    return [m.weight.grad.ne(0).any(1).nonzero().squeeze(1).tolist()
            for m in twin.modules() if isinstance(m, meprop.MepropLinear)]


def train(spec: dict, rank: int, world: int) -> dict:
    model = build(spec)
    ddp = DistributedDataParallel(model)
    state = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if spec.get("hook") == "row":
            state = md.RowSparseState(model, verify=spec.get("verify", False))
            ddp.register_comm_hook(state, md.row_sparse_hook)
        elif spec.get("hook") == "allreduce":
            state = md.RowSparseState()
            ddp.register_comm_hook(state, md.allreduce_hook)
        opt = meprop.optim.Adam(ddp.parameters(), lr=1e-2, lazy=spec.get("lazy", False))
        out = {"touched": None}
        for step, micro_batches in enumerate(global_batches(spec["batch"] * world, spec.get("micro", 1))):
            opt.zero_grad()
            if state is not None:
                if step:
                    out[f"counter_step{step - 1}"] = state.counter.to_dict(world)
                state.counter.reset()
            for index, (x, y) in enumerate(micro_batches):
                shard = slice(rank * spec["batch"], (rank + 1) * spec["batch"])
                if spec.get("micro", 1) == 1 and spec.get("k"):
                    out["touched"] = _touched_rows(spec, model, x[shard], y[shard])
                last = index == len(micro_batches) - 1
                with ddp.no_sync() if not last else _null():
                    loss_of(ddp, x[shard], y[shard], spec.get("penalty", 0.0)).backward()
            if spec.get("clip"):
                torch.nn.utils.clip_grad_norm_(ddp.parameters(), spec["clip"])
            opt.step()
    out["params"] = [p.detach().clone() for p in model.parameters()]
    out["warnings"] = [str(w.message) for w in caught]
    if state is not None:
        out["counter"] = out[f"counter_step{STEPS - 1}"] = state.counter.to_dict(world)
    return out


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def worker(rank: int, world: int, port: int, out_dir: str, scenarios: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for name, spec in scenarios.items():
            try:
                result = train(spec, rank, world)
            except RuntimeError as error:
                result = {"error": str(error)}
            torch.save(result, os.path.join(out_dir, f"{name}-rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def single_process(spec: dict, world: int = 2) -> list[torch.Tensor]:
    """The same training in one process on the concatenated global batches."""
    model = build(spec)
    opt = meprop.optim.Adam(model.parameters(), lr=1e-2, lazy=spec.get("lazy", False))
    for micro_batches in global_batches(spec["batch"] * world, spec.get("micro", 1)):
        opt.zero_grad()
        for x, y in micro_batches:
            loss_of(model, x, y).backward()
        opt.step()
    return [p.detach() for p in model.parameters()]
