"""What is measured: the ``Case`` spec and the named profiles (grids of cases).

A :class:`Case` is one cell of a benchmark table: a workload (one linear layer of the
paper's synthetic Table 7, or the paper's MLP of Tables 1, 2 and 8), one measurement
(forward, linear-only backprop, overall backprop, training step), and the sizes,
k, device, dtype, selection mode and thread count. Dense and meProp are both measured
for every case (see :mod:`meprop.bench.workloads`).

Profiles (``PROFILES`` / :func:`profile_cases`):

- ``smoke``: a handful of tiny cases, seconds in all (CI runs it end to end).
- ``quick``: the default job (a few minutes on 2 CPU cores): hidden {500, 1024, 4096},
  k ratio {1%, 4%, 10%, 50%}, batch {1, 64, 1024}, cpu.
- ``paper``: the paper's shapes (h=500, k 5/10/20/80, batch 1/10/50; Table 7's
  h=8192, batch 1024, k 8..512; Table 8's MLP h=8192).
- ``full``: hidden up to 8192, k ratio 0.5%..100%, batch 1..1024, cpu and cuda.
- ``perf``: every row of issue 5's target table (float32, 2 threads); the targets
  themselves, and the cases each needs, are :data:`meprop.bench.targets.TARGETS`.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable

from meprop._checks import check_choice, check_k, check_k_ratio, resolve_k
from meprop.selection import MODES

__all__ = [
    "Case",
    "Profile",
    "WORKLOADS",
    "MEASUREMENTS",
    "DTYPES",
    "PROFILES",
    "MLP_IN_FEATURES",
    "LSTM_STEPS",
    "LSTM_IN_FEATURES",
    "profile_cases",
    "grid",
    "check_device",
]

#: ``linear``: one layer ``in_features -> hidden``; ``mlp``: ``in_features -> hidden x layers
#: -> classes`` with ReLU, meProp on the hidden layers, the output layer dense; ``lstm``: the
#: paper's POS tagger (Section 4): a 1-layer LSTM ``in_features -> hidden`` over
#: :data:`LSTM_STEPS` steps (k counts among the 4·hidden gate entries) and a dense
#: ``hidden -> classes`` head; dense is ``nn.LSTM``, meProp ``MepropLSTM``.
WORKLOADS = ("linear", "mlp", "lstm")
#: Time steps of the ``lstm`` workload (a sentence of the POS corpus: 25 tokens).
LSTM_STEPS = 25
#: Default ``in_features`` of the ``lstm`` workload (the tagger's word-embedding size).
LSTM_IN_FEATURES = 100
#: forward pass; backward of the linear layer(s) alone for a fixed output gradient;
#: the whole ``loss.backward()``; forward + backward + optimizer step.
MEASUREMENTS = ("forward", "linear_backward", "overall_backward", "train_step")
DTYPES = ("float32", "float64", "float16", "bfloat16")
#: MNIST's 28 x 28 input: the MLP's default ``in_features``.
MLP_IN_FEATURES = 784

_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def check_device(device: object, name: str = "device") -> str:
    """Return ``device`` if it is ``"cpu"``, ``"cuda"`` or ``"cuda:N"``."""
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        raise ValueError(f"{name} must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return device


@dataclass(frozen=True)
class Case:
    """One benchmark cell; dense and meProp are both measured for it.

    ``in_features`` None means ``hidden`` for ``linear`` (a square n x n layer, as in
    the paper's Table 7) and 784 for ``mlp``. ``threads`` None means torch's current
    count; the runner records the resolved number (:meth:`resolved`). ``layers`` is
    the number of hidden layers of the MLP (ignored, and recorded as 1, for ``linear``).
    """

    workload: str
    measurement: str
    hidden: int
    k: int
    batch: int
    device: str = "cpu"
    dtype: str = "float32"
    mode: str = "unified"
    threads: int | None = None
    in_features: int | None = None
    layers: int = 2
    classes: int = 10

    def __post_init__(self) -> None:
        check_choice(self.workload, "workload", WORKLOADS)
        check_choice(self.measurement, "measurement", MEASUREMENTS)
        check_k(self.hidden, "hidden")
        check_k(self.k)
        if self.k > self.out_features:
            what = "4 * hidden" if self.workload == "lstm" else "hidden"
            raise ValueError(f"k must be at most {what}={self.out_features}, got k={self.k}")
        check_k(self.batch, "batch")
        check_device(self.device)
        check_choice(self.dtype, "dtype", DTYPES)
        check_choice(self.mode, "mode", MODES)
        if self.threads is not None:
            check_k(self.threads, "threads")
        if self.in_features is None:
            default = {"linear": self.hidden, "mlp": MLP_IN_FEATURES, "lstm": LSTM_IN_FEATURES}[self.workload]
            object.__setattr__(self, "in_features", default)
        check_k(self.in_features, "in_features")
        if self.workload in ("linear", "lstm"):
            object.__setattr__(self, "layers", 1)
        check_k(self.layers, "layers")
        check_k(self.classes, "classes")

    @property
    def out_features(self) -> int:
        """The width k is taken from: hidden, or the 4·hidden gate entries of the LSTM."""
        return 4 * self.hidden if self.workload == "lstm" else self.hidden

    @property
    def k_ratio(self) -> float:
        """k / hidden (k / (4·hidden) for the LSTM)."""
        return self.k / self.out_features

    @property
    def ideal(self) -> float:
        """hidden / k (4·hidden / k for the LSTM): the ideal linear-only backprop speedup."""
        return self.out_features / self.k

    @property
    def key(self) -> str:
        """A stable string id (all fields; ``threads`` as given, ``auto`` when None)."""
        threads = "auto" if self.threads is None else str(self.threads)
        return (
            f"{self.workload}/{self.measurement}/m{self.in_features}-n{self.hidden}"
            f"x{self.layers}-c{self.classes}/k{self.k}/b{self.batch}/{self.mode}/"
            f"{self.device}/{self.dtype}/t{threads}"
        )

    def resolved(self, threads: int) -> "Case":
        """This case with ``threads`` filled in when it was None."""
        return self if self.threads is not None else dataclasses.replace(self, threads=threads)

    def replace(self, **changes) -> "Case":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The ``case`` object of a results record (docs/results_schema.md)."""
        return {
            "workload": self.workload,
            "measurement": self.measurement,
            "hidden": self.hidden,
            "in_features": self.in_features,
            "layers": self.layers,
            "classes": self.classes,
            "k": self.k,
            "k_ratio": self.k_ratio,
            "batch": self.batch,
            "device": self.device,
            "dtype": self.dtype,
            "mode": self.mode,
            "threads": self.threads,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Case":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{name: value for name, value in data.items() if name in names})


def grid(
    *,
    workload: Iterable[str] = ("linear",),
    measurement: Iterable[str] = ("linear_backward",),
    hidden: Iterable[int] = (1024,),
    k_ratio: Iterable[float] | None = None,
    k: Iterable[int] | None = None,
    batch: Iterable[int] = (64,),
    device: Iterable[str] = ("cpu",),
    mode: Iterable[str] = ("unified",),
    dtype: Iterable[str] = ("float32",),
    threads: int | None = None,
    layers: int = 2,
    in_features: int | None = None,
) -> list[Case]:
    """The Cartesian product of the given axes as cases (the CLI's custom grid).

    Give ``k_ratio`` (resolved per hidden size to ``max(1, round(ratio * hidden))``)
    or ``k`` (absolute), or both; with neither, k ratio 0.1. Absolute k larger than a
    hidden size is an error. Duplicates (two ratios resolving to the same k) are
    dropped, order is kept.
    """
    ratios = [check_k_ratio(r, "k_ratio") for r in (k_ratio or ())]
    ks = [check_k(v, "k") for v in (k or ())]
    if not ratios and not ks:
        ratios = [0.1]
    cases: list[Case] = []
    seen: set[str] = set()
    for w, meas, n, b, dev, md, dt in itertools.product(
        workload, measurement, hidden, batch, device, mode, dtype
    ):
        n = check_k(n, "hidden")
        width = 4 * n if w == "lstm" else n  # the LSTM's k counts among its 4n gate entries
        kvals = [resolve_k(None, r, width) for r in ratios] + [resolve_k(v, None, width) for v in ks]
        for kv in kvals:
            case = Case(w, meas, n, kv, b, dev, dt, md, threads, in_features, layers)
            if case.key not in seen:
                seen.add(case.key)
                cases.append(case)
    return cases


# --------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class Profile:
    """A named grid and the timing budget that fits it.

    ``budget_s`` is the per-case time budget (dense and meProp together, warm-up
    excluded), ``min_samples`` / ``max_samples`` bound the samples per side.
    """

    name: str
    description: str
    build: Callable[[], list[Case]] = field(repr=False)
    budget_s: float = 1.0
    warmup_s: float = 0.1
    min_samples: int = 5
    max_samples: int = 200

    def cases(self) -> list[Case]:
        return self.build()


def _smoke() -> list[Case]:
    tiny = dict(hidden=32, batch=4, threads=1)
    cases = [
        Case("linear", m, k=4, mode=md, **tiny)
        for m in ("forward", "linear_backward", "overall_backward", "train_step")
        for md in ("unified", "per_example")
    ]
    cases += [
        Case("mlp", m, k=4, mode="unified", in_features=16, **tiny)
        for m in ("linear_backward", "overall_backward", "train_step")
    ]
    return cases


_QUICK_HIDDEN = (500, 1024, 4096)
_QUICK_RATIOS = (0.01, 0.04, 0.1, 0.5)
_QUICK_BATCH = (1, 64, 1024)


def _quick() -> list[Case]:
    # The main job. Linear-only backprop over the whole grid for both top-k modes; the
    # forward (k does not change it: one k ratio); the paper's MLP (784-n-n-10) overall
    # backprop over the k ratios for batch 64 and 1024, and its training step.
    axes = dict(hidden=_QUICK_HIDDEN, batch=_QUICK_BATCH)
    cases = grid(measurement=("linear_backward",), k_ratio=_QUICK_RATIOS,
                 mode=("unified", "per_example"), **axes)
    cases += grid(measurement=("forward",), k_ratio=(0.04,), mode=("unified",), **axes)
    cases += grid(workload=("mlp",), measurement=("overall_backward",), k_ratio=_QUICK_RATIOS,
                  hidden=_QUICK_HIDDEN, batch=(64, 1024), mode=("unified", "per_example"))
    cases += grid(workload=("mlp",), measurement=("train_step",), k_ratio=(0.04,),
                  hidden=_QUICK_HIDDEN, batch=(64, 1024), mode=("unified",))
    return cases


def _paper() -> list[Case]:
    # Tables 1-2: h=500 MLP (784-500-500-10), k 5/10/20/80, batch 1/10/50 (CPU, per-example).
    cases = grid(workload=("linear", "mlp"), measurement=("linear_backward", "overall_backward"),
                 hidden=(500,), k=(5, 10, 20, 80), batch=(1, 10, 50),
                 mode=("per_example", "unified"))
    cases += grid(workload=("mlp",), measurement=("forward",), hidden=(500,), k=(20,),
                  batch=(1, 10, 50), mode=("per_example",))
    # Table 7: synthetic 8192 x 8192 layer, batch 1024, k 8..512 (unified).
    table7_k = (8, 16, 32, 64, 128, 256, 512)
    cases += grid(measurement=("linear_backward",), hidden=(8192,), k=table7_k, batch=(1024,),
                  mode=("unified",))
    # Table 8: MLP 784-8192-8192-10, overall backprop, batch 1024 (unified).
    cases += grid(workload=("mlp",), measurement=("overall_backward",), hidden=(8192,),
                  k=table7_k, batch=(1024,), mode=("unified",))
    return cases


def _full() -> list[Case]:
    ratios = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
    common = dict(k_ratio=ratios, batch=(1, 16, 64, 256, 1024), device=("cpu", "cuda"),
                  mode=("per_example", "unified"))
    cases = grid(measurement=("forward", "linear_backward", "overall_backward"),
                 hidden=(500, 1024, 2048, 4096, 8192), **common)
    cases += grid(workload=("mlp",), measurement=("overall_backward", "train_step"),
                  hidden=(500, 1024, 4096, 8192), **common)
    return cases


def _perf() -> list[Case]:
    # Every row of issue 5's target table; the targets (and so these cases) are defined
    # once, in meprop.bench.targets (imported here: that module imports Case from this one).
    from meprop.bench.targets import perf_cases

    return perf_cases()


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("smoke", "a few tiny cases, seconds in all (CI)", _smoke,
                budget_s=0.02, warmup_s=0.0, min_samples=3, max_samples=10),
        Profile("quick", "hidden {500,1024,4096} x k ratio {1,4,10,50}% x batch {1,64,1024}, cpu",
                _quick, budget_s=0.6, warmup_s=0.05, min_samples=3, max_samples=100),
        Profile("paper", "the paper's shapes: h=500 (Tables 1-2), h=8192 B=1024 (Tables 7-8)",
                _paper, budget_s=2.0, warmup_s=0.1, min_samples=5, max_samples=200),
        Profile("full", "hidden 500..8192 x k ratio 0.5%..100% x batch 1..1024, cpu and cuda",
                _full, budget_s=1.5, warmup_s=0.1, min_samples=5, max_samples=200),
        Profile("perf", "every row of issue 5's target table, float32, 2 threads", _perf,
                budget_s=4.0, warmup_s=0.2, min_samples=7, max_samples=300),
    )
}


def profile_cases(name: str) -> list[Case]:
    """The cases of the named profile (one of :data:`PROFILES`)."""
    check_choice(name, "profile", PROFILES)
    return PROFILES[name].cases()

