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

    ``example_inputs``: a tensor or a tuple of positional inputs. The forward runs under
    ``torch.no_grad()`` in the model's current train/eval mode; buffers (e.g. BatchNorm
    running statistics) are restored afterwards, so the probe leaves no trace. A layer
    called several times is listed at its last call.
    """
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
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
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
        with torch.no_grad():
            for buffer, saved in saved_buffers:
                buffer.copy_(saved)
    return order
