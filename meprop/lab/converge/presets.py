"""Presets of ``meprop converge``: workload, variants, target, evaluation interval, length.

Each :class:`ConvergencePreset` builds its workload (full or ``quick``) and names its
variants (dense first: it is the reference of the ratios). The MNIST presets use the
paper's Table 1 setting (h=500, 2 hidden layers, batch 10, 1 thread) and the target 97.5%
dev accuracy; POS (Table 1: LSTM h=500, batch 1 sentence, k=5) and the character language
model (:mod:`meprop.lab.converge.lm`) take 99% of dense's best dev accuracy in the same run.
The ``quick`` variants (a data subset, a few thousand steps at most; all of them together
run in about two minutes on two cores) feed ``make report``; their targets are lower
(quick runs stop early) and are said in the report.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from meprop.lab.converge.loop import Variant
from meprop.lab.converge.time_to_target import Target
from meprop.lab.paper import setups
from meprop.lab.paper.train import TrainConfig

__all__ = ["ConvergencePreset", "CONVERGENCE_PRESETS", "sweep_variants"]


@dataclass(frozen=True)
class Plan:
    """Length and evaluation interval: ``epochs`` (or ``max_steps``), ``eval_every`` steps, the target."""

    target: Target
    eval_every: int
    epochs: float | None = None
    max_steps: int | None = None
    patience: int | None = None


@dataclass(frozen=True)
class ConvergencePreset:
    description: str
    make_workload: object  # Callable[[bool], workload]: quick -> workload
    variants: tuple
    full: Plan
    quick: Plan
    quick_variants: tuple | None = None

    def plan(self, quick: bool) -> Plan:
        return self.quick if quick else self.full

    def variant_list(self, quick: bool) -> tuple:
        return self.quick_variants if quick and self.quick_variants is not None else self.variants


_MNIST = TrainConfig(**setups.MNIST, threads=1)
_RELEASE = TrainConfig(**setups.RELEASE, threads=1)
_POS = TrainConfig(**setups.POS, threads=1)


def _paper(name: str, config: TrainConfig, loader: str, quick_limit: int, quick_changes: dict | None = None):
    """A :class:`PaperWorkload` maker; ``loader`` names the loading function of meprop.lab.paper.data."""
    def make(quick: bool):
        from meprop.lab.paper import data as datasets
        from meprop.lab.converge.paper_workload import PaperWorkload

        chosen = replace(config, limit=quick_limit, **(quick_changes or {})) if quick else config
        load = getattr(datasets, loader)
        return PaperWorkload(name, chosen, lambda: load(limit=chosen.limit))
    return make


def _lm(quick: bool):
    from meprop.lab.converge.lm import CharLMWorkload

    return CharLMWorkload(quick=quick, d=64 if quick else 128)


def _pair(k: int, lazy: bool = True) -> tuple:
    rows = [Variant("dense"), Variant(f"meProp k={k}", k=k)]
    if lazy:
        rows.append(Variant(f"meProp k={k} (lazy Adam)", k=k, optimizer_mode="lazy"))
    return tuple(rows)


def sweep_variants(ks, modes=("per_example", "unified"), optimizer_modes=("lazy", "exact")) -> tuple:
    """Dense, then one meProp variant per (k, mode, optimizer mode)."""
    rows = [Variant("dense")]
    for k in ks:
        for mode in modes:
            for opt in optimizer_modes:
                name = "top-k" if mode == "per_example" else mode
                rows.append(Variant(f"{name} k={k} ({opt})", k=k, mode=mode, optimizer_mode=opt))
    return tuple(rows)


_MNIST_FULL = Plan(Target(absolute=97.5), eval_every=1000, epochs=20, patience=10)
_MNIST_QUICK = Plan(Target(absolute=92.0), eval_every=200, epochs=2)

CONVERGENCE_PRESETS: dict[str, ConvergencePreset] = {
    "mnist-adam": ConvergencePreset(
        "Table 1 MNIST MLP (h=500, 2 layers, batch 10, Adam, 1 thread): dense vs meProp k=20 with the "
        "exact and the lazy Adam; target 97.5% dev (quick: 10k images, 92%)",
        _paper("mnist-adam", _MNIST, "load_mnist", 10000), _pair(20), _MNIST_FULL, _MNIST_QUICK),
    "mnist-adagrad": ConvergencePreset(
        "Table 1 MNIST MLP with AdaGrad (lr 0.01): dense vs meProp k=10; target 97.5% dev",
        _paper("mnist-adagrad", replace(_MNIST, optimizer="adagrad"), "load_mnist", 10000), _pair(10, lazy=False),
        _MNIST_FULL, _MNIST_QUICK),
    "mnist-adam-release": ConvergencePreset(
        "mnist-adam with the authors' release's training choices (dropout 0.1, dense bias gradient, "
        "its init; docs/accuracy_notes.md); target 97.5% dev",
        _paper("mnist-adam-release", _RELEASE, "load_mnist", 10000), _pair(20), _MNIST_FULL, _MNIST_QUICK),
    "mnist-sweep": ConvergencePreset(
        "MNIST (Table 1 setting) across k, selection mode (per-example, unified) and optimizer mode "
        "(lazy, exact), next to dense; target 97.5% dev",
        _paper("mnist-sweep", _MNIST, "load_mnist", 10000), sweep_variants((10, 20, 50, 100)), _MNIST_FULL,
        Plan(Target(absolute=92.0), eval_every=250, epochs=1),
        quick_variants=sweep_variants((20, 50), modes=("per_example", "unified"), optimizer_modes=("lazy",))),
    "pos-adam": ConvergencePreset(
        "Table 1 POS LSTM (h=500, batch 1 sentence, Adam): dense vs meProp k=5 (among the 4h gates); "
        "target 99% of dense's best dev accuracy (quick: 400 sentences, h=100)",
        _paper("pos-adam", _POS, "load_pos", 400, {"hidden": 100}), _pair(5, lazy=False),
        Plan(Target(fraction=0.99), eval_every=2000, epochs=5),
        Plan(Target(fraction=0.97), eval_every=100, epochs=2)),
    "lm": ConvergencePreset(
        "Character-level transformer language model (2 pre-LN blocks, d=128; quick: d=64, k=8) on the POS corpus's text; "
        "meProp on every projection but the output head; target 99% of dense's best next-character "
        "accuracy", _lm, _pair(16),
        Plan(Target(fraction=0.99), eval_every=200, max_steps=4000),
        Plan(Target(fraction=0.95), eval_every=50, max_steps=300), quick_variants=_pair(8)),
}
