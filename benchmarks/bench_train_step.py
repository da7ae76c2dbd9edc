"""asv: one training step of the paper's MLP, dense vs meProp (Amdahl's law view).

Forward + loss + backward + SGD step on 784 -> n -> n -> 10: the end-to-end speedup a
user sees, bounded by the parts meProp does not shrink (forward, update).
"""

from . import common
from .common import PairSuite

__all__ = ["TrainStep"]


class TrainStep(PairSuite):
    """Forward, loss.backward() and optimizer.step() of the MLP, input (batch, 784)."""

    workload = "mlp"
    measurement = "train_step"

    def setup_cache(self):
        return common.measure_grid(self.workload, self.measurement)

    setup_cache.timeout = common.SETUP_CACHE_TIMEOUT
