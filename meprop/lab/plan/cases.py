"""What is measured: the ``Case`` spec and :func:`grid`, the Cartesian product of cases.

A :class:`Case` is one cell of a benchmark table: a workload (one linear layer of the
paper's synthetic Table 7, or the paper's MLP of Tables 1, 2 and 8), one measurement
(forward, linear-only backprop, overall backprop, training step), and the sizes,
k, device, dtype, selection mode and thread count. Dense and meProp are both measured
for every case (see :mod:`meprop.lab.ops.build`). Its ``to_dict()`` is the ``case``
object of a ``bench`` record (:data:`meprop.lab.results.schema.CASE_FIELDS`). The named
grids (smoke, quick, paper, full, perf) are in :mod:`meprop.lab.plan.profiles`.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Iterable

from meprop.checks import check_choice, check_device, check_k, check_k_ratio, check_positive_int, resolve_k
from meprop.lab.results.schema import CASE_FIELD_DEFAULTS, CASE_FIELDS, MEASUREMENTS
from meprop.lab.workloads import REGISTRY, WORKLOAD_NAMES
from meprop.lab.workloads import workload as workload_spec
from meprop.selection import MODES
from meprop.lab.measurements import measurement as measurement_kind
from meprop.lab.plan.optimizers import OPTIMIZER_CHOICES, torch_optimizer

__all__ = [
    "Case",
    "WORKLOADS",
    "MEASUREMENTS",
    "DTYPES",
    "MLP_IN_FEATURES",
    "LSTM_STEPS",
    "LSTM_IN_FEATURES",
    "OPTIMIZER_MODES",
    "ADAM_IMPLS",
    "grid",
    "check_device",
]

#: The workloads (:mod:`meprop.lab.workloads`, which owns what is specific to each):
#: ``linear``: one layer ``in_features -> hidden``; ``mlp``: ``in_features -> hidden x layers
#: -> classes`` with ReLU, meProp on the hidden layers, the output layer dense; ``lstm``: the
#: paper's POS tagger (Section 4, k among the 4·hidden gate entries); ``transformer``: one
#: GPT-2-style pre-LN block of width ``hidden``; ``model``: a user's own model
#: (``meprop bench --model module:factory``, :mod:`meprop.lab.ops.user_model`).
WORKLOADS = WORKLOAD_NAMES
#: Time steps of the ``lstm`` workload (a sentence of the POS corpus: 25 tokens).
LSTM_STEPS = REGISTRY["lstm"].steps
#: Default ``in_features`` of the ``lstm`` workload (the tagger's word-embedding size).
LSTM_IN_FEATURES = REGISTRY["lstm"].default_in_features(1)
DTYPES = ("float32", "float64", "float16", "bfloat16")
#: The optimizer of a ``train_step``: ``lazy`` (meprop.optim.Adam(lazy=True) on the meProp
#: side, the fast path), ``exact`` (meprop.optim.Adam(lazy=False), torch.optim's algorithm), or
#: ``torch:<name>:<impl>``, one torch optimizer on both sides (:mod:`meprop.lab.plan.optimizers`).
OPTIMIZER_MODES = OPTIMIZER_CHOICES
#: torch's Adam implementation on both sides of a ``train_step``: ``default`` (the
#: constructor's defaults, what most loops write) or ``fused`` (``fused=True``: one kernel
#: for all parameters, torch's fastest Adam and so the strongest dense baseline; meProp's
#: lazy optimizer runs it on the parameters that are not meProp weights).
ADAM_IMPLS = ("default", "fused")
#: MNIST's 28 x 28 input: the MLP's default ``in_features``.
MLP_IN_FEATURES = REGISTRY["mlp"].default_in_features(1)

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
    optimizer: str = CASE_FIELD_DEFAULTS["optimizer"]
    model: str | None = None
    adam: str = CASE_FIELD_DEFAULTS["adam"]
    world_size: int = CASE_FIELD_DEFAULTS["world_size"]

    def __post_init__(self) -> None:
        spec = workload_spec(self.workload)
        check_choice(self.measurement, "measurement", MEASUREMENTS)
        check_positive_int(self.hidden, "hidden")
        check_k(self.k)
        if self.k > self.out_features:
            what = f"{spec.gate_multiple} * hidden" if spec.gate_multiple > 1 else "hidden"
            raise ValueError(f"k must be at most {what}={self.out_features}, got k={self.k}")
        check_positive_int(self.batch, "batch")
        check_device(self.device)
        check_choice(self.dtype, "dtype", DTYPES)
        check_choice(self.mode, "mode", MODES)
        check_choice(self.optimizer, "optimizer", OPTIMIZER_MODES)
        check_choice(self.adam, "adam", ADAM_IMPLS)
        if torch_optimizer(self.optimizer) is not None and self.adam != "default":
            raise ValueError(f"adam must be 'default' with a torch optimizer (its implementation is in its "
                             f"name), got optimizer={self.optimizer!r}, adam={self.adam!r}")
        if spec.needs_model_spec != (self.model is not None):
            raise ValueError(f"model (a 'module:factory' spec) is given exactly for workload 'model', "
                             f"got workload={self.workload!r}, model={self.model!r}")
        if self.model is not None and (not isinstance(self.model, str) or ":" not in self.model):
            raise ValueError(f"model must be a 'module:factory' string, got {self.model!r}")
        if self.threads is not None:
            check_positive_int(self.threads, "threads")
        if self.in_features is None:
            object.__setattr__(self, "in_features", spec.default_in_features(self.hidden))
        check_positive_int(self.in_features, "in_features")
        if not spec.stacks_layers:
            object.__setattr__(self, "layers", 1)
        check_positive_int(self.layers, "layers")
        check_positive_int(self.classes, "classes")
        check_positive_int(self.world_size, "world_size")
        if measurement_kind(self.measurement).distributed != (self.world_size > 1):
            raise ValueError(f"world_size > 1 goes with measurement 'ddp_step' (and 'ddp_step' needs "
                             f"world_size > 1), got measurement={self.measurement!r}, "
                             f"world_size={self.world_size}")

    @property
    def out_features(self) -> int:
        """The width k is taken from: hidden, or the 4·hidden gate entries of the LSTM."""
        return workload_spec(self.workload).k_width(self.hidden)

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
        name = workload_spec(self.workload).key_name(self.model)
        return (
            f"{name}/{self.measurement}/m{self.in_features}-n{self.hidden}"
            f"x{self.layers}-c{self.classes}/k{self.k}/b{self.batch}/{self.mode}/"
            f"{self.device}/{self.dtype}/t{threads}"
            + (f"/opt-{self.optimizer}" if self.optimizer != "lazy" else "")  # lazy keeps the older keys
            + ("/adam-fused" if self.adam == "fused" else "")
            + (f"/w{self.world_size}" if self.world_size > 1 else "")
        )

    def resolved(self, threads: int) -> "Case":
        """This case with ``threads`` filled in when it was None."""
        return self if self.threads is not None else dataclasses.replace(self, threads=threads)

    def replace(self, **changes) -> "Case":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The ``case`` object of a results record (docs/results_schema.md)."""
        return {name: getattr(self, name) for name in CASE_FIELDS}

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
    model: str | None = None,
    world_size: Iterable[int] = (2,),
) -> list[Case]:
    """The Cartesian product of the given axes as cases (the CLI's custom grid).

    ``world_size`` applies to ``ddp_step`` cases only (the others run in one process).

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
        n = check_positive_int(n, "hidden")
        width = workload_spec(w).k_width(n)  # the LSTM's k counts among its 4n gate entries
        kvals = [resolve_k(None, r, width) for r in ratios] + [resolve_k(v, None, width) for v in ks]
        worlds = world_size if measurement_kind(meas).distributed else (1,)
        for kv, world in itertools.product(kvals, worlds):
            case = Case(w, meas, n, kv, b, dev, dt, md, threads, in_features, layers,
                        model=model if workload_spec(w).needs_model_spec else None, world_size=world)
            if case.key not in seen:
                seen.add(case.key)
                cases.append(case)
    return cases
