"""asv: a DistributedDataParallel training step on 2 local processes, dense vs meProp.

The ``ddp_step`` measurement of ``meprop bench`` (:func:`meprop.lab.engine.ddp.run_ddp_case`, gloo
on 127.0.0.1, processes started by the suite): dense DDP, meProp with all-reduce and meProp
with :func:`meprop.distributed.row_sparse_hook`, timed interleaved, on the MLP
784-1024-1024-10, k=10, batch 64 per rank, 1 thread per rank; unified selection is
synchronized across ranks. ``track_step`` gives each side's step time, ``track_bytes`` the
bytes each rank sends per step (a ratio to dense, lower is better, like every asv value).
"""

from . import common

__all__ = ["DdpStep"]

_SIDES = ["dense", "meprop_allreduce", "meprop_hook"]
_MODES = ["per_example", "unified"]


def _measure(mode: str) -> dict:
    try:  # a commit without the measurement: n/a
        from meprop.lab.plan.cases import Case
        from meprop.lab.engine.ddp import run_ddp_case
        from meprop.lab.engine.runner import TimingOptions
    except ImportError as error:
        return {"skipped": f"no ddp_step measurement on this commit ({error})"}

    case = Case("mlp", "ddp_step", hidden=1024, k=10, batch=64, mode=mode, threads=1, world_size=2)
    fields = run_ddp_case(case, TimingOptions(budget_s=max(common.BUDGET_S, 2.0), min_samples=5))
    if fields.get("status") == "skipped":
        return {"skipped": fields["reason"]}
    return fields["ddp"]["sides"]


class DdpStep:
    """DDP step of the MLP on 2 ranks: seconds per step and bytes per rank, per side."""

    params = [_MODES, _SIDES]
    param_names = ["mode", "side"]
    timeout = 900

    def setup_cache(self):
        return {mode: _measure(mode) for mode in _MODES}

    setup_cache.timeout = common.SETUP_CACHE_TIMEOUT

    def setup(self, results, mode, side):
        sides = results[mode]
        if "skipped" in sides:
            raise NotImplementedError(sides["skipped"])
        self.side, self.dense = sides[side], sides["dense"]

    def track_step(self, results, mode, side):
        return self.side["timing"]["median_s"]

    track_step.unit = "seconds"

    def track_bytes(self, results, mode, side):
        return self.side["sent_bytes_total"] / self.dense["sent_bytes_total"]

    track_bytes.unit = "ratio (bytes sent per rank and step / dense DDP's)"
