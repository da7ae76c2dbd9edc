"""asv: linear-only backprop of one n x n layer, dense vs meProp (paper Table 1 and Table 7).

The backward of the linear layer alone for a fixed output gradient dy: (batch, n),
computing grad_input, grad_weight and grad_bias: the paper's "backprop time". The ideal
speedup is n / k.
"""

from . import common
from .common import PairSuite

__all__ = ["LinearBackward"]


class LinearBackward(PairSuite):
    """Backward of a single linear layer, dy: (batch, n) -> dx: (batch, n), dW: (n, n)."""

    workload = "linear"
    measurement = "linear_backward"

    def setup_cache(self):
        return common.measure_grid(self.workload, self.measurement)

    setup_cache.timeout = common.SETUP_CACHE_TIMEOUT
