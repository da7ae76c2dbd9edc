"""The measurement kinds, one object each: what every other part of the lab asks instead of comparing names.

A :class:`MeasurementKind` owns what is specific to one thing the suite times
(docs/design.md, "What the numbers mean"):

- its name in records and cases, its title in the report, and its short label in the
  headline (where it has one);
- what its operation runs (:attr:`~MeasurementKind.runs_backward`,
  :attr:`~MeasurementKind.linear_layers_only`, :attr:`~MeasurementKind.steps_optimizer`,
  :attr:`~MeasurementKind.distributed`): the builders in :mod:`meprop.lab.ops` read these
  to make the operation;
- its ceiling, which says how its speedups are judged: ``"ideal"`` (n / k, the linear
  layers' backward), ``"amdahl"`` (a whole step: the speedup with a free meProp backward),
  ``"none"`` (the forward is unchanged: within 5% of dense is the goal);
- how its records pair with other tools' names: the word that names it in a
  pytest-benchmark test (:attr:`~MeasurementKind.pytest_word`).

:data:`REGISTRY` holds every kind; :func:`measurement` looks one up with a clear error.
Adding a kind touches this file, the builder of its operation in :mod:`meprop.lab.ops`,
the profile that measures it (:mod:`meprop.lab.plan.profiles`) and, for asv, one
``benchmarks/bench_<name>.py`` (docs/design.md, "Adding a measurement kind", has an example).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "MeasurementKind", "REGISTRY", "MEASUREMENT_NAMES", "measurement",
    "FORWARD", "LINEAR_BACKWARD", "OVERALL_BACKWARD", "TRAIN_STEP", "DDP_STEP",
    "HEADLINE_KINDS", "SINGLE_PROCESS_NAMES", "from_pytest_name",
]


@dataclass(frozen=True)
class MeasurementKind:
    """One measurement kind; see the module docstring for its fields."""

    name: str
    #: its title in the report ("Linear-only backprop")
    title: str
    #: how a speedup of this kind is judged: "ideal" (n / k), "amdahl" (a step), "none" (forward)
    ceiling: str
    #: the operation runs a backward pass
    runs_backward: bool = True
    #: the backward of the linear layers alone, given a fixed output gradient
    linear_layers_only: bool = False
    #: forward + backward + the optimizer's step (a user's training loop)
    steps_optimizer: bool = False
    #: the step under DistributedDataParallel on ``world_size`` > 1 processes
    distributed: bool = False
    #: (short label for table columns, title for cards) in the headline (None: not in it)
    headline: tuple[str, str] | None = None
    #: the word naming this kind in a pytest-benchmark test's name (None: never read from there)
    pytest_word: str | None = None

    def __post_init__(self) -> None:
        if self.ceiling not in ("ideal", "amdahl", "none"):
            raise ValueError(f"ceiling must be 'ideal', 'amdahl' or 'none', got {self.ceiling!r}")

    @property
    def judged_against_ideal(self) -> bool:
        """Its speedup has the ideal n / k as ceiling (above it: a broken baseline)."""
        return self.ceiling == "ideal"


FORWARD = MeasurementKind("forward", "Forward", ceiling="none", runs_backward=False, pytest_word="forward")
LINEAR_BACKWARD = MeasurementKind(
    "linear_backward", "Linear-only backprop", ceiling="ideal", linear_layers_only=True,
    headline=("linear-only", "kernel-level: linear-only backprop"), pytest_word="backward")
OVERALL_BACKWARD = MeasurementKind(
    "overall_backward", "Overall backprop", ceiling="ideal",
    headline=("overall", "overall backprop"), pytest_word="overall")
TRAIN_STEP = MeasurementKind(
    "train_step", "Training step", ceiling="amdahl", steps_optimizer=True,
    headline=("train step", "training step"), pytest_word="train")
#: its records carry n / k beside the speedup, as the linear layers' ceiling
DDP_STEP = MeasurementKind("ddp_step", "DDP training step", ceiling="ideal", steps_optimizer=True,
                           distributed=True)

#: every kind, by name, in the order the report shows them
REGISTRY: MappingProxyType = MappingProxyType(
    {kind.name: kind for kind in (FORWARD, LINEAR_BACKWARD, OVERALL_BACKWARD, TRAIN_STEP, DDP_STEP)})
MEASUREMENT_NAMES: tuple[str, ...] = tuple(REGISTRY)


def measurement(name: str) -> MeasurementKind:
    """The kind called ``name``; ValueError naming the accepted names otherwise."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"measurement must be one of {MEASUREMENT_NAMES}, got {name!r}") from None

#: the headline's kinds, most telling first: what a user's loop sees, then the whole backward,
#: then the linear layers alone (the kernel-level figure)
HEADLINE_KINDS: tuple[MeasurementKind, ...] = (TRAIN_STEP, OVERALL_BACKWARD, LINEAR_BACKWARD)
#: the kinds a single process measures (every workload's; the DDP step needs world_size > 1)
SINGLE_PROCESS_NAMES: tuple[str, ...] = tuple(k.name for k in REGISTRY.values() if not k.distributed)
#: the order pytest-benchmark names are matched in: the more specific word first
#: ("test_overall_backward" also holds "backward")
_PYTEST_MATCH_ORDER = (OVERALL_BACKWARD, TRAIN_STEP, LINEAR_BACKWARD, FORWARD)


def from_pytest_name(name: str) -> str | None:
    """The measurement a pytest-benchmark test's name (or group) speaks of, or None."""
    lowered = name.lower()
    return next((kind.name for kind in _PYTEST_MATCH_ORDER if kind.pytest_word in lowered), None)
