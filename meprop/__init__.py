"""meprop: sparsified back propagation (meProp, Sun et al., ICML 2017) for current PyTorch.

``meprop_linear`` / ``MepropLinear`` compute the forward pass as usual and, in the
backward pass, keep only the top-k entries of each linear layer's output gradient;
``convert(model)`` applies it to the hidden layers of an existing model.
"""

from meprop import optim
from meprop.functional import meprop_linear
from meprop.lstm import MepropLSTM
from meprop.nn import MepropLinear, convert, sparsified_layers
from meprop.selection import MODES

__version__ = "0.1.0"
__all__ = ["meprop_linear", "MepropLinear", "MepropLSTM", "convert", "sparsified_layers", "optim", "MODES", "__version__"]
