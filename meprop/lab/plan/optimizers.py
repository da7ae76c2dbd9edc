"""The optimizer axis of a training-step case: meProp's own optimizer, or a torch optimizer on both sides.

A case's ``optimizer`` is one of:

- ``lazy`` / ``exact``: dense ``torch.optim.Adam`` against ``meprop.optim.Adam(lazy=True)``
  (the fast path) or ``(lazy=False)`` (torch.optim's algorithm on meProp's gradients); the
  case's ``adam`` field picks torch's Adam implementation on both sides;
- ``torch:<name>:<impl>``: the same torch optimizer on both sides, as a user who converts a
  model and keeps the optimizer they have: ``<name>`` one of :data:`TORCH_OPTIMIZERS` (``sgdm``
  is SGD with momentum 0.9), ``<impl>`` ``default`` (the constructor's defaults), ``foreach``
  or ``fused`` where torch has it (:data:`TORCH_IMPLS`).

:func:`torch_optimizer` reads such a name; :func:`optimizer_label` names it in the report.
"""

from __future__ import annotations

__all__ = ["MEPROP_OPTIMIZER_MODES", "TORCH_OPTIMIZERS", "TORCH_IMPLS", "TORCH_OPTIMIZER_NAMES",
           "OPTIMIZER_CHOICES", "torch_optimizer", "torch_optimizer_name", "optimizer_label"]

#: meProp's own optimizer on the meProp side (dense: torch.optim.Adam).
MEPROP_OPTIMIZER_MODES = ("lazy", "exact")
#: short name -> (torch.optim class name, keyword arguments besides the learning rate)
TORCH_OPTIMIZERS = {
    "sgd": ("SGD", {}),
    "sgdm": ("SGD", {"momentum": 0.9}),
    "adam": ("Adam", {}),
    "adamw": ("AdamW", {}),
    "adagrad": ("Adagrad", {}),
    "rmsprop": ("RMSprop", {}),
}
#: short name -> the implementations torch has for it on the CPU
TORCH_IMPLS = {name: ("default", "foreach") if name == "rmsprop" else ("default", "foreach", "fused")
               for name in TORCH_OPTIMIZERS}
_PREFIX = "torch:"


def torch_optimizer_name(name: str, impl: str = "default") -> str:
    """``torch:<name>:<impl>``, checked."""
    if name not in TORCH_OPTIMIZERS:
        raise ValueError(f"torch optimizer must be one of {', '.join(TORCH_OPTIMIZERS)}, got {name!r}")
    if impl not in TORCH_IMPLS[name]:
        raise ValueError(f"implementation of torch optimizer {name!r} must be one of "
                         f"{', '.join(TORCH_IMPLS[name])}, got {impl!r}")
    return f"{_PREFIX}{name}:{impl}"


#: Every torch optimizer arm, ``torch:<name>:<impl>``.
TORCH_OPTIMIZER_NAMES = tuple(torch_optimizer_name(n, i) for n in TORCH_OPTIMIZERS for i in TORCH_IMPLS[n])
#: Every value a case's ``optimizer`` accepts.
OPTIMIZER_CHOICES = MEPROP_OPTIMIZER_MODES + TORCH_OPTIMIZER_NAMES


def torch_optimizer(optimizer: str) -> tuple[str, dict, str, str] | None:
    """``(class name, keyword arguments, short name, impl)`` of a ``torch:`` optimizer; None for lazy/exact."""
    if not optimizer.startswith(_PREFIX):
        return None
    name, _, impl = optimizer[len(_PREFIX):].partition(":")
    torch_optimizer_name(name, impl)  # checked
    cls, kwargs = TORCH_OPTIMIZERS[name]
    flag = {"foreach": {"foreach": True}, "fused": {"fused": True}}.get(impl, {})
    return cls, {**kwargs, **flag}, name, impl


def optimizer_label(optimizer: str, adam: str = "default") -> str:
    """How the report names the meProp side's optimizer: ``torch.optim.AdamW(foreach=True)``,
    ``meprop.optim.Adam(lazy=True, fused=True)``."""
    spec = torch_optimizer(optimizer)
    if spec is None:
        args = [f"lazy={optimizer == 'lazy'}"] + (["fused=True"] if adam == "fused" else [])
        return f"meprop.optim.Adam({', '.join(args)})"
    cls, kwargs, _, _ = spec
    return f"torch.optim.{cls}({', '.join(f'{k}={v}' for k, v in kwargs.items())})"
