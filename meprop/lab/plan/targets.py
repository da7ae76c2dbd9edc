"""Performance targets: a row of a targets table, what the ``perf`` profile runs and what the report judges.

A :class:`Target` is one row of a targets file (docs/targets.md; the project's own is
``benchmarks/targets.toml``, read by :mod:`meprop.lab.plan.target_file`). It carries:

- the number: ``minimum`` (a speedup; a k ratio for ``kind="break_even"``);
- the row-matching fields (``workload``, ``measurement``, ``mode``, ``hidden`` or
  ``min_hidden``, ``batch`` or ``min_batch``, ``k`` or ``k_ratio``, MLP shape), used by
  :meth:`Target.selects` to pick the matching rows of a results frame;
- the concrete :class:`~meprop.lab.plan.cases.Case` objects the ``perf`` profile must run for
  it (:meth:`Target.cases`): derived from the matching fields when they name one case,
  listed explicitly (``perf_cases``) for grids and several rows.

Layering (docs/design.md): this module is part of the engine; the report
(:mod:`meprop.lab.report.sections.targets`) judges measured rows against these targets.
pandas/numpy are only needed by :meth:`Target.selects` and are imported there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from meprop.checks import check_choice, resolve_k
from meprop.lab.plan.cases import MEASUREMENTS, WORKLOADS, Case
from meprop.lab.workloads import k_width

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["Target", "KINDS", "KIND_SYNONYMS", "PERF_THREADS", "PERF_DTYPE", "perf_case", "perf_cases"]

#: ``speedup``: the matching row's speedup >= minimum; ``break_even``: the smallest
#: break-even k ratio over the matching (hidden, batch) groups >= minimum; ``worst``: the
#: worst matching row's speedup >= minimum, for any measurement (e.g. "never slower than
#: dense over a whole grid"); ``review``: not a timing (shown, never matched).
KINDS = ("speedup", "break_even", "worst", "review")
#: Older names still accepted for a kind, and the kind they mean: ``forward`` was ``worst``
#: when only the forward had such a target.
KIND_SYNONYMS = {"forward": "worst"}
#: The thread count and dtype of a target's cases when its file does not say.
PERF_THREADS = 2
PERF_DTYPE = "float32"


def perf_case(workload: str, measurement: str, hidden: int, batch: int, mode: str, *,
              k: int | None = None, k_ratio: float | None = None,
              in_features: int | None = None, layers: int = 2, threads: int | None = None,
              classes: int = 10) -> Case:
    """One case of the ``perf`` profile: float32, :data:`PERF_THREADS` threads unless given.

    Give exactly one of ``k`` and ``k_ratio`` (resolved as ``max(1, round(ratio * hidden))``).
    """
    width = k_width(workload, hidden)  # the LSTM's k counts among 4h gate entries
    return Case(workload, measurement, hidden, resolve_k(k, k_ratio, width), batch,
                dtype=PERF_DTYPE, mode=mode, threads=PERF_THREADS if threads is None else threads,
                in_features=in_features, layers=layers, classes=classes)


@dataclass(frozen=True)
class Target:
    """One row of a targets table.

    Matching fields left None match anything; ``workload=None`` matches every workload
    (the forward target covers every forward row). ``perf_cases`` lists the cases the
    ``perf`` profile runs for a target whose fields do not name one case (a grid, or
    several forward rows); leave it empty when they do. ``kind`` is one of :data:`KINDS`
    or a synonym of one (:data:`KIND_SYNONYMS`), stored as the kind it means.
    """

    label: str
    minimum: float | None
    kind: str = "speedup"
    measurement: str = "linear_backward"
    workload: str | None = "linear"
    mode: str | None = None
    hidden: int | None = None
    min_hidden: int | None = None
    batch: int | None = None
    min_batch: int | None = None
    k: int | None = None
    k_ratio: float | None = None
    in_features: int | None = None
    layers: int | None = None
    threads: int | None = None
    classes: int | None = None
    optimizer: str | None = None
    adam: str | None = None
    note: str = ""
    perf_cases: tuple[Case, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.kind, str) and self.kind in KIND_SYNONYMS:
            object.__setattr__(self, "kind", KIND_SYNONYMS[self.kind])
        check_choice(self.kind, "kind", KINDS)
        check_choice(self.measurement, "measurement", MEASUREMENTS)
        if self.workload is not None:
            check_choice(self.workload, "workload", WORKLOADS)
        if (self.minimum is None) != (self.kind == "review"):
            raise ValueError(f"minimum must be None exactly for kind='review', got minimum="
                             f"{self.minimum!r} with kind={self.kind!r} (target {self.label!r})")
        if self.k is not None and self.k_ratio is not None:
            raise ValueError(f"give at most one of k and k_ratio, got k={self.k!r} and "
                             f"k_ratio={self.k_ratio!r} (target {self.label!r})")
        if not isinstance(self.perf_cases, tuple) or not all(isinstance(c, Case) for c in self.perf_cases):
            raise TypeError(f"perf_cases must be a tuple of Case, got {self.perf_cases!r}")

    @property
    def names_one_case(self) -> bool:
        """True when the matching fields pin down exactly one case (a single-row target)."""
        return (self.kind == "speedup" and self.workload is not None and self.mode is not None
                and self.hidden is not None and self.batch is not None
                and (self.k is not None or self.k_ratio is not None)
                and self.min_hidden is None and self.min_batch is None)

    def cases(self) -> tuple[Case, ...]:
        """The cases the ``perf`` profile runs for this target (empty for ``review`` rows)."""
        if self.perf_cases:
            return self.perf_cases
        if not self.names_one_case:
            return ()
        layers = 2 if self.layers is None else self.layers
        classes = 10 if self.classes is None else self.classes
        return (perf_case(self.workload, self.measurement, self.hidden, self.batch, self.mode,
                          k=self.k, k_ratio=self.k_ratio, in_features=self.in_features,
                          layers=layers, threads=self.threads, classes=classes),)

    def selects(self, frame: "pd.DataFrame") -> "pd.Series":
        """Boolean mask of the rows of ``frame`` (a report bench frame) that are this target's case."""
        import numpy as np
        import pandas as pd

        if self.kind == "review":
            return pd.Series(False, index=frame.index)
        mask = frame["measurement"] == self.measurement
        for name in ("workload", "mode", "hidden", "batch", "in_features", "layers", "threads", "classes",
                     "optimizer", "adam"):  # the frame fills optimizer/adam where old records lack them
            value = getattr(self, name)
            if value is not None and name in frame.columns:
                mask &= frame[name] == value
        if self.min_hidden is not None:
            mask &= frame["hidden"] >= self.min_hidden
        if self.min_batch is not None:
            mask &= frame["batch"] >= self.min_batch
        if self.k is not None:
            mask &= frame["k"] == self.k
        if self.k_ratio is not None:  # k = round(ratio * n), as resolve_k does
            expected_k = (frame["hidden"] * self.k_ratio).round().clip(lower=1)
            mask &= (frame["k"] == expected_k) | np.isclose(frame["k_ratio"], self.k_ratio, rtol=0.02)
        return mask


def perf_cases(targets: tuple[Target, ...]) -> list[Case]:
    """Every target's cases, in table order, duplicates dropped: the ``perf`` profile."""
    cases: list[Case] = []
    seen: set[str] = set()
    for target in targets:
        for case in target.cases():
            if case.key not in seen:
                seen.add(case.key)
                cases.append(case)
    return cases
