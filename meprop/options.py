"""Training choices of the authors' release as named library options: the bias gradient, the initialisation.

The paper's code made two choices beyond Section 2 that change how meProp trains:

- **the bias gradient** (``bias_grad``, :data:`BIAS_GRADS`): ``"sparse"`` sums the kept
  output-gradient entries only (a unit no example kept gets no bias gradient: the bias
  follows the same sparsity as the weight rows); ``"dense"`` sums the full output gradient,
  as both of the authors' implementations do. Dense costs one column sum. Accepted by :func:`meprop.meprop_linear`,
  :class:`meprop.MepropLinear`, :func:`meprop.convert` and :class:`meprop.MepropLSTM`.
- **the initialisation** (``init``, :data:`INITS`, applied by :func:`initialise`):
  ``"torch"``: ``nn.Linear``'s own, ``uniform(±1/sqrt(in_features))`` (left untouched);
  ``"release"``: the authors' PyTorch release, weights and biases
  ``uniform(±1/sqrt(out_features))`` (a 500 -> 10 output layer starts about 7x larger);
  ``"glorot"``: the authors' C# code, Glorot-normal weights and zero biases.

:data:`RELEASE` gathers the release's choices: ``convert(model, k=..., **meprop.options.RELEASE)``
and ``initialise(model, "release")`` train as the authors' code does.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from meprop.checks import check_choice

__all__ = ["BIAS_GRADS", "INITS", "RELEASE", "initialise"]

#: Accepted values of ``bias_grad``.
BIAS_GRADS = ("sparse", "dense")

#: Accepted values of ``init`` (:func:`initialise`).
INITS = ("torch", "release", "glorot")

#: The release's layer options, for ``convert(model, k=..., **RELEASE)`` or MepropLinear.
RELEASE = {"bias_grad": "dense"}


@torch.no_grad()
def initialise(module: nn.Module, init: str) -> nn.Module:
    """Re-initialise every ``nn.Linear`` of ``module`` (MepropLinear included) by ``init`` (:data:`INITS`).

    Draws from torch's global generator, layer by layer in ``module.modules()`` order.
    ``"torch"`` leaves the weights as they are. Returns ``module``.
    """
    check_choice(init, "init", INITS)
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    for layer in module.modules():
        if not isinstance(layer, nn.Linear) or init == "torch":
            continue
        if init == "release":
            bound = layer.out_features ** -0.5
            layer.weight.uniform_(-bound, bound)
            if layer.bias is not None:
                layer.bias.uniform_(-bound, bound)
        else:
            nn.init.xavier_normal_(layer.weight)
            if layer.bias is not None:
                layer.bias.zero_()
    return module
