"""The remedies of a time-to-accuracy variant, put on a built model (docs/remedies.md).

A :class:`meprop.lab.converge.loop.Variant` names, beside its k and selection ``mode``:

- ``schedule``: a k schedule spec of :func:`meprop.schedule.parse` (``warmup:3000``,
  ``linear:100:5000``, ``warmup:3000,cosine:100:2000:5``, ...) ending at each layer's own k;
  the layers are grouped by their k (the paper's MLP: one group; the language model, where k
  is a fraction of each layer's width: one group per width) and each group follows
  ``parse(spec, its k)`` through a :class:`meprop.schedule.KScheduler`, stepped once per
  optimizer step;
- ``error_feedback``: a decay in (0, 1]: every :class:`meprop.MepropLinear` gets its
  dropped-gradient memory (:class:`meprop.error_feedback.ErrorFeedback`), every
  :class:`meprop.MepropLSTM` one per projection (input and recurrent).

Modes that draw (``random``, ``sampled``, ``sampled_unified``) get one ``torch.Generator`` per
model, seeded from the run's seed, so a run reproduces. :func:`apply` returns the
:class:`Remedies` of a model (None when it needs none): ``step()``, ``state_dict()`` and
``load_state_dict()`` (the schedule's step and the generator's state), which the run's saved
state carries (:mod:`meprop.lab.converge.state`).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from meprop.error_feedback import ErrorFeedback, check_decay
from meprop.lstm import MepropLSTM
from meprop.nn import MepropLinear
from meprop.schedule import KScheduler, parse
from meprop.selection import RANDOM_MODES

__all__ = ["Remedies", "RemedyError", "apply", "check_schedule", "check_error_feedback", "load_reference",
           "GENERATOR_OFFSET"]

#: Added to the run's seed for the sampling generator (its stream differs from the init's).
GENERATOR_OFFSET = 7_919


class RemedyError(ValueError):
    """A remedy a model cannot take; the message names the option and what is accepted."""


def check_schedule(spec: object, k: int = 2) -> str:
    """``plan`` if :func:`meprop.schedule.parse` takes it (else one line naming ``--schedule``)."""
    try:
        parse(spec, k)
    except (ValueError, TypeError) as error:
        raise RemedyError(f"--schedule {spec!r}: {error}") from None
    return spec


def check_error_feedback(decay: object) -> float:
    """``decay`` as a float in (0, 1] (else one line naming ``--error-feedback``)."""
    try:
        return check_decay(float(decay) if isinstance(decay, str) else decay, "--error-feedback")
    except (ValueError, TypeError):
        raise RemedyError(f"--error-feedback must be a decay in (0, 1] (1: keep all the dropped gradient), "
                          f"got {decay!r}") from None


def _meprop_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (MepropLinear, MepropLSTM))]


class Remedies:
    """The schedule groups (``[KScheduler]``) and the sampling ``generator`` of one model."""

    def __init__(self, schedulers: list, generator: torch.Generator | None) -> None:
        self.schedulers, self.generator = schedulers, generator

    def step(self) -> None:
        for scheduler in self.schedulers:
            scheduler.step()

    @property
    def k(self) -> list:
        """The k of each schedule group now (None: a dense step)."""
        return [s.k for s in self.schedulers]

    def state_dict(self) -> dict:
        return {"schedule": self.schedulers[0].state_dict() if self.schedulers else None,
                "generator": None if self.generator is None else self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("schedule") is not None:
            for scheduler in self.schedulers:
                scheduler.load_state_dict(state["schedule"])
        if state.get("generator") is not None and self.generator is not None:
            self.generator.set_state(state["generator"])


def _schedulers(layers: list, spec: str) -> list:
    groups: dict[int, list] = {}
    for layer in layers:
        groups.setdefault(int(layer.k), []).append(layer)
    try:
        return [KScheduler(nn.ModuleList(group), parse(spec, k)) for k, group in sorted(groups.items())]
    except (ValueError, TypeError) as error:
        raise RemedyError(f"--schedule {spec!r}: {error}") from None


def _add_error_feedback(layer: nn.Module, decay: float) -> None:
    """A fresh memory on each projection of ``layer`` (MepropLSTM: input and recurrent)."""
    if isinstance(layer, MepropLSTM):
        for name, weight in (("error_feedback_ih", layer.weight_ih), ("error_feedback_hh", layer.weight_hh)):
            setattr(layer, name, ErrorFeedback(weight.shape[0], decay, device=weight.device, dtype=weight.dtype))
    else:
        layer.error_feedback = ErrorFeedback(layer.out_features, decay, device=layer.weight.device,
                                             dtype=layer.weight.dtype)


def apply(model: nn.Module, variant, seed: int) -> Remedies | None:
    """Put ``variant``'s remedies on ``model`` (built, on its device); None when it needs none."""
    layers = _meprop_layers(model)
    if variant.k is None or not layers:
        if variant.remedies():
            raise RemedyError(f"variant {variant.label!r}: a schedule or error feedback needs meProp layers "
                              f"(a k and a model with MepropLinear / MepropLSTM layers)")
        return None
    if variant.error_feedback is not None:
        decay = check_error_feedback(variant.error_feedback)
        for layer in layers:
            _add_error_feedback(layer, decay)
    generator = None
    if variant.mode in RANDOM_MODES:
        device = next(model.parameters()).device
        generator = torch.Generator(device=device).manual_seed(seed + GENERATOR_OFFSET)
        for layer in layers:
            layer.generator = generator
    schedulers = _schedulers(layers, variant.schedule) if variant.schedule is not None else []
    return Remedies(schedulers, generator) if schedulers or generator is not None else None


def load_reference(model: nn.Module, reference: dict) -> None:
    """Load the first variant's weights; buffers the remedies added (error-feedback memories,
    absent from a dense model) keep their fresh values. A parameter missing is an error."""
    result = model.load_state_dict(reference, strict=False)
    parameters = dict(model.named_parameters())
    missing = [name for name in result.missing_keys if name in parameters or not name.endswith(".memory")]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"missing keys {missing}, unexpected keys {list(result.unexpected_keys)}")
