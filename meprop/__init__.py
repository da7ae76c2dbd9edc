"""meprop: sparsified back propagation (meProp, Sun et al., ICML 2017) for current PyTorch.

``meprop_linear`` / ``MepropLinear`` compute the forward pass as usual and, in the
backward pass, keep only the top-k entries of each linear layer's output gradient;
``convert(model)`` applies it to the hidden layers of an existing model. The remedies for
meProp's extra steps: unbiased sampled selection (``mode="sampled"``, :mod:`meprop.sampling`),
schedules of k (:mod:`meprop.schedule`), error feedback (:mod:`meprop.error_feedback`),
per-layer k (``convert(model, k={...})``) and the release's options (:mod:`meprop.options`).
"""

from meprop import optim, options, schedule
from meprop.error_feedback import ErrorFeedback
from meprop.functional import meprop_linear
from meprop.lstm import MepropLSTM
from meprop.nn import MepropLinear, convert, sparsified_layers
from meprop.selection import MODES

__version__ = "0.1.0"
__all__ = [
    "meprop_linear", "MepropLinear", "MepropLSTM", "convert", "sparsified_layers", "optim", "options",
    "schedule", "ErrorFeedback", "MODES", "__version__",
]
