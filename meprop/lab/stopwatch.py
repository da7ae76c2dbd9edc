"""Device-synchronised wall-clock intervals: :func:`synchronize` and :class:`Stopwatch`;
:func:`num_threads`, the thread count a timed block runs with.

CUDA is asynchronous (docs/design.md, "Measurement rules"): a clock read while kernels are
queued measures the launch, not the work. Both the measurement engine
(:mod:`meprop.lab.engine.timer`) and the paper's training loop (:mod:`meprop.lab.paper.train`, the
Table 2 split of an epoch into forward / backward / update) time through these two.
Imports only torch; CUDA is touched only when a CUDA device is passed.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator

import torch

from meprop.checks import check_positive_int

__all__ = ["Clock", "synchronize", "Stopwatch", "num_threads"]

Clock = Callable[[], float]


def synchronize(device: str | torch.device = "cpu") -> None:
    """Wait until all queued work on ``device`` is done (a no-op on CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":  # pragma: no cover - no MPS here
        torch.mps.synchronize()


class Stopwatch:
    """Accumulates wall time of the intervals it brackets, synchronizing ``device``.

    >>> watch = Stopwatch("cpu")
    >>> with watch:
    ...     pass
    >>> watch.laps
    1

    ``elapsed`` is the total in seconds over all intervals, ``laps`` their number.
    """

    def __init__(self, device: str | torch.device = "cpu", *, clock: Clock = time.perf_counter):
        self.device = torch.device(device)
        self.clock = clock
        self.elapsed = 0.0
        self.laps = 0
        self._start: float | None = None

    def __enter__(self) -> "Stopwatch":
        if self._start is not None:
            raise RuntimeError("Stopwatch is already running (intervals cannot nest)")
        synchronize(self.device)
        self._start = self.clock()
        return self

    def __exit__(self, *exc_info) -> None:
        synchronize(self.device)
        self.elapsed += self.clock() - self._start
        self.laps += 1
        self._start = None

    def reset(self) -> None:
        self.elapsed, self.laps, self._start = 0.0, 0, None


@contextlib.contextmanager
def num_threads(threads: int | None) -> Iterator[int]:
    """Set torch's intra-op thread count for the block (None: leave it); yields the count used."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(check_positive_int(threads, "threads"))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)
