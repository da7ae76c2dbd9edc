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
from pathlib import Path

from meprop.lab.paper.presets import PRESETS, preset_runs
from meprop.lab.paper.train import OPTIMIZER_MODES, OPTIMIZERS, TASKS, TrainConfig, run_key

__all__ = ["configure", "run"]

#: Options a preset defines itself (refused together with --preset).
_PRESET_OWNED = ("task", "k", "mode", "output_k")
#: Options that override every run of a preset when given.
_OVERRIDABLE = ("optimizer", "optimizer_mode", "lr", "epochs", "batch", "hidden", "layers", "dropout", "embed", "seed",
                "limit", "threads", "device", "bias_grad", "init")


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
    how.add_argument("--optimizer-mode", dest="optimizer_mode", choices=OPTIMIZER_MODES,
                     help="exact: the torch.optim algorithm (default, the paper's); lazy: "
                          "meprop.optim.Adam(lazy=True), row updates of the meProp weights "
                          "(meProp runs only; dense runs of a preset keep exact)")
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


def _finished_runs(records) -> set[str]:
    """Run keys with a record of their last epoch among ``records``."""
    done = set()
    for record in records:
        if record.get("type") == "train" and record["epoch"] == record["config"]["epochs"]:
            done.add(record["run_key"])
    return done


def run(args: argparse.Namespace) -> int:
    from meprop.lab.paper.data import DataCorruptError, DataMissingError
    from meprop.lab.results.store import ResultsLockedError, ResultsWriteError

    if args.list_presets:
        for name, preset in PRESETS.items():
            print(f"{name}: {preset.description}")
            for label, config in preset_runs(name):
                print(f"    {label}: {config.to_dict()}")
        return 0
    try:
        return _run(args)
    except (ValueError, TypeError, FileExistsError, ResultsLockedError, DataMissingError,
            DataCorruptError) as error:
        print(f"meprop train: error: {error}", file=sys.stderr)
        return 2
    except ResultsWriteError as error:  # disk full, I/O error: what was written stays
        print(f"meprop train: error: {error}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    from meprop.checks import check_threads
    from meprop.lab.paper.train import check_device_available, check_ready, train
    from meprop.lab.results.env import snapshot
    from meprop.lab.results.schema import env_record
    from meprop.lab.results.store import RESULTS_FILENAME, ResultsWriter, new_run_id

    if args.out is None:
        raise ValueError("--out is required (a results folder, e.g. results/paper)")
    if args.device is not None:  # cpu, cuda, cuda:N, and present on this machine
        check_device_available(args.device, "--device")
    check_threads(args.threads, "--threads")
    if args.threads is None:
        args.threads = 1
    preset, runs = _plan(args)
    for _, config in runs:  # everything that can fail before training, before the file exists
        check_ready(config)
    path = Path(args.out)
    if path.suffix != ".jsonl":  # a folder (existing or not): its results.jsonl
        path = path / RESULTS_FILENAME
    with ResultsWriter(path, resume=args.resume) as writer:  # locked until the runs end
        done = _finished_runs(writer.records)
        todo = [(label, config) for label, config in runs if run_key(config, preset) not in done]
        for label, config in runs:
            if run_key(config, preset) in done:
                print(f"skipping {preset} / {label}: already finished in {path}")
        if not todo:
            return 0
        run_id = new_run_id()
        writer.write(env_record(run_id, snapshot(threads=args.threads, profile=preset, argv=sys.argv)))
        for label, config in todo:
            result = train(config, writer=writer, run_id=run_id, preset=preset, label=label,
                           progress=not args.no_progress)
            print(f"{preset} / {label}: best dev {result.best['dev_score']:.2f} at epoch {result.best_epoch}, "
                  f"test {result.test_score:.2f}")
    return 0
