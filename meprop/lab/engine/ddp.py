"""The ``ddp_step`` measurement: a training step under DistributedDataParallel, three sides.

``meprop bench --measurement ddp_step --workload mlp --world-size N`` starts N processes
itself (``torch.multiprocessing``, gloo on 127.0.0.1, a free port) that each run
:func:`meprop.lab.engine.ddp_rank.rank_main`: dense DDP, meProp with all-reduce and meProp with
:func:`meprop.distributed.row_sparse_hook`, timed interleaved (unified selection is
synchronized across ranks, ``sync_selection=True``). The record's ``dense`` timing is dense
DDP, its ``meprop`` timing meProp with the hook (so ``speedup`` is dense / hook); the
``ddp`` object carries all three sides with the bytes each rank sends per step:

- ``sent_bytes``: counted by the side's hook from the tensors it hands to collectives,
  priced with the ring model (all-reduce ``2(W-1)/W`` x payload, all-gather ``(W-1)`` x
  payload); ``payload_ok``: that payload equals the one the parameters' shapes (and, for
  the row hook, the exchanged row counts) give;
- ``sent_bytes_total``: plus what meProp sends outside the hook (the synchronized
  selection's column sums, the lazy optimizer's row flags: :func:`~meprop.lab.engine.ddp_rank.extra_bytes`);
- ``bytes_ratio``: dense's total over the side's total;
- ``hook_vs_allreduce_paired``: the per-round ratio of meProp + all-reduce's step to meProp
  + hook's (both are timed in every round, in rotating order): median, IQR, 95% interval
  (:func:`meprop.lab.results.stats.paired_ratios`).

Faults: every collective has a timeout (``$MEPROP_DDP_TIMEOUT_S``, default 300 s:
:func:`meprop.lab.engine.ddp_rank.collective_timeout_s`), and the case has a
time limit (:data:`CASE_LIMIT_S`); a rank that dies, a timeout or the limit end the case
as a ``skipped`` record whose reason starts with ``ddp_step failed``. A world size above
the machine's cores runs, with a note in the record.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import tempfile
import time

from meprop.lab.results import schema
from meprop.lab.results.stats import paired_ratios

__all__ = ["CASE_LIMIT_S", "run_ddp_case", "summarize"]

#: Seconds a whole ``ddp_step`` case may take (start, warm-up, timing) before it is stopped.
CASE_LIMIT_S = 600.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_ddp_case(case, options, *, limit_s: float = CASE_LIMIT_S,
                 collective_timeout_s: float | None = None, fault: str | None = None) -> dict:
    """Run ``case`` (measurement ``ddp_step``) on ``case.world_size`` local processes.

    Returns the fields of its bench record (:func:`meprop.lab.engine.runner.case_record`).
    ``collective_timeout_s`` None: :func:`~meprop.lab.engine.ddp_rank.collective_timeout_s`.
    ``fault="exit"`` makes the last rank die after the warm-up (for tests).
    """
    import torch.multiprocessing as mp

    from meprop.lab.engine.ddp_rank import collective_timeout_s as default_timeout, rank_main

    if collective_timeout_s is None:
        collective_timeout_s = default_timeout()
    world = case.world_size
    threads = case.threads or 1
    spec = dict(case.to_dict(), threads=threads)
    timing = {"budget_s": options.budget_s, "min_samples": options.min_samples,
              "max_samples": options.max_samples}
    with tempfile.TemporaryDirectory(prefix="meprop-ddp-") as folder:
        out_path = os.path.join(folder, "rank0.json")
        started = time.monotonic()
        try:
            context = mp.start_processes(
                rank_main, args=(world, _free_port(), spec, timing, out_path, collective_timeout_s, fault),
                nprocs=world, join=False, start_method="spawn")
            while not context.join(timeout=1.0):
                if time.monotonic() - started > limit_s:
                    for process in context.processes:
                        if process.is_alive():
                            process.kill()
                    return _failed(f"exceeded the case's time limit of {limit_s:g} s")
        except Exception as error:  # a rank raised or died: torch terminated the others
            return _failed(str(error).strip().splitlines()[-1][:300] if str(error).strip() else repr(error))
        with open(out_path) as handle:
            result = json.load(handle)
    return summarize(result, world, threads)


def _failed(reason: str) -> dict:
    return dict(status="skipped", reason=f"ddp_step failed: {reason}")


def _measurement(times: list[float]):
    from meprop.lab.engine.timer import Measurement

    return Measurement(tuple(times)) if times else None


def _side_summary(side: str, data: dict, param_bytes: int, extra: dict, world: int) -> dict:
    counters = data["counters"]
    sent = [c["sent_bytes"] for c in counters]
    payload_ok = all(c["all_reduce_payload"] + c["all_gather_payload"] + c["flag_payload"]
                     == c["planned_payload"] for c in counters)
    if side != "meprop_hook":  # all-reduce: the whole model, every step
        payload_ok = payload_ok and all(c["all_reduce_payload"] == param_bytes for c in counters)
    outside = sum(extra.values()) if side != "dense" else 0.0
    median_sent = statistics.median(sent) if sent else None
    return {
        "timing": None if not data["times"] else _measurement(data["times"]).to_dict(),
        "sent_bytes": median_sent, "sent_bytes_min": min(sent, default=None),
        "sent_bytes_max": max(sent, default=None),
        "sent_bytes_total": None if median_sent is None else median_sent + outside,
        "payload_ok": payload_ok,
        "forms": counters[-1]["forms"] if counters else None,
        "weights": counters[-1]["weights"] if counters else None,
        "rows_sent": statistics.median([c["rows_sent"] for c in counters]) if counters else None,
    }


def summarize(result: dict, world: int, threads: int) -> dict:
    """The record fields from rank 0's result (see the module docstring)."""
    extra = result["extra_bytes"]
    sides = {name: _side_summary(name, data, result["param_bytes"], extra, world)
             for name, data in result["samples"].items()}
    dense_total = sides["dense"]["sent_bytes_total"]
    cores = os.cpu_count() or 1
    note = None
    if world * threads > cores:
        note = (f"{world} ranks x {threads} thread(s) on {cores} CPU core(s): the ranks share "
                f"cores, so step times include waiting for a core")
    hook_t = (sides["meprop_hook"]["timing"] or {}).get("median_s")
    allreduce_t = (sides["meprop_allreduce"]["timing"] or {}).get("median_s")
    ddp = {
        "world_size": world, "threads_per_rank": threads, "cpu_count": cores, "note": note,
        "backend": "gloo", "address": "127.0.0.1", "param_bytes": result["param_bytes"],
        "byte_model": "ring: all-reduce 2(W-1)/W x payload, all-gather (W-1) x payload, per rank",
        "extra_bytes": extra, "sides": sides,
        "bytes_ratio": {name: (dense_total / s["sent_bytes_total"] if s["sent_bytes_total"] else None)
                        for name, s in sides.items() if name != "dense"},
        "hook_vs_allreduce_speedup": schema.speedup_of(allreduce_t, hook_t),
        "hook_vs_allreduce_paired": paired_ratios(result["samples"]["meprop_allreduce"]["times"],
                                                 result["samples"]["meprop_hook"]["times"]),
    }
    samples = result["samples"]
    return dict(dense=_measurement(samples["dense"]["times"]),
                meprop=_measurement(samples["meprop_hook"]["times"]), ddp=ddp)
