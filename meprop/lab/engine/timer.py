"""Device-correct timing: warm-up, synchronize, interleaved samples, median + IQR.

The measurement rules of docs/design.md ("What the numbers mean", "Measurement rules"):

- CUDA is asynchronous, so every interval is bracketed by :func:`synchronize`
  (:mod:`meprop.lab.stopwatch`, re-exported here with :class:`Stopwatch`).
- The thread count is set explicitly around the measurement and restored after
  (:func:`num_threads`, from :mod:`meprop.lab.stopwatch`, as the paper's training loop does;
  ``torch.utils.benchmark.Timer`` would silently default to 1 thread).
- :func:`time_pair` interleaves dense and meProp samples (ABBA order), so that
  drift on a shared machine hits both sides equally; speedup = ratio of medians.
- Repeats are adaptive: sampling stops once the median is known to ``rel_precision``
  (its standard error, estimated from the IQR, relative to the median), or when the
  time budget or ``max_samples`` is reached; never before ``min_samples``. A pair still
  unsettled when ``budget_s`` is spent (a side noisy, or the speedup's interval
  containing 1.0, :mod:`meprop.lab.results.stats`) gets up to ``extend_factor * budget_s`` more seconds of
  samples before it is given up as it is.
- A fast operation is called ``number`` times per sample (calibrated during warm-up)
  so a sample lasts at least ``min_sample_s``; samples are reported per call.
- Steady state, as a loop runs: when sides alternate, a call shorter than
  ``rewarm_below_s`` is timed in blocks of consecutive calls lasting at least that long,
  each block after one untimed call. Its working set (data and code) can fit in the
  caches, and the other side's call has just evicted it: alternating every call, a
  1.4 ms MNIST training step measured 2.4 ms, and one lead-in call alone still left it
  ~10% above its back-to-back time, a state no training loop (which runs its own steps
  back to back) is ever in. Longer calls stream more than the caches hold on their own,
  and are timed one call per sample without a lead-in (it would double their time).

The clock is injectable (``clock=``) so the logic is tested with a fake clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from meprop.lab.results import schema, stats
from meprop.lab.plan.timing import TimingOptions
from meprop.lab.stopwatch import Clock, Stopwatch, num_threads, synchronize

__all__ = [
    "NOISE_THRESHOLD",
    "TimingOptions",
    "synchronize",
    "Stopwatch",
    "Measurement",
    "num_threads",
    "time_one",
    "time_pair",
]

#: A measurement whose IQR / median exceeds this is flagged ``noisy`` (the schema's number).
NOISE_THRESHOLD = schema.NOISE_THRESHOLD


@dataclass(frozen=True)
class Measurement:
    """Per-call times in seconds of one operation, and their summary statistics."""

    samples: tuple[float, ...]
    number: int = 1  # calls per sample
    rewarm: int = 0  # untimed calls before each sample (the steady-state lead-in)

    def __post_init__(self) -> None:
        if not self.samples:
            raise ValueError("a Measurement needs at least one sample")

    @property
    def n_samples(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return float(np.median(self.samples))

    @property
    def iqr(self) -> float:
        q1, q3 = np.percentile(self.samples, [25, 75])
        return float(q3 - q1)

    @property
    def min(self) -> float:
        return float(min(self.samples))

    @property
    def mean(self) -> float:
        return float(np.mean(self.samples))

    @property
    def rel_iqr(self) -> float:
        median = self.median
        return self.iqr / median if median > 0 else math.inf

    @property
    def noisy(self) -> bool:
        """IQR / median above :data:`NOISE_THRESHOLD`."""
        return self.rel_iqr > schema.NOISE_THRESHOLD

    def rel_standard_error(self) -> float:
        """Standard error of the median relative to it, estimated from the IQR.

        For roughly normal samples sigma ~ IQR / 1.349 and SE(median) ~ 1.2533 sigma / sqrt(n).
        """
        return 1.2533 * (self.rel_iqr / 1.349) / math.sqrt(self.n_samples)

    def to_dict(self) -> dict:
        """The ``dense`` / ``meprop`` object of a results record."""
        return {
            "median_s": self.median,
            "iqr_s": self.iqr,
            "n_samples": self.n_samples,
            "min_s": self.min,
            "mean_s": self.mean,
            "number": self.number,
            "rewarm": self.rewarm,
            "samples_s": list(self.samples),
        }


def time_one(
    fn: Callable[[], object],
    *,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    options: TimingOptions | None = None,
    clock: Clock | None = None,
    **overrides,
) -> Measurement:
    """Time ``fn()`` (see the module docstring for the rules). Returns per-call times.

    ``options`` (default :class:`TimingOptions`) with ``overrides`` (its field names) applied.
    """
    (measurement,) = _time_interleaved([fn], device=device, threads=threads,
                                       options=(options or TimingOptions()).replace(clock=clock, **overrides))
    return measurement


def time_pair(
    dense_fn: Callable[[], object],
    meprop_fn: Callable[[], object],
    *,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    options: TimingOptions | None = None,
    clock: Clock | None = None,
    **overrides,
) -> tuple[Measurement, Measurement]:
    """Time dense and meProp interleaved (ABBA); returns ``(dense, meprop)`` measurements.

    ``options`` (default :class:`TimingOptions`) with ``overrides`` (its field names) applied;
    ``min_samples`` are always taken, even past the budget.
    """
    dense, meprop = _time_interleaved([dense_fn, meprop_fn], device=device, threads=threads,
                                      options=(options or TimingOptions()).replace(clock=clock, **overrides))
    return dense, meprop


def _time_interleaved(
    fns: Sequence[Callable[[], object]],
    *,
    device,
    threads,
    options: TimingOptions,
) -> list[Measurement]:
    o, clock = options, options.clock
    extend_s = o.extend_factor * o.budget_s
    device = torch.device(device)

    def run(fn, number: int) -> float:
        synchronize(device)
        start = clock()
        for _ in range(number):
            fn()
        synchronize(device)
        return clock() - start

    with num_threads(threads):
        # Warm-up: at least one call each, then until warmup_s has passed; the
        # fastest warm-up call calibrates how many calls make one sample.
        numbers, rewarms = [], []
        for fn in fns:
            first = best = run(fn, 1)
            spent = first
            while spent < o.warmup_s:
                t = run(fn, 1)
                spent += t
                best = min(best, t)
            steady = len(fns) > 1 and best < o.rewarm_below_s
            block_s = max(o.min_sample_s, o.rewarm_below_s) if steady else o.min_sample_s
            numbers.append(max(1, math.ceil(block_s / best)) if best > 0 else 1)
            rewarms.append(1 if steady else 0)

        samples: list[list[float]] = [[] for _ in fns]
        start = clock()
        rounds = 0
        while True:
            order = range(len(fns)) if rounds % 2 == 0 else reversed(range(len(fns)))
            for i in order:
                for _ in range(rewarms[i]):
                    fns[i]()
                samples[i].append(run(fns[i], numbers[i]) / numbers[i])
            rounds += 1
            if rounds < o.min_samples:
                continue
            elapsed = clock() - start
            if rounds >= o.max_samples or elapsed >= o.budget_s + extend_s:
                break
            if elapsed >= o.budget_s:
                if not _unsettled(samples, numbers):
                    break
                continue  # a noisy or undecided pair: more samples while extend_s lasts
            if all(
                Measurement(tuple(s), n).rel_standard_error() <= o.rel_precision
                for s, n in zip(samples, numbers)
            ):
                break
    return [Measurement(tuple(s), n, r) for s, n, r in zip(samples, numbers, rewarms)]


def _unsettled(samples: list[list[float]], numbers: list[int]) -> bool:
    """A dense/meProp pair still worth sampling: a side noisy, or the speedup's interval
    (normal approximation from the IQRs, cheap enough for every round) containing 1.0."""
    if len(samples) != 2:
        return False
    measured = [Measurement(tuple(s), n) for s, n in zip(samples, numbers)]
    if any(m.noisy for m in measured):
        return True
    bounds = stats.approx_ratio_interval(*(m.to_dict() for m in measured))
    return bool(stats.straddles_one(*bounds)) if bounds else False
