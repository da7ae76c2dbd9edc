"""pytest-benchmark: one DDP training step at world size 2, dense vs meProp with the row hook.

The test process is rank 0 (gloo on 127.0.0.1) and is timed; a spawned partner process is
rank 1 and runs a fixed number of steps (pytest-benchmark's ``pedantic`` rounds). Rank 0
counts the steps pytest-benchmark ran (one under ``--benchmark-disable``) and runs the rest
untimed, so the ranks agree in every mode. Collectives wait ``$MEPROP_DDP_TIMEOUT_S``
(default 300 s: two ranks on busy cores start slowly). The sides are :class:`meprop.lab.engine.ddp_rank.DdpSide`, the ones
``meprop bench --measurement ddp_step`` times: dense DDP + torch.optim.Adam, and meProp
(synchronized unified selection for ``unified``) + meprop.optim.Adam(lazy=True) +
:func:`meprop.distributed.row_sparse_hook`. ``extra_info`` carries the bytes rank 0 sent
in its last step. The case is small (784-256-256-10, k=8, batch 32 per rank).
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from meprop.lab.plan.cases import Case
from meprop.lab.engine.ddp_rank import DdpSide, collective_timeout_s, lockstep_partner

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo")]

WORLD = 2
SIDE_OF_VARIANT = {"dense": "dense", "meprop": "meprop_hook"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("mode", ["per_example", "unified"])
def test_ddp_step(benchmark, request, variant, mode):  # variant: dense, meprop (conftest)
    case = Case("mlp", "ddp_step", hidden=256, k=8, batch=32, mode=mode, threads=1, world_size=WORLD)
    spec = case.to_dict()
    rounds, warmup = (10, 2) if request.config.getoption("benchmark_only") else (2, 1)
    port = _free_port()
    side_name = SIDE_OF_VARIANT[variant]
    timeout_s = collective_timeout_s()
    partner = mp.get_context("spawn").Process(
        target=lockstep_partner, args=(1, WORLD, port, spec, side_name, rounds + warmup, timeout_s))
    partner.start()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=0, world_size=WORLD, timeout=timedelta(seconds=timeout_s))
    try:
        with torch.random.fork_rng(devices=[]):
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                side = DdpSide(spec, side_name, 0)
                steps = []

                def step() -> None:
                    side.step()
                    steps.append(1)

                benchmark.group = case.key
                benchmark.pedantic(step, rounds=rounds, iterations=1, warmup_rounds=warmup)
                for _ in range(rounds + warmup - len(steps)):  # the steps pytest-benchmark did not run
                    side.step()
            finally:
                torch.set_num_threads(threads)
        benchmark.extra_info.update({"variant": variant, "case": spec, "key": case.key,
                                     "ddp_side": side_name,
                                     "sent_bytes_per_rank": side.state.counter.sent_bytes(WORLD)})
    finally:
        dist.destroy_process_group()
        partner.join(timeout=timeout_s)
        if partner.is_alive():
            partner.kill()
    assert partner.exitcode == 0
    dense_bytes = 2 * (WORLD - 1) / WORLD * side.param_bytes()
    sent = benchmark.extra_info["sent_bytes_per_rank"]
    assert sent == dense_bytes if variant == "dense" else sent < dense_bytes
