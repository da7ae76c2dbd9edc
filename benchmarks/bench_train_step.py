"""asv: one training step of the paper's MLP, dense vs meProp (Amdahl's law view).

The step a user's loop runs on 784 -> n -> n -> 10: zero_grad, forward, cross-entropy,
backward, clip_grad_norm_(1.0), Adam step; dense torch.optim.Adam vs convert() +
meprop.optim.Adam(lazy=True). :class:`TrainStep` uses Adam's defaults on both sides (what
most loops write); :class:`TrainStepFusedAdam` passes ``fused=True`` to both, torch's
fastest Adam and so the strongest dense baseline.
"""

from . import common
from .common import PairSuite

__all__ = ["TrainStep", "TrainStepFusedAdam"]


class TrainStep(PairSuite):
    """The MLP's training step with torch.optim.Adam's defaults on both sides, input (batch, 784)."""

    workload = "mlp"
    measurement = "train_step"

    def setup_cache(self):
        return common.measure_grid(self.workload, self.measurement)

    setup_cache.timeout = common.SETUP_CACHE_TIMEOUT


class TrainStepFusedAdam(PairSuite):
    """The same step with ``fused=True`` on both sides' Adam (n/a on commits without the option)."""

    workload = "mlp"
    measurement = "train_step"
    case_fields = {"adam": "fused"}

    def setup_cache(self):
        return common.measure_grid(self.workload, self.measurement, **self.case_fields)

    setup_cache.timeout = common.SETUP_CACHE_TIMEOUT
