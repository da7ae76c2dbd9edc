"""Issue 5's (and issue 10's) performance targets, defined once: what the ``perf`` profile runs and what the report judges.

Each :class:`Target` is one row of issue 5's table (the paper's claim, Sun et al. 2017
Section 4 / Tables 7-8, restated as speedups this project's 2-core CPU must reach, float32,
2 threads, ratios of medians from one run with dense and meProp interleaved). A target
carries three things:

- the number: ``minimum`` (a speedup; a k ratio for ``kind="break_even"``);
- the row-matching fields (``workload``, ``measurement``, ``mode``, ``hidden`` or
  ``min_hidden``, ``batch`` or ``min_batch``, ``k`` or ``k_ratio``, MLP shape), used by
  :meth:`Target.selects` to pick the matching rows of a results frame;
- the concrete :class:`~meprop.bench.cases.Case` objects the ``perf`` profile must run for
  it (:meth:`Target.cases`): derived from the matching fields when they name one case,
  listed explicitly (``perf_cases``) for the break-even grid and the forward rows.

Layering (DESIGN.md): this module is part of the engine; the report
(:mod:`meprop.report.targets`) imports :data:`TARGETS` from here and does the judging.
pandas/numpy are only needed by :meth:`Target.selects` and are imported there.
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from meprop._checks import check_choice, resolve_k
from meprop.bench.cases import MEASUREMENTS, WORKLOADS, Case

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "Target",
    "TARGETS",
    "PERF_TARGETS",
    "KINDS",
    "PERF_THREADS",
    "PERF_DTYPE",
    "perf_case",
    "perf_cases",
]

#: ``speedup``: the matching row's speedup >= minimum; ``break_even``: the smallest
#: break-even k ratio over the matching (hidden, batch) groups >= minimum; ``forward``:
#: the worst forward speedup >= minimum; ``review``: not a timing (shown, never matched).
KINDS = ("speedup", "break_even", "forward", "review")
#: Issue 5 fixes the thread count and dtype of every timing target.
PERF_THREADS = 2
PERF_DTYPE = "float32"


def perf_case(workload: str, measurement: str, hidden: int, batch: int, mode: str, *,
              k: int | None = None, k_ratio: float | None = None,
              in_features: int | None = None, layers: int = 2, threads: int | None = None,
              classes: int = 10) -> Case:
    """One case of the ``perf`` profile: float32, :data:`PERF_THREADS` threads unless given.

    Give exactly one of ``k`` and ``k_ratio`` (resolved as ``max(1, round(ratio * hidden))``).
    """
    width = 4 * hidden if workload == "lstm" else hidden  # the LSTM's k counts among 4h gate entries
    return Case(workload, measurement, hidden, resolve_k(k, k_ratio, width), batch,
                dtype=PERF_DTYPE, mode=mode, threads=PERF_THREADS if threads is None else threads,
                in_features=in_features, layers=layers, classes=classes)


@dataclass(frozen=True)
class Target:
    """One row of issue 5's target table.

    Matching fields left None match anything; ``workload=None`` matches every workload
    (the forward target covers every forward row). ``perf_cases`` lists the cases the
    ``perf`` profile runs for a target whose fields do not name one case (a grid, or
    several forward rows); leave it empty when they do.
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


def _break_even_grid() -> tuple[Case, ...]:
    # per-example linear-only backprop, n {1024, 4096} x batch {64, 1024} x k/n {5..30}%.
    # k = ceil(ratio * n), so every point's k/n is at least its nominal ratio: "break-even
    # >= 10%" is then tested at k/n >= 10% (round() gives 102/1024 = 9.96% for n = 1024).
    return tuple(
        perf_case("linear", "linear_backward", n, b, "per_example", k=math.ceil(r * n))
        for n in (1024, 4096) for b in (64, 1024) for r in (0.05, 0.10, 0.15, 0.20, 0.30)
    )


def _forward_rows() -> tuple[Case, ...]:
    # the forward of the 784-4096-4096-10 MLP (both modes) and of one 4096 x 4096 layer, k=1%
    return (
        perf_case("mlp", "forward", 4096, 1024, "unified", k_ratio=0.01),
        perf_case("mlp", "forward", 4096, 1024, "per_example", k_ratio=0.01),
        perf_case("linear", "forward", 4096, 1024, "unified", k_ratio=0.01),
    )


def _train_step_target(label, minimum, mode, hidden, batch, k, threads, note):
    # issue 9 defines the target with torch.optim.Adam's defaults on both sides; the perf
    # profile also runs the case with fused Adam (the strongest dense baseline), shown in
    # the report's training-step table next to it
    case = perf_case("mlp", "train_step", hidden, batch, mode, k=k, in_features=784, threads=threads)
    return Target(label, minimum, measurement="train_step", workload="mlp", mode=mode,
                  hidden=hidden, in_features=784, layers=2, batch=batch, k=k, threads=threads,
                  optimizer="lazy", adam="default", note=note,
                  perf_cases=(case, case.replace(adam="fused")))


#: Issue 9's table: the user's whole training step (zero_grad, forward, loss, backward,
#: clip_grad_norm_, step), dense torch.optim.Adam vs convert() + meprop.optim.Adam(lazy=True),
#: both with the constructor's defaults.
_TRAIN_STEP_TARGETS = (
    _train_step_target("train step, MLP 784-4096-4096-10, batch 1024, unified, k=41", 2.8,
                       "unified", 4096, 1024, 41, 2,
                       "Amdahl limit 2.9-3.1x as measured (issue 9 estimated 3.1x): the forward is "
                       "~237 of ~258 ms"),
    _train_step_target("train step, MLP 784-4096-4096-10, batch 64, per-example, k=41", 4.5,
                       "per_example", 4096, 64, 41, 2,
                       "Amdahl limit ~3.7x as measured with a dense baseline that does not page-fault "
                       "(issue 9 estimated 5.6x against one that did)"),
    _train_step_target("train step, MLP 784-4096-4096-10, batch 1, per-example, k=41", 12,
                       "per_example", 4096, 1, 41, 2,
                       "Amdahl limit 8-11x as measured (issue 9 estimated 12-15x): the forward is ~5 ms"),
    _train_step_target("train step, MLP 784-500-500-10, batch 10, per-example, k=20 (1 thread)", 1.5,
                       "per_example", 500, 10, 20, 1,
                       "the paper's MNIST setting; Amdahl limit 2.3-2.5x as measured (issue 9 "
                       "estimated 5x)"),
)

#: Issue 5's table (linear-only backprop: out = in = n; MLP rows: overall backprop).
TARGETS: tuple[Target, ...] = (
    Target("unified, n=8192, batch 1024, k=128 (1.6%)", 30, mode="unified", hidden=8192, batch=1024, k=128,
           note="paper on GPU: 14.5x; ideal 64x"),
    Target("unified, n=8192, batch 1024, k=512 (6.25%)", 11, mode="unified", hidden=8192, batch=1024, k=512,
           note="paper on GPU: 4.4x; ideal 16x"),
    Target("unified, n=4096, batch 1024, k=1%", 30, mode="unified", hidden=4096, batch=1024, k_ratio=0.01),
    Target("unified, n=4096, batch 64, k=10%", 6, mode="unified", hidden=4096, batch=64, k_ratio=0.10),
    Target("per-example, n=4096, batch 1, k=1%", 20, mode="per_example", hidden=4096, batch=1, k_ratio=0.01),
    Target("per-example, n=4096, batch 64, k=1%", 6, mode="per_example", hidden=4096, batch=64, k_ratio=0.01),
    Target("per-example break-even k ratio, n >= 1024, batch >= 64", 0.10, kind="break_even",
           mode="per_example", min_hidden=1024, min_batch=64, perf_cases=_break_even_grid()),
    Target("masked-dense reference never on a fast path", None, kind="review",
           note="a property of the code, checked by review and tests, not by timing"),
    Target("MLP 784-4096-4096-10 overall backprop, k=1%, batch 1024, unified", 20,
           measurement="overall_backward", workload="mlp", mode="unified", hidden=4096, in_features=784,
           layers=2, batch=1024, k_ratio=0.01),
    Target("MLP 784-4096-4096-10 overall backprop, k=1%, batch 1024, per-example", 8,
           measurement="overall_backward", workload="mlp", mode="per_example", hidden=4096,
           in_features=784, layers=2, batch=1024, k_ratio=0.01),
    Target("MLP 784-500-500-10 overall backprop, k=20, batch 1024, unified", 3,
           measurement="overall_backward", workload="mlp", mode="unified", hidden=500, in_features=784,
           layers=2, batch=1024, k=20),
    Target("forward with meProp layers within 5% of dense (worst case)", 1 / 1.05, kind="forward",
           measurement="forward", workload=None, note="speedup >= 0.952 on every forward row",
           perf_cases=_forward_rows()),
    *_TRAIN_STEP_TARGETS,
    # issue 10 (compiled kernels): the paper's own CPU settings, and the two ends of k
    Target("per-example, n=500 (in 784), batch 10, k=20, 1 thread", 3, mode="per_example", hidden=500,
           in_features=784, batch=10, k=20, threads=1, note="issue 10; the paper's MNIST setting"),
    Target("per-example, n=500 (in 784), batch 1, k=20, 1 thread", 3, mode="per_example", hidden=500,
           in_features=784, batch=1, k=20, threads=1, note="issue 10"),
    Target("per-example, n=4096, batch 1024, k=41", 12, mode="per_example", hidden=4096, batch=1024, k=41,
           threads=2, note="issue 10; ideal 100x"),
    Target("per-example, n=4096, batch 64, k=1024 (25%)", 0.95, mode="per_example", hidden=4096, batch=64,
           k=1024, threads=2, note="issue 10: never more than ~5% slower than dense"),
    Target("MepropLSTM backward vs nn.LSTM: T=25, in 100, h=500, k=5, batch 1, 1 thread", 3,
           workload="lstm", mode="per_example", hidden=500, in_features=100, batch=1, k=5, threads=1,
           classes=45, note="issue 10; the paper's POS setting (k of the 2000 gate entries)"),
    Target("MepropLSTM tagger training step (lazy Adam) vs nn.LSTM + Adam, 1 thread", 1.5,
           measurement="train_step", workload="lstm", mode="per_example", hidden=500, in_features=100,
           batch=1, k=5, threads=1, classes=45, optimizer="lazy", adam="default",
           note="issue 10; 45-way dense head"),
    Target("torch.compile(fullgraph=True) of a converted per-example MLP, forward + backward", None,
           kind="review", note="issue 10: tests/test_kernels.py runs it through the kernels"),
)

#: The former name of :data:`TARGETS` (``meprop.bench.PERF_TARGETS``); the same object.
PERF_TARGETS = TARGETS


def perf_cases(targets: tuple[Target, ...] = TARGETS) -> list[Case]:
    """Every target's cases, in table order, duplicates dropped: the ``perf`` profile."""
    cases: list[Case] = []
    seen: set[str] = set()
    for target in targets:
        for case in target.cases():
            if case.key not in seen:
                seen.add(case.key)
                cases.append(case)
    return cases
