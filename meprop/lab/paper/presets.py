"""The paper's experiments as presets: named groups of training runs mirroring its tables (Section 4).

Each :class:`Preset` is a base configuration and its runs (``(label, overrides)``), plus
a ``quick`` variant (a subset of the data, few epochs) for ``meprop train --quick``.
The ``mnist-adam-release`` and ``mnist-release*`` presets use the training choices of
the authors' PyTorch release (dropout 0.1, dense bias gradient, its initialisation);
docs/accuracy_notes.md says why they matter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meprop.lab.paper import setups
from meprop.lab.paper.train import TrainConfig

__all__ = ["PRESETS", "Preset", "preset_runs"]

_MNIST = {**setups.MNIST, "epochs": 20}
_MNIST_QUICK = {"limit": 5000, "epochs": 3}
_RELEASE = {**setups.RELEASE, "epochs": 20}
_POS = {**setups.POS, "epochs": 5}
_POS_QUICK = {"limit": 400, "epochs": 2, "hidden": 100}


@dataclass(frozen=True)
class Preset:
    """A named group of runs: ``runs`` are ``(label, config overrides)``; ``quick`` overrides apply with --quick."""

    description: str
    base: dict
    runs: tuple
    quick: dict = field(default_factory=dict)
    quick_runs: tuple | None = None  # a smaller set of runs for --quick (None: the same runs)


def _lazy_run(label: str, k: int) -> tuple[str, dict]:
    return (f"{label} (lazy Adam)", {"k": k, "optimizer_mode": "lazy"})


def _sweep(ks, modes=("per_example", "random")):
    runs = [("dense", {"k": None})]
    for mode in modes:
        name = "top-k" if mode == "per_example" else mode
        runs += [(f"{name} k={k}", {"k": k, "mode": mode}) for k in ks]
    return tuple(runs)


PRESETS: dict[str, Preset] = {
    "mnist-adam": Preset(
        "Table 1/2, MNIST MLP (Adam): h=500, 2 hidden layers, batch 10; dense vs meProp k=20, "
        "with the exact Adam (the paper's) and meprop.optim's lazy Adam",
        _MNIST, (("dense", {"k": None}), ("meProp k=20", {"k": 20}), _lazy_run("meProp k=20", 20)),
        _MNIST_QUICK),
    "mnist-unified": Preset(
        "MNIST MLP (Adam) with unified meProp k=20 (one top-k set per mini-batch), batch 10",
        _MNIST, (("meProp unified k=20", {"k": 20, "mode": "unified"}),), _MNIST_QUICK),
    "mnist-adam-release": Preset(
        "Table 1 MNIST (Adam) setting (h=500, batch 10, per-example k=20) with the training choices of "
        "the authors' PyTorch release: dropout 0.1, dense bias gradient, uniform(+-1/sqrt(out)) init",
        _RELEASE, (("dense", {"k": None}), ("meProp k=20", {"k": 20}), _lazy_run("meProp k=20", 20)),
        _MNIST_QUICK),
    "mnist-release-unified": Preset(
        "Table 6 / the authors' PyTorch release (unified): h=500, batch 50, dropout 0.1, Adam; "
        "dense vs unified meProp k=30",
        {**_RELEASE, "batch": 50},
        (("dense", {"k": None}), ("meProp unified k=30", {"k": 30, "mode": "unified"})), _MNIST_QUICK),
    "mnist-release": Preset(
        "The authors' PyTorch release (per-example): h=512, batch 32, dropout 0.1, Adam; "
        "dense vs per-example meProp k=30",
        {**_RELEASE, "batch": 32, "hidden": 512},
        (("dense", {"k": None}), ("meProp k=30", {"k": 30})), _MNIST_QUICK),
    "mnist-adagrad": Preset(
        "Table 1, MNIST MLP (AdaGrad): h=500, batch 10; dense vs meProp k=10",
        {**_MNIST, "optimizer": "adagrad"}, (("dense", {"k": None}), ("meProp k=10", {"k": 10})), _MNIST_QUICK),
    "mnist-k-sweep": Preset(
        "Figure 3/4 style: MNIST accuracy vs k, top-k vs random-k, with the dense line",
        _MNIST, _sweep((5, 10, 20, 50, 100, 200)), {**_MNIST_QUICK, "epochs": 2},
        quick_runs=_sweep((10, 50))),
    "mnist-table3": Preset(
        "Table 3: meProp k=20 on h=500 vs a dense MLP whose hidden size is 20",
        _MNIST, (("meProp k=20 (h=500)", {"k": 20}), ("dense h=20", {"k": None, "hidden": 20})), _MNIST_QUICK),
    "mnist-dropout": Preset(
        "Table 4: dropout 0.2, dense vs meProp k=25",
        {**_MNIST, "dropout": 0.2}, (("dense", {"k": None}), ("meProp k=25", {"k": 25})), _MNIST_QUICK),
    "pos-adam": Preset(
        "Table 1/2, POS tagging (Adam): embeddings -> LSTM h=500 -> dense classifier, batch 1 sentence; "
        "dense vs meProp k=5 (k counts among the LSTM's 4h gate pre-activations)",
        _POS, (("dense", {"k": None}), ("meProp k=5", {"k": 5})), _POS_QUICK),
    "synthetic": Preset(
        "Smoke test: Gaussian-cluster classification, MLP h=64; dense vs meProp k=8",
        {"task": "synthetic", "hidden": 64, "layers": 2, "batch": 10, "epochs": 5, "limit": 2000},
        (("dense", {"k": None}), ("meProp k=8", {"k": 8})), {"epochs": 2, "limit": 500}),
}


def preset_runs(name: str, *, quick: bool = False, overrides: dict | None = None) -> list[tuple[str, TrainConfig]]:
    """``(label, config)`` of every run of preset ``name`` (``quick``: its small variant)."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {name!r}")
    preset = PRESETS[name]
    runs = preset.quick_runs if quick and preset.quick_runs is not None else preset.runs
    out = []
    for label, run_overrides in runs:
        settings = {**preset.base, **run_overrides, **(preset.quick if quick else {}), **(overrides or {})}
        if settings.get("k") is None:  # a dense run has no meProp rows: no lazy variant
            settings.pop("optimizer_mode", None)
        out.append((label, TrainConfig(**settings)))
    return out
