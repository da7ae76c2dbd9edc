"""asv: forward pass of one n x n linear layer, dense vs meProp (paper Section 2, Table 7 shapes).

meProp changes only the backward pass, so the speedup here should stay near 1: this is
the control that shows the forward is not slowed down. Values are tracked from one
interleaved measurement per case (see ``common.py``).
"""

from . import common
from .common import PairSuite

__all__ = ["Forward"]


class Forward(PairSuite):
    """Training-mode forward of a single linear layer, input (batch, n) -> (batch, n)."""

    workload = "linear"
    measurement = "forward"

    def setup_cache(self):
        return common.measure_grid(self.workload, self.measurement)

    setup_cache.timeout = common.SETUP_CACHE_TIMEOUT
