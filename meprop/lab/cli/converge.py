"""``meprop converge``: time to accuracy, dense and meProp trained side by side to fixed targets.

A preset (docs/time_to_accuracy.md; ``--quick``: its small variant, used by ``make report``)::

    meprop converge --preset mnist-adam --out results/converge --resume
    meprop converge --preset mnist-width --seeds 3 --out results/width --resume
    meprop converge --preset mnist-adam --quick --out results/converge-quick --resume
    meprop converge --list-presets

Your own model (``module:factory`` returning ``(model, train_batches, evaluate[, loss])``)::

    meprop converge --model mymodels:make --k 20 --target 0.9 --epochs 3 --eval-every 100 --out results/mine

``--seeds N`` (default: the preset's, 5 for full runs) runs N paired seeds (each changes the
initialisation and the data order; within a seed every arm shares start and batches);
``--lr-grid`` tunes each arm's lr separately on its median time to the middle target.
Remedies (docs/remedies.md): ``--mode sampled`` (or any selection mode), ``--schedule SPEC``
and ``--error-feedback DECAY`` add each meProp variant alone and combined with them::

    meprop converge --preset mnist-remedies --quick --seeds 2 --out /tmp/remedies
    meprop converge --preset mnist-adam --k 20 --mode per_example --mode sampled --optimizer-mode lazy \
        --schedule warmup:3000 --error-feedback 1 --out results/remedy-sweep

Records (``convergence``, docs/results_schema.md) go to ``OUT/results.jsonl``, one per
variant and evaluation, flushed as each round ends; the state after each round goes to
``OUT/.state/``, so ``--resume`` continues an interrupted run (per seed) without losing an
evaluation, and refuses in one line when asked for other seeds, targets, grid or variants.
At the end the table over seeds is printed; ``meprop report OUT`` draws it, and
``meprop converge --summarize OUT [OTHER ...]`` prints it again from the records on disk (runs
of one study written to several folders pair by seed), training nothing.
"""

from __future__ import annotations

import argparse
import math
import sys

from meprop.lab.converge.presets import CONVERGENCE_PRESETS, Plan, VariantChoice, describe_variant, sweep_variants
from meprop.lab.converge.remedies import check_error_feedback, check_schedule
from meprop.lab.converge.time_to_target import Target
from meprop.selection import MODES

__all__ = ["configure", "run", "CliError"]


class CliError(ValueError):
    """Bad input, said in one line naming the option."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "presets:\n" + "\n".join(f"  {n:19} {p.description}" for n, p in CONVERGENCE_PRESETS.items())
    what = parser.add_argument_group("what to train")
    what.add_argument("--preset", choices=tuple(CONVERGENCE_PRESETS), help="a preset (see below)")
    what.add_argument("--model", metavar="MODULE:FACTORY", help="your own model (protocol: docs/time_to_accuracy.md)")
    what.add_argument("--quick", action="store_true", help="the preset's small variant (make report runs these)")
    what.add_argument("--list-presets", action="store_true", help="list the presets and their variants, then exit")
    what.add_argument("--summarize", nargs="+", metavar="RESULTS",
                      help="train nothing: print the table over seeds of these results files or folders "
                           "(runs of one study pair by seed, e.g. studies/mnist-adam/seed-*), then exit")
    what.add_argument("--only", action="append", metavar="LABEL", help="keep only these variants (dense is always kept)")
    what.add_argument("--cell", action="append", metavar="NAME",
                      help="only these settings of a preset with several (mnist-width: e.g. h4096-b64; repeatable)")
    what.add_argument("--k", action="append", help="sweep: meProp variants with this k (repeatable)")
    what.add_argument("--mode", action="append", choices=MODES,
                      help="sweep: selection modes (default per_example; sampled, sampled_unified: unbiased)")
    what.add_argument("--optimizer-mode", dest="optimizer_mode", action="append", choices=("lazy", "exact"),
                      help="sweep: optimizer modes (default lazy and exact)")
    what.add_argument("--schedule", action="append", metavar="SPEC",
                      help="remedy: a k schedule (meprop.schedule.parse: warmup:STEPS[,<spec>], "
                           "linear:START_K:STEPS[:LEVELS], cosine:..., interleave:DENSE:SPARSE[:EPOCH_STEPS]); "
                           "each meProp variant also runs with it (repeatable)")
    what.add_argument("--error-feedback", dest="error_feedback", action="append", metavar="DECAY",
                      help="remedy: error feedback with this memory decay in (0, 1]; each meProp variant "
                           "(and each with a --schedule) also runs with it (repeatable)")
    how = parser.add_argument_group("how long, how often, which target, how many seeds")
    how.add_argument("--epochs", help="passes over the training data per variant")
    how.add_argument("--max-steps", dest="max_steps", help="training steps per variant")
    how.add_argument("--eval-every", dest="eval_every", help="steps between evaluations")
    how.add_argument("--target", action="append", help="absolute dev-metric target (e.g. 97.5; repeatable)")
    how.add_argument("--target-fraction", dest="target_fraction", action="append",
                     help="target: this fraction of dense's median best dev metric (repeatable)")
    how.add_argument("--patience", help="stop once all reached the targets and none improved for this many "
                                        "evaluations")
    how.add_argument("--warmup", default="20", help="throwaway warm-up steps per variant (default 20)")
    how.add_argument("--seeds", help="paired seeds (default: the preset's; 5 for full runs)")
    how.add_argument("--seed", default="1", help="the first seed (default 1)")
    how.add_argument("--lr-grid", dest="lr_grid", help="comma-separated learning rates tuned per arm "
                                                       "(default: the preset's lr / 3, x1, x3)")
    out = parser.add_argument_group("output")
    out.add_argument("--out", default="results/converge", help="results folder or .jsonl file")
    out.add_argument("--resume", action="store_true", help="continue an interrupted run in OUT")
    out.add_argument("--quiet", action="store_true", help="print only the final table")


def _int(value, option: str, least: int, default=None):
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or number < least:
        raise CliError(f"{option} must be an integer >= {least}, got {value!r}")
    return number


def _real(value, option: str, accepted: str, ok) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and ok(number)):
        raise CliError(f"{option} must be {accepted}, got {value!r}")
    return number


def _targets(args, base: Plan, metric_range) -> tuple:
    if args.target and args.target_fraction:
        raise CliError("give --target or --target-fraction, not both")
    low, high = metric_range or (-math.inf, math.inf)
    accepted = f"a number in [{low:g}, {high:g}] (the dev metric's range)" if metric_range else "a finite number"
    if args.target:
        return tuple(Target(absolute=_real(v, "--target", accepted, lambda x: low <= x <= high))
                     for v in args.target)
    if args.target_fraction:
        return tuple(Target(fraction=_real(v, "--target-fraction", "a number in (0, 1]", lambda x: 0 < x <= 1))
                     for v in args.target_fraction)
    return base.targets


def _plan(args, preset, metric_range=None) -> Plan:
    base = preset.plan(args.quick) if preset is not None else Plan(
        (Target(fraction=0.99),), eval_every=100, epochs=1, seeds=1)
    epochs = None if args.epochs is None else _real(args.epochs, "--epochs", "a positive finite number",
                                                    lambda x: x > 0)
    max_steps = _int(args.max_steps, "--max-steps", 1)
    if epochs is None and max_steps is None:
        epochs, max_steps = base.epochs, base.max_steps
    grid = None
    if args.lr_grid is not None:
        grid = tuple(_real(v, "--lr-grid", "comma-separated positive finite numbers", lambda x: x > 0)
                     for v in str(args.lr_grid).split(","))
    return Plan(_targets(args, base, metric_range), _int(args.eval_every, "--eval-every", 1, base.eval_every),
                epochs, max_steps, _int(args.patience, "--patience", 1, base.patience),
                _int(args.seeds, "--seeds", 1, base.seeds), base.lr, grid or base.lr_grid)


def _variants(args, preset) -> VariantChoice:
    """The command line's choice of variants, applied to every cell of the preset (or the model)."""
    sweep = None
    if args.k:
        ks = [_int(k, "--k", 1) for k in args.k]
        sweep = sweep_variants(ks, tuple(args.mode or ("per_example",)),
                               tuple(args.optimizer_mode or ("lazy", "exact")))
    elif preset is None:
        raise CliError("--model needs --k (one or more meProp k to set beside dense)")
    schedules = tuple(check_schedule(spec) for spec in getattr(args, "schedule", None) or ())
    decays = tuple(check_error_feedback(d) for d in getattr(args, "error_feedback", None) or ())
    return VariantChoice(sweep, schedules, decays, tuple(args.only or ()))


def _list() -> int:
    for name, preset in CONVERGENCE_PRESETS.items():
        print(f"{name}: {preset.description}")
        for cell in preset.cells(False) if preset.make_cells is not None else [None]:
            if cell is not None:
                print(f"  {cell.name}: " + ", ".join(v.label for v in cell.variants))
        for variant in preset.variants:
            print(f"    {describe_variant(variant)}")
    return 0


def run(args: argparse.Namespace) -> int:
    from meprop.lab.ops.user_model import UserModelError
    from meprop.lab.converge.run import measure
    from meprop.lab.results.store import ResultsLockedError

    if args.list_presets:
        return _list()
    if args.summarize:
        return _summarize(args.summarize)
    if (args.preset is None) == (args.model is None):
        print("meprop converge: give exactly one of --preset and --model (see --help)", file=sys.stderr)
        return 2
    preset = CONVERGENCE_PRESETS.get(args.preset)
    try:
        args.warmup, args.seed = _int(args.warmup, "--warmup", 0), _int(args.seed, "--seed", 0)
        plan = _plan(args, preset, _metric_range(preset, args.quick))
        args.seeds, args.lr_grid = plan.seeds, plan.lr_grid
        return measure(args, preset, plan, _variants(args, preset))
    except ResultsLockedError as error:
        print(f"meprop converge: {error} (another meprop converge is writing to --out {args.out}); wait for it "
              "or choose another --out", file=sys.stderr)
        return 2
    except (ValueError, TypeError, UserModelError, FileExistsError) as error:
        print(f"meprop converge: {error}", file=sys.stderr)
        return 2


def _summarize(paths: list[str]) -> int:
    from meprop.lab.converge.run import format_summary
    from meprop.lab.converge.study import summarize
    from meprop.lab.results.store import ResultsError, load_records

    try:
        summaries = summarize(load_records(paths))
    except (ResultsError, FileNotFoundError) as error:
        print(f"meprop converge --summarize: {error}", file=sys.stderr)
        return 2
    if not summaries:
        print(f"meprop converge --summarize: no time-to-accuracy records (meprop converge output) in "
              f"{' '.join(paths)}", file=sys.stderr)
        return 2
    print(format_summary(summaries))
    return 0


def _metric_range(preset, quick: bool):
    """The dev metric's range of a preset's workload (None: unknown, e.g. a user model)."""
    if preset is None:
        return None
    return (0.0, 100.0)  # every preset scores an accuracy in percent
