"""Presets of ``meprop converge``: workload, variants, targets, seeds, lr grid, length.

Each :class:`ConvergencePreset` builds its workload (full or ``quick``) and names its
variants (dense first: it is the reference of the ratios); a preset with several settings
(``mnist-width``: one per width and batch) gives them as :class:`Cell` s. Targets are fixed
before training, three per preset (each its own column): the MNIST presets use the paper's
Table 1 setting (h=500, 2 hidden layers, batch 10, 1 thread) and 97.0/97.5/98.0% dev
accuracy; POS (Table 1: LSTM h=500, batch 1 sentence, k=5) and the character language
model (:mod:`meprop.lab.converge.lm`) take 97/99/100% of dense's median best over the seeds.
Full runs use 5 seeds (POS 3) and a grid of three learning rates around the preset's,
tuned per arm on the middle target. The ``quick`` plans (a data subset, a few hundred steps,
2 seeds, the preset's lr only; all of ``make converge`` in about two minutes on two cores)
feed ``make report``; their targets are lower and are said in the description.

A :class:`meprop.lab.converge.loop.Variant` carries the selection ``mode``, a k ``schedule``
spec and an ``error_feedback`` decay (:mod:`meprop.lab.converge.remedies`); ``mnist-remedies``
(the paper's setting) and ``mnist-remedies-wide`` (h=2048, batch 64, k = 4% of h) set the
remedies alone and combined next to dense (:func:`remedy_arms`), and :func:`with_remedies`
adds them to any variant list (``meprop converge --schedule ... --error-feedback ...``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from meprop.lab.converge.loop import Variant
from meprop.lab.converge.time_to_target import Target
from meprop.lab.paper import setups
from meprop.lab.paper.train import TrainConfig

__all__ = ["ConvergencePreset", "CONVERGENCE_PRESETS", "Cell", "Plan", "WIDTHS", "WIDTH_BATCHES", "default_grid",
           "VariantChoice", "sweep_variants", "with_remedies", "remedy_arms", "describe_variant"]


@dataclass(frozen=True)
class Plan:
    """Length, evaluation interval and what is measured: ``epochs`` (or ``max_steps``),
    ``eval_every`` steps, the ``targets`` (fixed before training; the middle one tunes the lr),
    ``seeds`` (paired: each changes the initialisation and the data order), the preset's ``lr``
    (None: the workload's default) and ``lr_grid`` (None: :func:`default_grid` of it)."""

    targets: tuple
    eval_every: int
    epochs: float | None = None
    max_steps: int | None = None
    patience: int | None = None
    seeds: int = 5
    lr: float | None = None
    lr_grid: tuple | None = None

    @property
    def target(self) -> Target:
        """The middle target: the one the lr is tuned on."""
        return self.targets[len(self.targets) // 2]

    def grid(self) -> tuple:
        return self.lr_grid if self.lr_grid is not None else default_grid(self.lr)


def default_grid(lr: float | None) -> tuple:
    """Three learning rates around ``lr``: lr / 3, lr, 3 lr (``(None,)``: the workload's only)."""
    return (None,) if lr is None else (lr / 3, lr, lr * 3)


@dataclass(frozen=True)
class Cell:
    """One measured setting of a preset: its name ("" for a single-setting preset), a workload
    maker (no argument) and its variants (dense first)."""

    name: str
    make_workload: object
    variants: tuple


@dataclass(frozen=True)
class ConvergencePreset:
    description: str
    make_workload: object  # Callable[[bool], workload]: quick -> workload
    variants: tuple
    full: Plan
    quick: Plan
    quick_variants: tuple | None = None
    make_cells: object = None  # Callable[[bool], list[Cell]]: several settings (a width map)

    def plan(self, quick: bool) -> Plan:
        return self.quick if quick else self.full

    def variant_list(self, quick: bool) -> tuple:
        return self.quick_variants if quick and self.quick_variants is not None else self.variants

    def cells(self, quick: bool, choice: VariantChoice | None = None) -> list:
        """The settings to measure, each cell's variants passed through ``choice`` (the command
        line's sweep, remedies and ``--only``; an ``--only`` label no cell has is refused)."""
        if self.make_cells is not None:
            cells = self.make_cells(quick)
        else:
            cells = [Cell("", lambda: self.make_workload(quick), tuple(self.variant_list(quick)))]
        return cells if choice is None else choice.cells(cells)


@dataclass(frozen=True)
class VariantChoice:
    """What the command line does to the variants of every cell: ``sweep`` replaces them
    (``--k``, ``--mode``), ``schedules`` and ``decays`` add the remedies to each meProp variant
    (:func:`with_remedies`), and ``only`` keeps dense and the labels it names."""

    sweep: tuple | None = None
    schedules: tuple = ()
    decays: tuple = ()
    only: tuple = ()

    def expand(self, variants) -> tuple:
        rows = tuple(self.sweep if self.sweep is not None else variants)
        return with_remedies(rows, self.schedules, self.decays) if self.schedules or self.decays else rows

    def cells(self, cells: list) -> list:
        expanded = [self.expand(cell.variants) for cell in cells]
        labels = sorted({v.label for rows in expanded for v in rows})
        unknown = sorted(set(self.only) - set(labels))
        if unknown:
            raise ValueError(f"--only {unknown}: no such variant; accepted: {labels}")
        return [Cell(cell.name, cell.make_workload,
                     tuple(v for v in rows if v.k is None or not self.only or v.label in self.only))
                for cell, rows in zip(cells, expanded)]


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


def _pair_and_feedback(k: int) -> tuple:
    """:func:`_pair` and the lazy arm with error feedback (decay 1): on the LM, top-k alone can
    collapse the residual stream (docs/time_to_accuracy.md, "The remedies")."""
    return (*_pair(k), Variant(f"meProp k={k} +EF 1", k=k, optimizer_mode="lazy", error_feedback=1.0))


def _with_and_without_feedback(k: int) -> tuple:
    """Dense and top-k with the exact (fused) Adam, alone and with error feedback (decay 1): the
    steps penalty and its remedy side by side, one optimizer for all (``make report``'s view)."""
    return (*_pair(k, lazy=False), Variant(f"meProp k={k} +EF 1", k=k, error_feedback=1.0))


def sweep_variants(ks, modes=("per_example", "unified"), optimizer_modes=("lazy", "exact")) -> tuple:
    """Dense, then one meProp variant per (k, mode, optimizer mode)."""
    rows = [Variant("dense")]
    for k in ks:
        for mode in modes:
            for opt in optimizer_modes:
                name = "top-k" if mode == "per_example" else mode
                rows.append(Variant(f"{name} k={k} ({opt})", k=k, mode=mode, optimizer_mode=opt))
    return tuple(rows)


def with_remedies(variants, schedules=(), decays=()) -> tuple:
    """Each meProp variant alone and with every (schedule or none) x (error-feedback decay or none)."""
    rows = []
    for variant in variants:
        if variant.k is None:
            rows.append(variant)
            continue
        for schedule in (None, *schedules):
            for decay in (None, *decays):
                suffix = (f" +schedule {schedule}" if schedule else "") + (f" +EF {decay:g}" if decay else "")
                rows.append(replace(variant, label=variant.label + suffix, schedule=schedule, error_feedback=decay))
    return tuple(rows)


def remedy_arms(k: int, warmup: int, decay: float = 1.0) -> tuple:
    """Dense, top-k, and the remedies alone and combined, every meProp arm with the lazy Adam."""
    wu, ef = f"warmup:{warmup}", decay

    def arm(label, mode="per_example", schedule=None, error_feedback=None):
        return Variant(label, k=k, mode=mode, optimizer_mode="lazy", schedule=schedule, error_feedback=error_feedback)
    return (Variant("dense"), arm(f"top-k k={k}"), arm(f"top-k +warm-up {warmup}", schedule=wu),
            arm(f"sampled k={k}", "sampled"), arm(f"sampled +warm-up {warmup}", "sampled", wu),
            arm(f"top-k +EF {ef:g}", error_feedback=ef), arm(f"unified k={k}", "unified"),
            arm(f"top-k +warm-up {warmup} +EF {ef:g}", schedule=wu, error_feedback=ef))


def describe_variant(variant) -> str:
    """``label (k, mode, optimizer, schedule, error feedback)`` for listings."""
    if variant.k is None:
        return f"{variant.label} (dense)"
    parts = [f"k={variant.k}", variant.mode, f"{variant.optimizer_mode} optimizer"]
    parts += [f"schedule {variant.schedule}"] if variant.schedule else []
    parts += [f"error feedback {variant.error_feedback:g}"] if variant.error_feedback is not None else []
    return f"{variant.label} ({', '.join(parts)})"


def _absolute(*values: float) -> tuple:
    return tuple(Target(absolute=v) for v in values)


def _fractions(*values: float) -> tuple:
    return tuple(Target(fraction=v) for v in values)


_MNIST_FULL = Plan(_absolute(97.0, 97.5, 98.0), eval_every=1000, epochs=20, patience=10, lr=1e-3)
_MNIST_QUICK = Plan(_absolute(80.0, 85.0, 90.0), eval_every=100, max_steps=600, seeds=2, lr=1e-3, lr_grid=(1e-3,))
_RELATIVE = _fractions(0.97, 0.99, 1.0)
WIDTHS = (500, 1024, 2048, 4096)
WIDTH_BATCHES = (10, 64)


def _width_cells(quick: bool) -> list:
    """mnist-width: 784-h-h-10 per (h, batch), k = 4% of h, per-example and unified, lazy Adam."""
    from meprop.lab.converge.paper_workload import PaperWorkload
    from meprop.lab.paper import data as datasets

    widths, batches, limit = ((128, 512), (64,), 3000) if quick else (WIDTHS, WIDTH_BATCHES, None)
    loaded: dict = {}

    def load():
        if "data" not in loaded:
            loaded["data"] = datasets.load_mnist(limit=limit)
        return loaded["data"]
    cells = []
    for batch in batches:
        for hidden in widths:
            k = max(1, round(0.04 * hidden))
            config = replace(_MNIST, hidden=hidden, batch=batch, limit=limit)
            variants = (Variant("dense"), Variant(f"top-k k={k} (lazy)", k=k, optimizer_mode="lazy"),
                        Variant(f"unified k={k} (lazy)", k=k, mode="unified", optimizer_mode="lazy"))
            cells.append(Cell(f"h{hidden}-b{batch}", lambda c=config, n=f"mnist-width-h{hidden}-b{batch}":
                              PaperWorkload(n, c, load), variants))
    return cells

CONVERGENCE_PRESETS: dict[str, ConvergencePreset] = {
    "mnist-adam": ConvergencePreset(
        "Table 1 MNIST MLP (h=500, 2 layers, batch 10, Adam, 1 thread): dense vs meProp k=20 with the "
        "exact and the lazy Adam; targets 97.0/97.5/98.0% dev (quick: 5k images, 600 steps, 80/85/90%; "
        "dense vs k=20 with and without error feedback, fused Adam)",
        _paper("mnist-adam", _MNIST, "load_mnist", 5000), _pair(20), _MNIST_FULL, _MNIST_QUICK,
        quick_variants=_with_and_without_feedback(20)),
    "mnist-adagrad": ConvergencePreset(
        "Table 1 MNIST MLP with AdaGrad (lr 0.01): dense vs meProp k=10; targets 97.0/97.5/98.0% dev",
        _paper("mnist-adagrad", replace(_MNIST, optimizer="adagrad"), "load_mnist", 5000), _pair(10, lazy=False),
        replace(_MNIST_FULL, lr=0.01), replace(_MNIST_QUICK, lr=0.01, lr_grid=(0.01,))),
    "mnist-adam-release": ConvergencePreset(
        "mnist-adam with the authors' release's training choices (dropout 0.1, dense bias gradient, "
        "its init; docs/accuracy_notes.md); targets 97.0/97.5/98.0% dev",
        _paper("mnist-adam-release", _RELEASE, "load_mnist", 5000), _pair(20), _MNIST_FULL, _MNIST_QUICK),
    "mnist-sweep": ConvergencePreset(
        "MNIST (Table 1 setting) across k, selection mode (per-example, unified) and optimizer mode "
        "(lazy, exact), next to dense; targets 97.0/97.5/98.0% dev (one lr, 3 seeds)",
        _paper("mnist-sweep", _MNIST, "load_mnist", 5000), sweep_variants((10, 20, 50, 100)),
        replace(_MNIST_FULL, seeds=3, lr_grid=(1e-3,)), _MNIST_QUICK,
        quick_variants=sweep_variants((20, 50), modes=("per_example", "unified"), optimizer_modes=("lazy",))),
    "mnist-width": ConvergencePreset(
        "Where does meProp pay off? MNIST MLP 784-h-h-10, h in {500, 1024, 2048, 4096}, batch 10 and 64: "
        "dense vs k = 4% of h, per-example and unified, lazy Adam; targets 97.0/97.5/98.0% dev, one lr "
        "(quick: h in {128, 512}, batch 64, 3k images, 300 steps, 80/85/90%)",
        None, (), replace(_MNIST_FULL, lr_grid=(1e-3,)),
        replace(_MNIST_QUICK, max_steps=300, eval_every=50), make_cells=_width_cells),
    "mnist-remedies": ConvergencePreset(
        "Remedies for the steps penalty at the paper's setting (MNIST MLP h=500, batch 10, k=20, lazy Adam): "
        "top-k, dense warm-up (3000 steps), unbiased sampling, error feedback (decay 1), unified, and "
        "warm-up + error feedback, vs dense (fused Adam); targets 97.0/97.5/98.0% dev (quick: 3k images, "
        "600 steps, warm-up 150, 80/85/90%)",
        _paper("mnist-remedies", _MNIST, "load_mnist", 3000), remedy_arms(20, 3000),
        replace(_MNIST_FULL, lr_grid=(1e-3,)), _MNIST_QUICK,
        quick_variants=remedy_arms(20, 150)),
    "mnist-remedies-wide": ConvergencePreset(
        "mnist-remedies where the step gain is larger: MNIST MLP h=2048, batch 64, k=82 (4% of h), warm-up "
        "500 steps (~32k examples); targets 97.0/97.5/98.0% dev (quick: 3k images, 150 steps, warm-up 30, "
        "80/85/90%)",
        _paper("mnist-remedies-wide", replace(_MNIST, hidden=2048, batch=64), "load_mnist", 3000),
        remedy_arms(82, 500), replace(_MNIST_FULL, lr_grid=(1e-3,)),
        replace(_MNIST_QUICK, max_steps=150, eval_every=50), quick_variants=remedy_arms(82, 30)),
    "pos-adam": ConvergencePreset(
        "Table 1 POS LSTM (h=500, batch 1 sentence, Adam): dense vs meProp k=5 (among the 4h gates); "
        "targets 97/99/100% of dense's median best dev accuracy (quick: 300 sentences, h=100, 90/95/97%)",
        _paper("pos-adam", _POS, "load_pos", 300, {"hidden": 100}), _pair(5, lazy=False),
        Plan(_RELATIVE, eval_every=2000, epochs=5, seeds=3, lr=1e-3),
        Plan(_fractions(0.9, 0.95, 0.97), eval_every=100, max_steps=500, seeds=2, lr=1e-3, lr_grid=(1e-3,))),
    "lm": ConvergencePreset(
        "Character-level transformer language model (2 pre-LN blocks, d=128; quick: d=64, k=8) on the POS "
        "corpus's text; meProp on every projection but the output head; targets 97/99/100% of dense's "
        "median best next-character accuracy (quick: 200 steps, 90/95/97%); top-k with and without error "
        "feedback", _lm, _pair_and_feedback(16),
        Plan(_RELATIVE, eval_every=200, max_steps=4000, lr=1e-3),
        Plan(_fractions(0.9, 0.95, 0.97), eval_every=50, max_steps=200, seeds=2, lr=1e-3, lr_grid=(1e-3,)),
        quick_variants=_pair_and_feedback(8)),
}
