"""asv: the training step of the paper's POS LSTM and of a GPT-2-style transformer block.

Each class has its own grid (the shapes these models are used at), not the shared one:
the LSTM at h=500, one sentence of 25 tokens, k among its 2000 gate entries (Tables 1-2);
the block at d=512, 8 sequences of 64 tokens. Dense: nn.LSTM / the block with
torch.optim.Adam; meProp: MepropLSTM / convert() with meprop.optim.Adam(lazy=True).
"""

from . import common
from .common import PairSuite

__all__ = ["LstmStep", "TransformerStep"]


class LstmStep(PairSuite):
    """The POS tagger's training step: embeddings (100) -> LSTM h -> 45-way head, batch in sentences."""

    workload = "lstm"
    measurement = "train_step"
    params = [[500], [0.0025, 0.01], [1], ["per_example"], ["cpu"]]

    def setup_cache(self):
        return common.measure_grid(self.workload, self.measurement, self.params)

    setup_cache.timeout = common.SETUP_CACHE_TIMEOUT


class TransformerStep(PairSuite):
    """One GPT-2-style pre-LN block (d, 4d MLP, heads of 64): zero_grad, forward, backward, clip, step."""

    workload = "transformer"
    measurement = "train_step"
    params = [[512], [0.04, 0.1], [8], ["unified", "per_example"], ["cpu"]]

    def setup_cache(self):
        return common.measure_grid(self.workload, self.measurement, self.params)

    setup_cache.timeout = common.SETUP_CACHE_TIMEOUT
