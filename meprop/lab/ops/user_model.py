"""The ``model`` workload: a user's own model, ``meprop bench --model module:factory``.

``factory()`` returns ``(model, inputs)``: an ``nn.Module`` and the input tensors of one batch
(a tuple, or one tensor). It is called once per variant under the same seed, so dense and
meProp start from the same weights if the factory draws them from torch's generator. The
measured loss is the model's output when that is a scalar, else the mean of its squared
output. meProp goes on through :func:`meprop.convert` with ``example_inputs``: the output
layer (the last linear layer called) stays dense, layers never called stay dense (with a
warning). ``k`` counts against the widest linear layer (the case's ``hidden``, set from the
model by :func:`widest_linear`); every converted layer keeps that fraction of its outputs
(``k_ratio = k / hidden``), as the transformer workload does for its 3d and 4d layers.
``module`` is an importable module (the current directory is on the path) or a ``.py`` file.
``linear_backward`` is not defined for an arbitrary model and is reported as unsupported.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from meprop.lab.ops.model_ops import SEED, Unsupported, model_op
from meprop.nn import convert
from meprop.lab.measurements import measurement

__all__ = ["UserModelError", "load_factory", "build_user_model", "widest_linear", "loss_of_output",
           "build_user_model_case",
           "build_model_case"]


class UserModelError(ValueError):
    """``--model`` names something that is not a usable ``module:factory``; the message says why."""


def load_factory(spec: str) -> Callable[[], tuple]:
    """The callable named by ``plan`` (``"module:factory"`` or ``"path/file.py:factory"``)."""
    module_name, _, attribute = spec.rpartition(":") if isinstance(spec, str) else ("", "", "")
    if not module_name or not attribute:
        raise UserModelError(f"--model must be 'module:factory' (e.g. 'mymodels:make_model'), got {spec!r}")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise UserModelError(f"--model {spec!r}: file {module_name!r} does not exist")
            loader = importlib.util.spec_from_file_location(f"_meprop_user_{path.stem}", path)
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_name)
    except UserModelError:
        raise
    except Exception as error:  # the user's module failed to import: say which and why
        raise UserModelError(f"--model {spec!r}: cannot import {module_name!r}: "
                             f"{type(error).__name__}: {error}") from error
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise UserModelError(f"--model {spec!r}: {module_name!r} has no callable {attribute!r}")
    return factory


def build_user_model(spec: str) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Call the factory of ``plan``; check it returned ``(model, inputs)``."""
    result = load_factory(spec)()
    if not (isinstance(result, tuple) and len(result) == 2):
        raise UserModelError(f"--model {spec!r}: the factory must return (model, inputs), "
                             f"got {type(result).__name__}")
    model, inputs = result
    if not isinstance(model, nn.Module):
        raise UserModelError(f"--model {spec!r}: the model must be an nn.Module, got {type(model).__name__}")
    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else inputs
    if not isinstance(inputs, tuple) or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise UserModelError(f"--model {spec!r}: inputs must be a tensor or a tuple of tensors")
    return model, inputs


def widest_linear(spec: str) -> int:
    """The largest ``out_features`` of the model's ``nn.Linear`` layers (the case's ``hidden``)."""
    model, _ = build_user_model(spec)
    widths = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
    if not widths:
        raise UserModelError(f"--model {spec!r}: the model has no nn.Linear layer for meProp")
    return max(widths)


def loss_of_output(output) -> torch.Tensor:
    """The measured loss: a scalar output as it is, else the mean of its squared output."""
    if not isinstance(output, torch.Tensor):
        raise UserModelError(f"the model's output must be a tensor, got {type(output).__name__}")
    return output if output.dim() == 0 else output.float().pow(2).mean()


def build_model_case(case, variant: str, *, seed: int, unsupported: type[Exception]) -> Callable[[], None]:
    """One measured operation of a ``model`` case (see :func:`meprop.lab.ops.build.build`)."""
    if measurement(case.measurement).linear_layers_only:
        raise unsupported("linear_backward is not defined for a user model: measure forward, "
                          "overall_backward or train_step")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, inputs = build_user_model(case.model)
    model = model.to(case.device)
    inputs = tuple(t.to(case.device) for t in inputs)
    step = measurement(case.measurement).steps_optimizer
    if variant == "meprop":
        model = convert(model, k_ratio=min(1.0, case.k / case.hidden), mode=case.mode,
                        sparse_grad=not step, example_inputs=inputs, inplace=True)
    model.train()

    return model_op(case, variant, model, lambda: model(*inputs), lambda: loss_of_output(model(*inputs)))


def build_user_model_case(case, variant: str) -> Callable[[], None]:
    """The workload registry's builder: :func:`build_model_case` with the engine's seed."""
    return build_model_case(case, variant, seed=SEED, unsupported=Unsupported)
