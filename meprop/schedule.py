"""Schedules of k: dense warm-up, ramps and dense/sparse interleaving for a model's meProp layers.

meProp's early phase is fragile (Deep Gradient Compression warms up dense; ssProp interleaves
dense and sparse epochs). :class:`KScheduler` sets the k of every meProp layer of a model
(:class:`meprop.MepropLinear`, :class:`meprop.MepropLSTM`) from a function ``k_at(step)``,
once per optimizer step, like ``torch.optim.lr_scheduler``::

    scheduler = meprop.schedule.KScheduler(model, meprop.schedule.dense_warmup(3000, k=20))
    for x, y in data:
        loss_fn(model(x), y).backward(); opt.step(); opt.zero_grad()
        scheduler.step()

``k_at(step)`` returns an int k in [1, width] for every layer (width: ``out_features``, or
``4 * hidden_size`` for the LSTM), or None for a dense step (each layer's k set to its width:
the exact dense gradient, ``F.linear``'s backward). Builders: :func:`constant`,
:func:`dense_warmup`, :func:`linear_ramp`, :func:`cosine_ramp`, :func:`interleaved`, and
:func:`parse` for a one-string spec (command lines).

Composes with :mod:`meprop.optim` (a dense step hands the lazy optimizers every row, so
they update every row, as the exact ones always do), checkpoints (``state_dict()`` holds
the step; ``load_state_dict`` resumes there and sets the layers' k), DDP (every rank runs
the same schedule) and ``torch.compile`` with a bounded number of graphs: k is a Python int
attribute of the layer, which dynamo specializes on, so each *distinct* k a schedule visits
compiles once (a dense step is one more graph) and a k seen before reuses its graph; a fixed
k never recompiles. Ramps take ``levels`` (the number of distinct k values they step
through) to bound the graphs; torch's ``torch._dynamo.config.cache_size_limit`` (8 by
default) caps the graphs of one frame, past which dynamo runs that frame eagerly.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable

import torch.nn as nn

from meprop.checks import check_k

__all__ = ["KScheduler", "constant", "dense_warmup", "linear_ramp", "cosine_ramp", "interleaved", "parse"]

KAt = Callable[[int], "int | None"]


def _layers(model: nn.Module) -> list[tuple[str, nn.Module, int]]:
    from meprop.lstm import MepropLSTM  # noqa: PLC0415 - nn and lstm import the functional stack
    from meprop.nn import MepropLinear  # noqa: PLC0415

    found = []
    for name, module in model.named_modules():
        if isinstance(module, MepropLinear):
            found.append((name or "<model>", module, module.out_features))
        elif isinstance(module, MepropLSTM):
            found.append((name or "<model>", module, 4 * module.hidden_size))
    return found


class KScheduler:
    """Sets the k of every meProp layer of ``model`` to ``k_at(step)`` (module docstring).

    The k of step 0 is applied at construction; :meth:`step` advances one step and applies
    it. A value that is not an int (or None), below 1, or above a layer's width is refused
    with a ``ValueError`` naming the step, the value and the layer.
    """

    def __init__(self, model: nn.Module, k_at: KAt, *, step: int = 0) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if not callable(k_at):
            raise TypeError(f"k_at must be a callable step -> k or None, got {type(k_at).__name__}")
        self.layers = _layers(model)
        if not self.layers:
            raise ValueError("model has no meProp layer (MepropLinear, MepropLSTM): convert it first "
                             "with meprop.convert()")
        self.k_at = k_at
        self.last_step = _check_step(step)
        self.k: int | None = None
        self._apply()

    def step(self) -> None:
        """Advance one optimizer step and set the layers' k for it."""
        self.last_step += 1
        self._apply()

    def _apply(self) -> None:
        value = self.k_at(self.last_step)
        if value is not None:  # the schedule's entry check: the layers trust the k they are given
            try:
                check_k(value, f"k_at({self.last_step})")
            except (TypeError, ValueError) as error:
                raise type(error)(f"{error} (or None: a dense step)") from None
            for name, _, width in self.layers:
                if value > width:
                    raise ValueError(f"k_at({self.last_step}) returned k={value}, more than layer {name!r}'s "
                                     f"width {width}; return at most {width}, or None for a dense step")
        self.k = None if value is None else int(value)
        for _, module, width in self.layers:
            module.k = width if value is None else int(value)

    def state_dict(self) -> dict:
        """``{"step": last_step}`` (the k follows from ``k_at``)."""
        return {"step": self.last_step}

    def load_state_dict(self, state: dict) -> None:
        """Resume at ``state["step"]``: the layers get that step's k."""
        if not isinstance(state, dict) or "step" not in state:
            raise ValueError(f"state must be a dict with a 'step' (from KScheduler.state_dict()), got {state!r}")
        self.last_step = _check_step(state["step"], "state['step']")
        self._apply()


def _check_step(step: object, name: str = "step") -> int:
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        raise ValueError(f"{name} must be an int >= 0, got {step!r}")
    return int(step)


def _positive(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


class _Schedule:
    """A named ``k_at``: callable, with a readable repr (what it is, for logs and records)."""

    def __init__(self, text: str, function: KAt) -> None:
        self.text, self.function = text, function

    def __call__(self, step: int) -> int | None:
        return self.function(step)

    def __repr__(self) -> str:
        return self.text


def _then(k: int | KAt, offset: int) -> KAt:
    return (lambda step: k(step - offset)) if callable(k) else (lambda step: k)


def constant(k: int) -> KAt:
    """k at every step."""
    k = _positive(k, "k")
    return _Schedule(f"constant({k})", lambda step: k)


def dense_warmup(steps: int, k: int | KAt) -> KAt:
    """Dense for the first ``steps`` steps, then ``k`` (an int, or a ``k_at`` started at 0 then)."""
    steps = _check_step(steps, "steps")
    k = k if callable(k) else _positive(k, "k")
    after = _then(k, steps)
    return _Schedule(f"dense_warmup({steps}, {k!r})", lambda step: None if step < steps else after(step))


def _ramp(start_k, end_k, steps, levels, shape: Callable[[float], float], name: str) -> KAt:
    start_k, end_k, steps = _positive(start_k, "start_k"), _positive(end_k, "end_k"), _positive(steps, "steps")
    levels = None if levels is None else _positive(levels, "levels")

    def k_at(step: int) -> int:
        t = min(1.0, step / steps)
        if levels is not None:  # piecewise constant: levels values, the last one end_k
            t = 1.0 if levels == 1 else math.floor(t * (levels - 1) + 1e-9) / (levels - 1)
        return round(start_k + (end_k - start_k) * shape(t))

    return _Schedule(f"{name}({start_k}, {end_k}, {steps}, levels={levels})", k_at)


def linear_ramp(start_k: int, end_k: int, steps: int, *, levels: int | None = None) -> KAt:
    """k from ``start_k`` to ``end_k`` linearly over ``steps`` steps (rounded), then ``end_k``;
    ``levels``: step through that many evenly spaced values only (None: every step's own)."""
    return _ramp(start_k, end_k, steps, levels, lambda t: t, "linear_ramp")


def cosine_ramp(start_k: int, end_k: int, steps: int, *, levels: int | None = None) -> KAt:
    """k from ``start_k`` to ``end_k`` along a half cosine over ``steps`` steps, then ``end_k``
    (``levels`` as :func:`linear_ramp`)."""
    return _ramp(start_k, end_k, steps, levels, lambda t: (1 - math.cos(math.pi * t)) / 2, "cosine_ramp")


def interleaved(k: int, dense: int = 1, sparse: int = 1, *, steps_per_epoch: int = 1) -> KAt:
    """``dense`` dense periods, then ``sparse`` periods at k, repeated; a period is ``steps_per_epoch`` steps
    (1: interleaved steps; an epoch's length in steps: interleaved epochs)."""
    k, dense, sparse = _positive(k, "k"), _check_step(dense, "dense"), _check_step(sparse, "sparse")
    unit = _positive(steps_per_epoch, "steps_per_epoch")
    if dense + sparse == 0:
        raise ValueError("dense + sparse must be at least 1, got dense=0 and sparse=0")
    period = dense + sparse
    return _Schedule(f"interleaved({k}, {dense}, {sparse}, steps_per_epoch={unit})",
                     lambda step: None if (step // unit) % period < dense else k)


def parse(spec: str, k: int) -> KAt:
    """A ``k_at`` from a one-string spec ending at ``k`` (for command lines):

    ``constant`` · ``warmup:STEPS`` · ``linear:START_K:STEPS[:LEVELS]`` · ``cosine:START_K:STEPS[:LEVELS]`` ·
    ``interleave:DENSE:SPARSE[:STEPS_PER_EPOCH]``; ``warmup:STEPS,<spec>`` runs ``<spec>``
    after a dense warm-up (e.g. ``warmup:3000,linear:100:2000``).
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"spec must be a non-empty string, got {spec!r}")
    head, _, rest = spec.partition(",")
    name, *args = head.split(":")
    try:
        numbers_ = [int(a) for a in args]
    except ValueError:
        raise ValueError(f"schedule spec {spec!r}: arguments must be integers, got {args}") from None
    forms = {"constant": 0, "warmup": 1, "linear": (2, 3), "cosine": (2, 3), "interleave": (2, 3)}
    wanted = forms.get(name)
    if wanted is None or len(numbers_) not in ((wanted,) if isinstance(wanted, int) else wanted):
        raise ValueError(f"schedule spec {spec!r} not understood; accepted: constant, warmup:STEPS[,<spec>], "
                         f"linear:START_K:STEPS[:LEVELS], cosine:START_K:STEPS[:LEVELS], interleave:DENSE:SPARSE[:STEPS_PER_EPOCH]")
    if rest and name != "warmup":
        raise ValueError(f"schedule spec {spec!r}: only warmup:STEPS may be followed by ',<spec>'")
    if name == "constant":
        return constant(k)
    if name == "warmup":
        return dense_warmup(numbers_[0], parse(rest, k) if rest else k)
    ramps = {"linear": linear_ramp, "cosine": cosine_ramp}
    if name in ramps:
        return ramps[name](numbers_[0], k, numbers_[1], levels=numbers_[2] if len(numbers_) == 3 else None)
    return interleaved(k, *numbers_[:2], steps_per_epoch=numbers_[2] if len(numbers_) == 3 else 1)
