"""Which nn.Linear layers a model really runs, and in which order: convert()'s safety checks.

``convert()`` replaces ``nn.Linear`` modules by ``MepropLinear``. That sparsifies a layer
only if the model calls the layer's ``forward``. Two traps:

- Some parents use a child's weight directly. ``nn.MultiheadAttention`` passes
  ``out_proj.weight`` to ``F.multi_head_attention_forward`` and never calls ``out_proj``;
  converting it would report meProp where the gradient stays dense
  (:data:`WEIGHT_USING_PARENTS`, checked without running the model).
- "The output layer" is a forward-order notion: a language model may register its head
  before its last projection. :func:`linear_call_order` runs the model once on example
  inputs with forward hooks and returns the linear layers in the order they ran, so the
  last one is the real output layer and layers never called can be left dense.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["WEIGHT_USING_PARENTS", "bypassed_linears", "linear_call_order"]

#: Module types that read their linear children's weights without calling them.
WEIGHT_USING_PARENTS: tuple[type[nn.Module], ...] = (nn.MultiheadAttention,)


def bypassed_linears(model: nn.Module) -> set[str]:
    """Qualified names of nn.Linear modules whose parent uses their weight directly."""
    names = set()
    for parent_name, parent in model.named_modules():
        if isinstance(parent, WEIGHT_USING_PARENTS):
            for child_name, child in parent.named_modules():
                if child_name and isinstance(child, nn.Linear):
                    names.add(f"{parent_name}.{child_name}" if parent_name else child_name)
    return names


def linear_call_order(model: nn.Module, example_inputs) -> list[str]:
    """Names of the nn.Linear modules of ``model`` in the order one forward calls them.

    ``example_inputs``: a tuple of positional inputs (``model(*example_inputs)``), a dict
    of keyword inputs (``model(**example_inputs)``) or one input (``model(example_inputs)``).
    The forward runs under ``torch.no_grad()`` in the model's current train/eval mode;
    buffers (e.g. BatchNorm running statistics) and the random number generators (CPU and
    initialised CUDA devices: dropout draws) are restored afterwards, so the probe leaves
    no trace. A layer called several times is listed at its last call.
    """
    if isinstance(example_inputs, dict):
        args, kwargs = (), example_inputs
    elif isinstance(example_inputs, tuple):
        args, kwargs = example_inputs, {}
    else:
        args, kwargs = (example_inputs,), {}
    order: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            def record(_module, _args, _output, name=name):
                if name in order:
                    order.remove(name)
                order.append(name)
            handles.append(module.register_forward_hook(record))
    saved_buffers = [(b, b.detach().clone()) for b in model.buffers()]
    cuda_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=cuda_devices):
            model(*args, **kwargs)
    except (TypeError, ValueError, RuntimeError) as error:
        raise type(error)(
            f"convert(example_inputs=...): the model's forward failed on them ({error}); "
            f"example_inputs is passed as model(*example_inputs) for a tuple, "
            f"model(**example_inputs) for a dict and model(example_inputs) otherwise"
        ) from error
    finally:
        for handle in handles:
            handle.remove()
        with torch.no_grad():
            for buffer, saved in saved_buffers:
                buffer.copy_(saved)
    return order
