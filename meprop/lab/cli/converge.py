"""``meprop converge``: time to accuracy, dense and meProp trained side by side to the same target.

A preset (docs/time_to_accuracy.md; ``--quick``: its small variant, used by ``make report``)::

    meprop converge --preset mnist-adam --out results/converge --resume
    meprop converge --preset mnist-adam --quick --out results/converge-quick --resume
    meprop converge --list-presets

Your own model (``module:factory`` returning ``(model, train_batches, evaluate[, loss])``)::

    meprop converge --model mymodels:make --k 20 --target 0.9 --epochs 3 --eval-every 100 --out results/mine

Records (``convergence``, docs/results_schema.md) go to ``OUT/results.jsonl``, one per
variant and evaluation, flushed as each round ends; the state after each round goes to
``OUT/.state/``, so ``--resume`` continues an interrupted run without losing an evaluation.
At the end the time-to-target table is printed; ``meprop report OUT`` draws it.
"""

from __future__ import annotations

import argparse
import sys

from meprop.lab.converge.presets import CONVERGENCE_PRESETS, Plan, sweep_variants
from meprop.lab.converge.time_to_target import Target

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "presets:\n" + "\n".join(f"  {n:19} {p.description}" for n, p in CONVERGENCE_PRESETS.items())
    what = parser.add_argument_group("what to train")
    what.add_argument("--preset", choices=tuple(CONVERGENCE_PRESETS), help="a preset (see below)")
    what.add_argument("--model", metavar="MODULE:FACTORY", help="your own model (protocol: docs/time_to_accuracy.md)")
    what.add_argument("--quick", action="store_true", help="the preset's small variant (make report runs these)")
    what.add_argument("--list-presets", action="store_true", help="list the presets and their variants, then exit")
    what.add_argument("--only", action="append", metavar="LABEL", help="keep only these variants (dense is always kept)")
    what.add_argument("--k", type=int, action="append", help="sweep: meProp variants with this k (repeatable)")
    what.add_argument("--mode", action="append", choices=("per_example", "unified"),
                      help="sweep: selection modes (default per_example)")
    what.add_argument("--optimizer-mode", dest="optimizer_mode", action="append", choices=("lazy", "exact"),
                      help="sweep: optimizer modes (default lazy and exact)")
    how = parser.add_argument_group("how long, how often, which target")
    how.add_argument("--epochs", type=float, help="passes over the training data per variant")
    how.add_argument("--max-steps", dest="max_steps", type=int, help="training steps per variant")
    how.add_argument("--eval-every", dest="eval_every", type=int, help="steps between evaluations")
    how.add_argument("--target", type=float, help="absolute dev-metric target (e.g. 97.5)")
    how.add_argument("--target-fraction", dest="target_fraction", type=float,
                     help="target: this fraction of dense's best dev metric in the same run")
    how.add_argument("--patience", type=int, help="stop once all reached the target and none improved "
                                                  "for this many evaluations")
    how.add_argument("--warmup", type=int, default=20, help="throwaway warm-up steps per variant (default 20)")
    how.add_argument("--seed", type=int, default=1)
    out = parser.add_argument_group("output")
    out.add_argument("--out", default="results/converge", help="results folder or .jsonl file")
    out.add_argument("--resume", action="store_true", help="continue an interrupted run in OUT")
    out.add_argument("--quiet", action="store_true", help="print only the final table")


def _plan(args, preset) -> Plan:
    base = preset.plan(args.quick) if preset is not None else Plan(Target(fraction=0.99), eval_every=100, epochs=1)
    if args.target is not None and args.target_fraction is not None:
        raise ValueError("give at most one of --target and --target-fraction")
    target = (Target(absolute=args.target) if args.target is not None else
              Target(fraction=args.target_fraction) if args.target_fraction is not None else base.target)
    epochs = args.epochs if args.epochs is not None else (None if args.max_steps is not None else base.epochs)
    return Plan(target, args.eval_every or base.eval_every, epochs,
                args.max_steps if args.max_steps is not None else (None if args.epochs is not None else base.max_steps),
                args.patience if args.patience is not None else base.patience)


def _variants(args, preset) -> list:
    if args.k:
        variants = list(sweep_variants(args.k, tuple(args.mode or ("per_example",)),
                                       tuple(args.optimizer_mode or ("lazy", "exact"))))
    elif preset is not None:
        variants = list(preset.variant_list(args.quick))
    else:
        raise ValueError("--model needs --k (one or more meProp k to set beside dense)")
    if args.only:
        unknown = sorted(set(args.only) - {v.label for v in variants})
        if unknown:
            raise ValueError(f"--only {unknown}: no such variant; accepted: {[v.label for v in variants]}")
        variants = [v for v in variants if v.k is None or v.label in args.only]
    return variants


def run(args: argparse.Namespace) -> int:
    from meprop.lab.ops.user_model import UserModelError
    from meprop.lab.converge.run import measure

    if args.list_presets:
        for name, preset in CONVERGENCE_PRESETS.items():
            print(f"{name}: {preset.description}")
            for variant in preset.variants:
                print(f"    {variant.label}")
        return 0
    if (args.preset is None) == (args.model is None):
        print("meprop converge: give exactly one of --preset and --model (see --help)", file=sys.stderr)
        return 2
    preset = CONVERGENCE_PRESETS.get(args.preset)
    try:
        plan = _plan(args, preset)
        variants = _variants(args, preset)
        return measure(args, preset, plan, variants)
    except (ValueError, TypeError, UserModelError, FileExistsError) as error:
        print(f"meprop converge: {error}", file=sys.stderr)
        return 2
