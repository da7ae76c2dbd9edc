"""How long and how often a case is sampled: :class:`TimingOptions`, part of what a run asks for.

The engine's timer (:mod:`meprop.lab.engine.timer`) reads these options; the profiles,
the CLI, the asv suite and the pytest-benchmark cases build them.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable

from meprop.checks import check_positive_int, check_real

__all__ = ["TimingOptions"]


@dataclass(frozen=True)
class TimingOptions:
    """How long and how often to sample: the one place the timing settings and their defaults live.

    ``budget_s`` bounds the sampling time of all sides together (warm-up excluded);
    ``warmup_s`` of calls before sampling (at least one each); at least ``min_samples`` and at
    most ``max_samples`` samples per side, stopping early once every median is known to
    ``rel_precision``; a sample lasts at least ``min_sample_s``; calls shorter than
    ``rewarm_below_s`` are timed in steady-state blocks when sides alternate. The CLI, the
    profiles, the asv suite and the pytest-benchmark cases all build one of these.
    """

    budget_s: float = 1.0
    warmup_s: float = 0.05
    min_samples: int = 5
    max_samples: int = 100
    rel_precision: float = 0.01
    min_sample_s: float = 1e-3
    rewarm_below_s: float = 0.02
    #: a pair still noisy, or whose speedup interval contains 1.0, when ``budget_s`` is spent
    #: gets up to ``extend_factor * budget_s`` more seconds of samples (0: never)
    extend_factor: float = 0.0
    #: the clock samples are read from: wall time; ``time.process_time`` (the process's CPU
    #: time) for single-threaded CPU cases on a machine shared with other load
    clock: Callable[[], float] = time.perf_counter

    def __post_init__(self) -> None:
        for name in ("budget_s", "warmup_s", "min_sample_s", "rel_precision", "rewarm_below_s",
                     "extend_factor"):
            value = getattr(self, name)
            if not check_real(value, name, "a non-negative number") >= 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        check_positive_int(self.min_samples, "min_samples")
        check_positive_int(self.max_samples, "max_samples")
        if self.max_samples < self.min_samples:
            raise ValueError(f"max_samples must be >= min_samples={self.min_samples}, "
                             f"got max_samples={self.max_samples}")

    def replace(self, **changes) -> "TimingOptions":
        """These options with ``changes`` (field names); None values leave a field as it is."""
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - fields
        if unknown:
            raise TypeError(f"unknown timing option(s) {sorted(unknown)}; accepted: {sorted(fields)}")
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
