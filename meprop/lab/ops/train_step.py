"""The ``train_step`` measurement: a user's training step, its optimizers and its phase split.

The step is what a standard loop does with every default (docs/design.md, "training step")::

    opt.zero_grad(); loss = loss_fn(model(x)); loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step()

Dense uses ``torch.optim.Adam``; meProp uses ``meprop.optim.Adam`` with ``lazy=True`` (the fast
path, the case's default) or ``lazy=False`` (``optimizer="exact"``: torch.optim's algorithm on
meProp's gradients). ``adam="fused"`` passes ``fused=True`` to both: torch's fastest Adam (one
kernel for all parameters, several times faster than the default per-parameter loop on CPU),
so the dense side is the strongest baseline torch offers. ``optimizer="torch:<name>:<impl>"``
(:mod:`meprop.lab.plan.optimizers`) runs that torch optimizer on both sides instead: the step
of a user who converts a model and keeps their optimizer. :func:`optimizer_names` is what a
record says ran.

:func:`probe_phases` splits separately run steps into ``forward_s`` (zero_grad, forward, loss),
``backward_s`` and ``optimizer_s`` (clip and step), synchronising the device at each boundary;
it runs after the timed samples, so the timing itself is never interrupted. From the split
the record derives the Amdahl limit (the step speedup with a free meProp backward).
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
import torch.nn as nn

import meprop.optim
from meprop.lab.plan.optimizers import optimizer_label, torch_optimizer
from meprop.lab.stopwatch import synchronize

__all__ = ["LR", "make_optimizer", "optimizer_names", "train_step_op", "probe_phases"]

#: A small learning rate: the timed steps train the model, which must stay finite.
LR = 1e-4
_PHASES = ("forward_s", "backward_s", "optimizer_s")


def make_optimizer(model: nn.Module, variant: str, optimizer_mode: str = "lazy",
                   adam: str = "default") -> torch.optim.Optimizer:
    """torch.optim.Adam for ``dense``; meprop.optim.Adam (lazy or exact) for ``meprop``; a
    ``torch:<name>:<impl>`` optimizer for both."""
    spec = torch_optimizer(optimizer_mode)
    if spec is not None:
        cls, kwargs, _, _ = spec
        return getattr(torch.optim, cls)(model.parameters(), lr=LR, **kwargs)
    fused = {"fused": True} if adam == "fused" else {}
    if variant == "dense":
        return torch.optim.Adam(model.parameters(), lr=LR, **fused)
    return meprop.optim.Adam(model.parameters(), lr=LR, lazy=optimizer_mode == "lazy", **fused)


def optimizer_names(optimizer_mode: str = "lazy", adam: str = "default") -> dict[str, str]:
    """``{"dense": ..., "meprop": ...}``: the optimizers of a training-step record."""
    if torch_optimizer(optimizer_mode) is not None:
        name = optimizer_label(optimizer_mode)
        return {"dense": name, "meprop": name}
    return {"dense": "torch.optim.Adam" + ("(fused=True)" if adam == "fused" else ""),
            "meprop": optimizer_label(optimizer_mode, adam)}


def train_step_op(model: nn.Module, loss_fn: Callable[[], torch.Tensor],
                  optimizer: torch.optim.Optimizer, device: str) -> Callable[[], None]:
    """The step as one call; ``op.phases()`` runs one more step and returns its phase split."""

    def op() -> None:
        optimizer.zero_grad()
        loss_fn().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    def phases() -> dict[str, float]:
        synchronize(device)
        start = time.perf_counter()
        optimizer.zero_grad()
        loss = loss_fn()
        synchronize(device)
        forward = time.perf_counter()
        loss.backward()
        synchronize(device)
        backward = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        synchronize(device)
        end = time.perf_counter()
        return {"forward_s": forward - start, "backward_s": backward - forward, "optimizer_s": end - backward}

    op.phases = phases
    return op


def probe_phases(dense_fn, meprop_fn, repeats: int = 5, rewarm: tuple[int, int] = (0, 0)) -> dict | None:
    """Median phase split of ``repeats`` steps per side, interleaved; None for other ops.

    ``rewarm``: untimed steps of the same side before each probed one (the runner passes
    a timed block's length where the timer used lead-in blocks, see
    :mod:`meprop.lab.engine.timer`), so that the split describes the same steady state as the
    timed medians.
    """
    if not (hasattr(dense_fn, "phases") and hasattr(meprop_fn, "phases")):
        return None
    samples = {"dense": [], "meprop": []}
    for _ in range(repeats):
        for side, fn, lead_in in (("dense", dense_fn, rewarm[0]), ("meprop", meprop_fn, rewarm[1])):
            for _ in range(lead_in):
                fn()
            samples[side].append(fn.phases())
    return {side: {name: statistics.median(s[name] for s in runs) for name in _PHASES}
            for side, runs in samples.items()}
