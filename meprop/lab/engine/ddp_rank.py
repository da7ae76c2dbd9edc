"""What each rank of a ``ddp_step`` case runs: three DDP training steps, timed interleaved.

The three sides, built on every rank from one seeded model (DDP broadcasts rank 0's
parameters), each wrapped in its own ``DistributedDataParallel`` with a byte-counting hook:

- ``dense``: the ``nn.Linear`` model, ``torch.optim.Adam``, all-reduce
  (:func:`meprop.distributed.allreduce_hook`: torch's default hook plus a byte counter);
- ``meprop_allreduce``: :func:`meprop.convert` (k, mode; unified selection synchronized
  across ranks), ``meprop.optim.Adam`` (the case's ``optimizer``: lazy or exact), all-reduce;
- ``meprop_hook``: the same, with :func:`meprop.distributed.row_sparse_hook`.

A step is the user's loop (as ``train_step``): ``zero_grad()``, forward, loss,
``backward()`` (DDP communicates inside it), ``clip_grad_norm_(1.0)``, ``step()``. Each
rank trains on its own batch of ``case.batch`` examples (random, fixed). Rounds run the
three sides in rotating order, each step after a barrier; a step's time is the slowest
rank's. Rank 0 decides when to stop (the timing budget) and writes the result as JSON.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn as nn

import meprop
import meprop.distributed as md
from meprop.lab.workloads import workload

__all__ = ["SIDES", "TIMEOUT_ENV", "DEFAULT_TIMEOUT_S", "collective_timeout_s", "DdpSide", "rank_main",
           "lockstep_partner", "extra_bytes"]

SIDES = ("dense", "meprop_allreduce", "meprop_hook")
_SEED = 0
_LR = 1e-3
#: The environment variable setting how long a collective waits for the other ranks (seconds).
TIMEOUT_ENV = "MEPROP_DDP_TIMEOUT_S"
#: Its default: generous, as ranks sharing busy cores start and step slowly.
DEFAULT_TIMEOUT_S = 300.0


def collective_timeout_s(environ=None) -> float:
    """Seconds any collective may wait for the other ranks: ``$MEPROP_DDP_TIMEOUT_S``, else
    :data:`DEFAULT_TIMEOUT_S`; a value that is not a positive finite number is refused in one line."""
    raw = (os.environ if environ is None else environ).get(TIMEOUT_ENV)
    if raw is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (0 < value < float("inf")):
        raise ValueError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {raw!r}")
    return value


def _model(case: dict, side: str) -> nn.Module:
    """The case's model, dense or converted (hidden layers; the MLP's output layer dense)."""
    torch.manual_seed(_SEED)
    dtype = getattr(torch, case["dtype"])
    stacked = workload(case["workload"]).stacks_layers
    if not stacked:
        model: nn.Module = nn.Linear(case["in_features"], case["hidden"])
    else:
        from meprop.lab.ops.models import MLP

        model = MLP(case["in_features"], case["hidden"], case["layers"], case["classes"]).net
    model = model.to(dtype)
    if side != "dense":
        model = meprop.convert(model, k=case["k"], mode=case["mode"],
                               sync_selection=case["mode"] == "unified",
                               keep_output_layer=stacked, inplace=True)
    return model


class DdpSide:
    """One side's model, DDP wrapper, optimizer, hook state and data; :meth:`step` is one step."""

    def __init__(self, case: dict, side: str, rank: int) -> None:
        self.model = _model(case, side)
        self.ddp = nn.parallel.DistributedDataParallel(self.model)
        if side == "meprop_hook":
            self.state = md.RowSparseState(self.model)
            self.ddp.register_comm_hook(self.state, md.row_sparse_hook)
        else:
            self.state = md.RowSparseState()
            self.ddp.register_comm_hook(self.state, md.allreduce_hook)
        if side == "dense":
            self.opt = torch.optim.Adam(self.model.parameters(), lr=_LR)
        else:
            self.opt = meprop.optim.Adam(self.model.parameters(), lr=_LR,
                                         lazy=case["optimizer"] == "lazy")
        gen = torch.Generator().manual_seed(1000 + rank)
        dtype = getattr(torch, case["dtype"])
        self.x = torch.randn(case["batch"], case["in_features"], generator=gen).to(dtype)
        if not workload(case["workload"]).stacks_layers:
            target = torch.randn(case["batch"], case["hidden"], generator=gen).to(dtype)
            self.loss = lambda out: nn.functional.mse_loss(out, target)
        else:
            labels = torch.randint(0, case["classes"], (case["batch"],), generator=gen)
            self.loss = lambda out: nn.functional.cross_entropy(out, labels)

    def step(self) -> None:
        self.state.counter.reset()
        self.opt.zero_grad()
        self.loss(self.ddp(self.x)).backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()

    def param_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.model.parameters())


def extra_bytes(case: dict, meprop_rows: list[int], world: int) -> dict[str, float]:
    """Bytes each rank sends per step outside the DDP hook, on the meProp sides only.

    ``selection``: the synchronized unified selection all-reduces each meProp layer's
    ``(n,)`` column sums (float32, float64 for float64 models); ``lazy_rows``: the lazy
    optimizer all-reduces one byte per row of each meProp weight (its touched rows).
    """
    score_bytes = 8 if case["dtype"] == "float64" else 4
    rows = sum(meprop_rows)
    return {
        "selection": md.all_reduce_bytes(rows * score_bytes, world) if case["mode"] == "unified" else 0.0,
        "lazy_rows": md.all_reduce_bytes(rows, world) if case["optimizer"] == "lazy" else 0.0,
    }


def _continue(rank: int, rounds: int, started: float, timing: dict) -> bool:
    """Rank 0's decision, broadcast: another round while under budget or under min samples."""
    go = torch.zeros(1, dtype=torch.int32)
    if rank == 0:
        elapsed = time.perf_counter() - started
        go[0] = int(rounds < timing["max_samples"]
                    and (rounds < timing["min_samples"] or elapsed < timing["budget_s"]))
    dist.broadcast(go, src=0)
    return bool(go[0])


def _timed_rounds(sides: dict, rank: int, timing: dict) -> dict:
    """Per side: the step times (s) and counters of every timed step on this rank."""
    samples = {name: {"times": [], "counters": []} for name in sides}
    rounds, started = 0, time.perf_counter()
    while _continue(rank, rounds, started, timing):
        order = SIDES[rounds % 3:] + SIDES[:rounds % 3]
        for name in order:
            dist.barrier()
            begin = time.perf_counter()
            sides[name].step()
            samples[name]["times"].append(time.perf_counter() - begin)
            samples[name]["counters"].append(sides[name].state.counter.to_dict(dist.get_world_size()))
        rounds += 1
    return samples


def rank_main(rank: int, world: int, port: int, case: dict, timing: dict, out_path: str,
              collective_timeout_s: float, fault: str | None = None) -> None:
    """Entry point of one rank (torch.multiprocessing): run the case, rank 0 writes ``out_path``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(case["threads"])
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=timedelta(seconds=collective_timeout_s))
    try:
        sides = {name: DdpSide(case, name, rank) for name in SIDES}
        for _ in range(2):  # warm-up: DDP builds its buckets, the hook learns the rows
            for side in sides.values():
                side.step()
        if fault == "exit" and rank == world - 1:
            os._exit(3)  # a rank dies mid-run (tests)
        samples = _timed_rounds(sides, rank, timing)
        everyone = [None] * world
        dist.all_gather_object(everyone, samples)
        if rank == 0:
            meprop_rows = [m.weight.shape[0] for m in sides["meprop_hook"].model.modules()
                           if isinstance(m, meprop.MepropLinear)]
            result = {"samples": _slowest_rank(everyone), "param_bytes": sides["dense"].param_bytes(),
                      "extra_bytes": extra_bytes(case, meprop_rows, world)}
            with open(out_path, "w") as handle:
                json.dump(result, handle)
    finally:
        dist.destroy_process_group()


def lockstep_partner(rank: int, world: int, port: int, case: dict, side: str, steps: int,
                     timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """A rank that runs exactly ``steps`` steps of ``side`` (rank 0 being timed elsewhere, and
    running as many: it tops up the steps its timer did not run)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(case["threads"])
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s))
    try:
        partner = DdpSide(case, side, rank)
        for _ in range(steps):
            partner.step()
    finally:
        dist.destroy_process_group()


def _slowest_rank(everyone: list[dict]) -> dict:
    """Each step's time is the slowest rank's; counters are rank 0's (every rank sends alike)."""
    out = {}
    for name in SIDES:
        times = [max(rank[name]["times"][i] for rank in everyone)
                 for i in range(len(everyone[0][name]["times"]))]
        out[name] = {"times": times, "counters": everyone[0][name]["counters"],
                     "median_s": statistics.median(times) if times else None}
    return out
