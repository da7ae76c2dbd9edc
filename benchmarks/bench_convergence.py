"""asv: convergence across commits, a short MNIST time-to-accuracy run over two paired seeds.

The paper's MNIST MLP (h=500, 2 hidden layers, batch 10, Adam, 1 thread) on the first
5,000 training and dev images: dense (torch's fastest Adam), meProp k=20 with the exact
Adam and with the lazy Adam, trained side by side from the same weights on the same data
order for one epoch (500 steps), evaluated every 50 steps, seeds 1 and 2. Tracked per
variant, over the seeds (:func:`meprop.lab.converge.study.summarize`, the statistics of
:mod:`meprop.lab.results.stats`, as the CLI table and the report):

- ``track_steps_to_target``: median steps to 40% dev (n/a when not reached on at least
  half the seeds) — a commit that slows convergence raises it;
- ``track_time_to_target_speedup``: the median paired time-to-target speedup over dense
  (0 when the variant did not reach; dense n/a);
- ``track_final_dev``: median best dev accuracy (unit ``%``).

A minute of CPU in ``setup_cache``; asv's lower-is-better reading applies to the steps,
higher-is-better to the others (``asv compare`` flags both directions). Commits without the
time-to-accuracy runner or without MNIST are n/a.
"""

from __future__ import annotations

import math

__all__ = ["Convergence"]

_VARIANTS = ("dense", "meProp k=20", "meProp k=20 (lazy Adam)")
_TARGET = 40.0
_SEEDS = (1, 2)


def _measure() -> dict:
    try:
        from meprop.lab.paper import data
        from meprop.lab.converge.paper_workload import PaperWorkload
        from meprop.lab.converge.loop import RunConfig, Variant, converge
        from meprop.lab.converge.study import summarize
        from meprop.lab.converge.time_to_target import Target
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
    for seed in _SEEDS:
        converge(workload, variants, RunConfig(max_steps=500, eval_every=50, target=Target(absolute=_TARGET),
                                               seed=seed, study="asv"), writer=writer, say=lambda *_: None)
    summary, = summarize(writer.records)
    return {arm.arm: {"steps": arm.steps["median"], "speedup": (arm.speedup or {}).get("median"),
                      "final": arm.best} for arm in summary.arms[0]}


def _number(value) -> float:
    return math.nan if value is None or not math.isfinite(value) else float(value)


class Convergence:
    """Median steps to 40% dev, speedup and best dev accuracy over two seeds, per variant."""

    params = [list(_VARIANTS)]
    param_names = ["variant"]
    timeout = 900

    def setup_cache(self):
        return _measure()

    setup_cache.timeout = 900

    def setup(self, cache, variant):
        if "unavailable" in cache:
            raise NotImplementedError(cache["unavailable"])

    def track_steps_to_target(self, cache, variant):
        return _number(cache[variant]["steps"])

    track_steps_to_target.unit = "steps"

    def track_time_to_target_speedup(self, cache, variant):
        return _number(cache[variant].get("speedup"))

    track_time_to_target_speedup.unit = "x"

    def track_final_dev(self, cache, variant):
        return _number(cache[variant]["final"])

    track_final_dev.unit = "%"
