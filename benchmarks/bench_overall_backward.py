"""asv: overall backprop of the paper's MLP, dense vs meProp (paper Tables 2 and 8).

The whole ``loss.backward()`` of 784 -> n -> n -> 10 (ReLU, cross-entropy) with meProp on
the two hidden layers and the output layer dense, as in the paper: "Ov. BP".
"""

from . import common
from .common import PairSuite

__all__ = ["OverallBackward"]


class OverallBackward(PairSuite):
    """loss.backward() of the MLP, input (batch, 784), hidden n x 2 layers, 10 classes."""

    workload = "mlp"
    measurement = "overall_backward"

    def setup_cache(self):
        return common.measure_grid(self.workload, self.measurement)

    setup_cache.timeout = common.SETUP_CACHE_TIMEOUT
