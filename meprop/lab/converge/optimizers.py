"""The optimizers of a time-to-accuracy run: each arm gets the fastest implementation it can use.

A fair comparison pits meProp against the strongest dense baseline, so:

- dense trains with torch's fastest implementation of its optimizer on the device:
  ``fused=True`` where torch supports it there (Adam and AdaGrad on CPU and CUDA in recent
  torch), else ``foreach=True``, else the per-parameter loop;
- meProp with the exact optimizer gets the same implementation (its gradients are dense
  tensors with zero rows, which the fused kernels take);
- meProp with the lazy optimizer gets :class:`meprop.optim.Adam` ``(lazy=True)``.

:func:`make_optimizer` returns the optimizer and the name of its implementation, which the
records carry (``optimizer_impl``). Whether an implementation works on a device is found by
one step on a throwaway parameter, remembered per (optimizer, device).
"""

from __future__ import annotations

import torch

import meprop.optim

__all__ = ["make_optimizer", "implementation", "IMPLEMENTATIONS"]

_CLASSES = {"adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad}
#: Tried in this order: the first one that steps on the device wins.
IMPLEMENTATIONS = ("fused", "foreach", "loop")
_FLAGS = {"fused": {"fused": True}, "foreach": {"foreach": True}, "loop": {"foreach": False}}
_WORKS: dict[tuple[str, str, str], bool] = {}


def _works(name: str, how: str, device: str) -> bool:
    key = (name, how, str(device))
    if key not in _WORKS:
        try:
            param = torch.nn.Parameter(torch.zeros(2, device=device))
            param.grad = torch.ones(2, device=device)
            _CLASSES[name]([param], lr=1e-3, **_FLAGS[how]).step()
            _WORKS[key] = True
        except (RuntimeError, ValueError, TypeError):
            _WORKS[key] = False
    return _WORKS[key]


def implementation(name: str, device: str = "cpu") -> str:
    """The fastest implementation of optimizer ``name`` (``adam`` or ``adagrad``) on ``device``."""
    if name not in _CLASSES:
        raise ValueError(f"optimizer must be one of {tuple(_CLASSES)}, got {name!r}")
    return next(how for how in IMPLEMENTATIONS if how == "loop" or _works(name, how, device))


def make_optimizer(name: str, params, lr: float, *, lazy: bool = False, device: str = "cpu",
                   how: str | None = None) -> tuple[torch.optim.Optimizer, str]:
    """``(optimizer, its implementation's name)``: the lazy meProp Adam when ``lazy``, else
    torch's ``name`` in implementation ``how`` (default: the fastest on ``device``)."""
    if lazy:
        if name != "adam":
            raise ValueError(f"the lazy optimizer is Adam's, got optimizer {name!r}")
        return meprop.optim.Adam(params, lr=lr, lazy=True), "meprop.optim.Adam(lazy=True)"
    how = how or implementation(name, device)
    if how not in _FLAGS:
        raise ValueError(f"how must be one of {IMPLEMENTATIONS}, got {how!r}")
    cls = _CLASSES[name]
    return cls(params, lr=lr, **_FLAGS[how]), f"torch.optim.{cls.__name__}({how})"
