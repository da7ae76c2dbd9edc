"""``meprop train``: train the paper's models dense or with meProp, alone or as a paper preset (Section 4).

One run::

    meprop train --task mnist --k 20 --epochs 20 --batch 10 --out results/paper

A preset (a group of runs mirroring a table of the paper; ``--quick`` picks its
small variant: a subset of the data and few epochs)::

    meprop train --preset mnist-adam --quick --out results/quick --resume
    meprop train --list-presets

One run of a preset (e.g. dense and meProp side by side in two processes, two files)::

    meprop train --preset mnist-adam --only dense --out results/paper/mnist-adam-dense.jsonl
    meprop train --preset mnist-adam --only "meProp k=20" --out results/paper/mnist-adam-meprop.jsonl

The ``mnist-adam-release`` and ``mnist-release*`` presets use the training choices of
the authors' PyTorch release (dropout 0.1, dense bias gradient, its initialisation);
docs/accuracy_notes.md says why they matter.

Records go to ``OUT/results.jsonl`` (docs/results_schema.md): one ``env`` record per
invocation, then one ``train`` record per epoch, flushed as each epoch ends. An existing
results file is never overwritten: without ``--resume`` it is refused; with ``--resume``
the new records are appended and runs already finished there (same preset and config)
are skipped.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from meprop.train import OPTIMIZERS, TASKS, TrainConfig, run_key

__all__ = ["PRESETS", "Preset", "preset_runs", "configure", "run"]

_MNIST = {"task": "mnist", "hidden": 500, "layers": 2, "batch": 10, "optimizer": "adam", "epochs": 20}
_MNIST_QUICK = {"limit": 5000, "epochs": 3}
#: The authors' PyTorch release (GPU): Adam defaults, dropout 0.1 after each hidden ReLU,
#: dense bias gradient, its initialisation (uniform(+-1/sqrt(out_features))).
_RELEASE = {**_MNIST, "dropout": 0.1, "bias_grad": "dense", "init": "release"}
_POS = {"task": "pos", "hidden": 500, "batch": 1, "optimizer": "adam", "epochs": 5}
_POS_QUICK = {"limit": 400, "epochs": 2, "hidden": 100}


@dataclass(frozen=True)
class Preset:
    """A named group of runs: ``runs`` are ``(label, config overrides)``; ``quick`` overrides apply with --quick."""

    description: str
    base: dict
    runs: tuple
    quick: dict = field(default_factory=dict)
    quick_runs: tuple | None = None  # a smaller set of runs for --quick (None: the same runs)


def _sweep(ks, modes=("per_example", "random")):
    runs = [("dense", {"k": None})]
    for mode in modes:
        name = "top-k" if mode == "per_example" else mode
        runs += [(f"{name} k={k}", {"k": k, "mode": mode}) for k in ks]
    return tuple(runs)


PRESETS: dict[str, Preset] = {
    "mnist-adam": Preset(
        "Table 1/2, MNIST MLP (Adam): h=500, 2 hidden layers, batch 10; dense vs meProp k=20",
        _MNIST, (("dense", {"k": None}), ("meProp k=20", {"k": 20})), _MNIST_QUICK),
    "mnist-unified": Preset(
        "MNIST MLP (Adam) with unified meProp k=20 (one top-k set per mini-batch), batch 10",
        _MNIST, (("meProp unified k=20", {"k": 20, "mode": "unified"}),), _MNIST_QUICK),
    "mnist-adam-release": Preset(
        "Table 1 MNIST (Adam) setting (h=500, batch 10, per-example k=20) with the training choices of "
        "the authors' PyTorch release: dropout 0.1, dense bias gradient, uniform(+-1/sqrt(out)) init",
        _RELEASE, (("dense", {"k": None}), ("meProp k=20", {"k": 20})), _MNIST_QUICK),
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

#: Options a preset defines itself (refused together with --preset).
_PRESET_OWNED = ("task", "k", "mode", "output_k")
#: Options that override every run of a preset when given.
_OVERRIDABLE = ("optimizer", "lr", "epochs", "batch", "hidden", "layers", "dropout", "embed", "seed",
                "limit", "threads", "device", "bias_grad", "init")


def preset_runs(name: str, *, quick: bool = False, overrides: dict | None = None) -> list[tuple[str, TrainConfig]]:
    """``(label, config)`` of every run of preset ``name`` (``quick``: its small variant)."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {name!r}")
    preset = PRESETS[name]
    runs = preset.quick_runs if quick and preset.quick_runs is not None else preset.runs
    out = []
    for label, run_overrides in runs:
        settings = {**preset.base, **run_overrides, **(preset.quick if quick else {}), **(overrides or {})}
        out.append((label, TrainConfig(**settings)))
    return out


def _k_value(text: str) -> int | None:
    if text == "dense":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive int or 'dense', got {text!r}") from None


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "presets:\n" + "\n".join(f"  {n:15} {p.description}" for n, p in PRESETS.items())
    what = parser.add_argument_group("what to train")
    what.add_argument("--preset", help="a paper preset (see below); runs all its runs")
    what.add_argument("--quick", action="store_true", help="the preset's small variant (data subset, few epochs)")
    what.add_argument("--only", action="append", metavar="LABEL",
                      help="with --preset: run only the run(s) with this label (repeatable), e.g. --only dense")
    what.add_argument("--list-presets", action="store_true", help="list the presets and their runs, then exit")
    what.add_argument("--task", choices=TASKS, help="task of a single run (without --preset)")
    what.add_argument("--k", type=_k_value, help="meProp k per hidden layer (LSTM: among 4h gates); 'dense' (default) for none")
    what.add_argument("--mode", default=None, help="meProp selection: per_example (default), unified, random")
    what.add_argument("--output-k", type=int, dest="output_k", help="the MLP output layer's own k (default: dense)")
    how = parser.add_argument_group("training (with --preset: override every run)")
    how.add_argument("--optimizer", choices=OPTIMIZERS)
    how.add_argument("--lr", type=float, help="learning rate (default: adam 1e-3, adagrad 1e-2)")
    how.add_argument("--epochs", type=int)
    how.add_argument("--batch", type=int, help="mini-batch size (images, or sentences for POS)")
    how.add_argument("--hidden", type=int, help="hidden size (MLP layers, LSTM)")
    how.add_argument("--layers", type=int, help="MLP hidden layers")
    how.add_argument("--dropout", type=float)
    how.add_argument("--bias-grad", dest="bias_grad", choices=("sparse", "dense"),
                     help="MLP meProp layers' bias gradient: kept entries only (sparse, default) or "
                          "the full output gradient (dense, the authors' code)")
    how.add_argument("--init", choices=("torch", "release", "glorot"),
                     help="MLP initialisation: torch (nn.Linear's, default), release (the authors' PyTorch "
                          "release: uniform(+-1/sqrt(out))), glorot (their C# code)")
    how.add_argument("--embed", type=int, help="POS word-embedding size")
    how.add_argument("--seed", type=int)
    how.add_argument("--limit", type=int, help="keep the first N examples (sentences) of each split")
    how.add_argument("--threads", type=int, default=None, help="torch threads per run (default 1, the paper's CPU setting)")
    how.add_argument("--device", help="cpu (default), cuda, cuda:1, ...")
    out = parser.add_argument_group("output")
    out.add_argument("--out", help="results folder (records go to OUT/results.jsonl), or a .jsonl file")
    out.add_argument("--resume", action="store_true", help="append to an existing results file; skip finished runs")
    out.add_argument("--no-progress", action="store_true", help="no progress bars")


def _plan(args: argparse.Namespace) -> tuple[str, list[tuple[str, TrainConfig]]]:
    overrides = {name: getattr(args, name) for name in _OVERRIDABLE if getattr(args, name, None) is not None}
    if args.preset is not None:
        given = [f"--{n.replace('_', '-')}" for n in _PRESET_OWNED if getattr(args, n) is not None]
        if given:
            raise ValueError(f"{', '.join(given)} cannot be combined with --preset (the preset sets them); "
                             f"drop --preset for a single run")
        suffix = "-quick" if args.quick else ""
        runs = preset_runs(args.preset, quick=args.quick, overrides=overrides)
        if getattr(args, "only", None):
            labels = [label for label, _ in runs]
            unknown = [name for name in args.only if name not in labels]
            if unknown:
                raise ValueError(f"--only {unknown[0]!r} is not a run of preset {args.preset!r}; its runs: {labels}")
            runs = [(label, config) for label, config in runs if label in args.only]
        return args.preset + suffix, runs
    if getattr(args, "only", None):
        raise ValueError("--only applies to a --preset only")
    if args.quick:
        raise ValueError("--quick applies to a --preset only")
    if args.task is None:
        raise ValueError("give --task (mnist, pos, synthetic) for a single run, or --preset")
    settings = {"task": args.task, "k": args.k, "output_k": args.output_k, **overrides}
    if args.mode is not None:
        settings["mode"] = args.mode
    config = TrainConfig(**settings)
    label = "dense" if config.k is None else f"meProp k={config.k}" + ("" if config.mode == "per_example" else f" {config.mode}")
    return "custom", [(label, config)]


def _finished_runs(path) -> set[str]:
    from meprop.bench.results import read_records

    done = set()
    for record in read_records(path):
        if record.get("type") == "train" and record["epoch"] == record["config"]["epochs"]:
            done.add(record["run_key"])
    return done


def run(args: argparse.Namespace) -> int:
    from meprop.data import DataCorruptError, DataMissingError

    if args.list_presets:
        for name, preset in PRESETS.items():
            print(f"{name}: {preset.description}")
            for label, config in preset_runs(name):
                print(f"    {label}: {config.to_dict()}")
        return 0
    try:
        return _run(args)
    except (ValueError, TypeError, FileExistsError, DataMissingError, DataCorruptError) as error:
        print(f"meprop train: error: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from meprop.bench.results import RESULTS_FILENAME, ResultsWriter, env_record, new_run_id
    from meprop.bench.system import snapshot
    from meprop.train import check_ready, train

    if args.out is None:
        raise ValueError("--out is required (a results folder, e.g. results/paper)")
    if args.threads is None:
        args.threads = 1
    preset, runs = _plan(args)
    for _, config in runs:
        check_ready(config)
    path = Path(args.out)
    if path.suffix != ".jsonl":  # a folder (existing or not): its results.jsonl
        path = path / RESULTS_FILENAME
    done = _finished_runs(path) if args.resume and path.exists() and path.stat().st_size else set()
    todo = [(label, config) for label, config in runs if run_key(config, preset) not in done]
    for label, config in runs:
        if run_key(config, preset) in done:
            print(f"skipping {preset} / {label}: already finished in {path}")
    if not todo:
        return 0
    run_id = new_run_id()
    with ResultsWriter(path, resume=args.resume) as writer:
        writer.write(env_record(run_id, snapshot(threads=args.threads, profile=preset, argv=sys.argv)))
        for label, config in todo:
            result = train(config, writer=writer, run_id=run_id, preset=preset, label=label,
                           progress=not args.no_progress)
            print(f"{preset} / {label}: best dev {result.best['dev_score']:.2f} at epoch {result.best_epoch}, "
                  f"test {result.test_score:.2f}")
    return 0
