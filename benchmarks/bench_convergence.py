"""asv: convergence across commits, a short MNIST time-to-accuracy run (meprop.lab.converge.loop).

The paper's MNIST MLP (h=500, 2 hidden layers, batch 10, Adam, 1 thread) on the first
5,000 training and dev images: dense, meProp k=20 with the exact Adam and with the lazy
Adam, trained side by side from the same weights on the same data order for one epoch
(500 steps), evaluated every 50 steps. Tracked per variant:

- ``track_steps_to_target``: X
  n/a, when not reached within the epoch) — a commit that slows convergence raises it;
- ``track_final_dev``: dev accuracy after the epoch (unit ``%``).

A few tens of seconds of CPU in ``setup_cache``; asv's lower-is-better reading applies to
the steps, higher-is-better to the accuracy (``asv compare`` flags both directions).
Commits without the time-to-accuracy runner or without MNIST are n/a.
"""

from __future__ import annotations

import math

__all__ = ["Convergence"]

_VARIANTS = ("dense", "meProp k=20", "meProp k=20 (lazy Adam)")
_TARGET = 40.0


def _measure() -> dict:
    try:
        from meprop.lab.paper import data
        from meprop.lab.converge.paper_workload import PaperWorkload
        from meprop.lab.converge.loop import RunConfig, Variant, converge
        from meprop.lab.converge.time_to_target import Target, outcomes
        from meprop.lab.paper.train import TrainConfig
        data.mnist_path()
    except (ImportError, FileNotFoundError) as error:
        return {"unavailable": str(error)}

    class Collect:
        def __init__(self):
            self.records = []

        def write(self, record):
            self.records.append(record)

    config = TrainConfig(task="mnist", hidden=500, layers=2, batch=10, optimizer="adam", threads=1, limit=5000)
    workload = PaperWorkload("mnist-asv", config, lambda: data.load_mnist(limit=5000))
    variants = (Variant(_VARIANTS[0]), Variant(_VARIANTS[1], k=20), Variant(_VARIANTS[2], k=20, optimizer_mode="lazy"))
    writer = Collect()
    converge(workload, variants, RunConfig(max_steps=500, eval_every=50, target=Target(absolute=_TARGET), seed=1),
             writer=writer, say=lambda *_: None)
    return {o.label: {"steps": o.steps, "final": o.final} for o in outcomes(writer.records)}


class Convergence:
    """Steps to 40% dev and final dev accuracy of a 500-step MNIST run, per variant."""

    params = [list(_VARIANTS)]
    param_names = ["variant"]
    timeout = 600

    def setup_cache(self):
        return _measure()

    setup_cache.timeout = 600

    def setup(self, cache, variant):
        if "unavailable" in cache:
            raise NotImplementedError(cache["unavailable"])

    def track_steps_to_target(self, cache, variant):
        steps = cache[variant]["steps"]
        return math.nan if steps is None else float(steps)

    track_steps_to_target.unit = "steps"

    def track_final_dev(self, cache, variant):
        final = cache[variant]["final"]
        return math.nan if final is None else float(final)

    track_final_dev.unit = "%"
