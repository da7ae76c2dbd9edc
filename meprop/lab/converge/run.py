"""One ``meprop converge`` invocation: set up, measure every cell x seed, record, print the table.

Applies the suite's fair allocator setting (:func:`meprop.lab.engine.allocator.apply`), writes the
``env`` record, and for each setting of the preset (:class:`meprop.lab.converge.presets.Cell`)
and each seed runs :func:`meprop.lab.converge.loop.converge` with every (arm, lr) of the grid
side by side (same start, same batches within the seed). The settings of the invocation
(seeds, targets, lr grid, variants, length) are written next to the state
(:func:`meprop.lab.converge.state.check_manifest`), so a ``--resume`` that asks for other
ones is refused naming the difference. At the end the summary over seeds
(:func:`meprop.lab.converge.study.summarize`) is printed. A workload that cannot be measured
(a user factory raising or returning the wrong things, a variant that cannot start from the
shared weights, a k out of range) is recorded as a ``failed`` record and reported in one
line, without a traceback.
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from pathlib import Path

from meprop.lab.engine import allocator
from meprop.lab.ops.user_model import UserModelError
from meprop.lab.converge.loop import ConvergenceError, RunConfig, converge
from meprop.lab.converge.presets import Cell
from meprop.lab.converge.state import check_manifest
from meprop.lab.converge.study import held_back, study_key, summarize
from meprop.lab.results import schema
from meprop.lab.results.env import snapshot
from meprop.lab.results.store import ResultsWriter, new_run_id, read_records

__all__ = ["measure", "results_file", "state_dir", "with_lrs", "seed_list", "format_summary", "interval_text"]


def _cells(args, preset, choice) -> list:
    if preset is not None:
        cells = preset.cells(args.quick, choice)
        chosen = getattr(args, "cell", None)
        if chosen:
            unknown = sorted(set(chosen) - {c.name for c in cells})
            if unknown:
                raise ConvergenceError(f"--cell {unknown}: no such setting of {args.preset!r}; accepted: "
                                       f"{[c.name for c in cells if c.name]}")
            cells = [c for c in cells if c.name in chosen]
        return cells
    from meprop.lab.converge.user_workload import UserWorkload

    return choice.cells([Cell("", lambda: UserWorkload(args.model), ())])


def with_lrs(variants, grid) -> list:
    """One variant per (arm, lr); labels gain `` lr=...`` when the grid has several values."""
    if len(grid) == 1:
        return [replace(v, lr=grid[0], arm=v.label) for v in variants]
    return [replace(v, label=f"{v.label} lr={lr:g}", lr=lr, arm=v.label) for v in variants for lr in grid]


def seed_list(count: int, first: int = 1) -> list[int]:
    return list(range(first, first + count))


def state_dir(path: Path) -> Path:
    """The resumable state of the results file ``path`` (one folder per file)."""
    return path.parent / ".state" / path.stem


def _manifest(args, plan, cells, grid, seeds, max_steps) -> dict:
    return {"what": args.preset or args.model, "quick": bool(args.quick), "seeds": seeds,
            "targets": [t.describe() for t in plan.targets], "lr grid": list(grid),
            "variants": {c.name or "-": [asdict(v) for v in c.variants] for c in cells},
            "max steps": max_steps, "eval every": plan.eval_every, "patience": plan.patience}


def measure(args, preset, plan, choice) -> int:
    malloc = allocator.apply(allocator.FAIR)
    path = results_file(args.out)
    name = (args.preset or args.model) + "".join(f"+{c}" for c in sorted(getattr(args, "cell", None) or ()))
    seeds, grid = seed_list(args.seeds, args.seed), tuple(args.lr_grid or plan.grid())
    cells = _cells(args, preset, choice)
    say = (lambda *_: None) if args.quiet else print
    studies = []
    with ResultsWriter(path, resume=args.resume) as writer:
        run_id = new_run_id()
        writer.write(schema.env_record(run_id, snapshot(threads=1, malloc=malloc)))
        try:
            for index, cell in enumerate(cells):
                workload = cell.make_workload()
                workload.build(cell.variants[0])  # loads the data: steps_per_epoch needs it
                max_steps = plan.max_steps or max(1, math.ceil(plan.epochs * workload.steps_per_epoch()))
                if index == 0:
                    check_manifest(state_dir(path), name, _manifest(args, plan, cells, grid, seeds, max_steps),
                                   args.resume)
                study = study_key(args.preset or "model", workload.name, workload.settings())
                studies.append(study)
                _seeds(args, plan, cell, workload, writer, run_id, study, seeds, grid, max_steps, say)
        except (UserModelError, ConvergenceError) as error:
            writer.write(schema.convergence_record(
                run_id, key=f"converge/{name}/failed/{run_id}", run_key=f"converge/{name}/failed",
                preset=args.preset or "model", workload=name, label="(all)", step=0, status="failed",
                reason=str(error), target=plan.target.to_dict()))
            raise
    chosen = [s for s in summarize(read_records(path)) if s.study in studies]
    print(format_summary(chosen))
    return 0


def _seeds(args, plan, cell, workload, writer, run_id, study, seeds, grid, max_steps, say) -> None:
    variants = with_lrs(cell.variants, grid)
    for seed in seeds:
        config = RunConfig(max_steps=max_steps, eval_every=min(plan.eval_every, max_steps), target=plan.target,
                           targets=tuple(plan.targets), seed=seed, warmup=args.warmup, patience=plan.patience,
                           study=study)
        say(f"{workload.name} seed {seed}: {len(variants)} variants, {max_steps} steps each, evaluation every "
            f"{config.eval_every}, targets {', '.join(t.describe() for t in plan.targets)}")
        converge(workload, variants, config, writer=writer, run_id=run_id, preset=args.preset or "model",
                 state_dir=state_dir(results_file(args.out)), resume=args.resume, say=say)


def results_file(out: str) -> Path:
    path = Path(out)
    return path if path.suffix == ".jsonl" else path / "results.jsonl"


def interval_text(stats: dict | None, spec: str = ".2f", unit: str = "", infinite: str = "never") -> str:
    """``median [low, high]`` of an :func:`meprop.lab.results.stats.over_seeds` dict ("-": none;
    an infinite value reads ``infinite``: "never" for a censored time)."""
    if not stats or stats.get("median") is None:
        return "-"

    def one(value):
        return infinite if math.isinf(value) else format(value, spec) + unit
    text = one(stats["median"])
    return text if stats.get("low") is None else f"{text} [{one(stats['low'])}, {one(stats['high'])}]"


def ratio_text(stats: dict | None) -> str:
    """A paired ratio (speedup, step or steps factor) as ``median [low, high]``; "inf" where a
    seed's ratio is unbounded (meProp reached the target, dense did not)."""
    return interval_text(stats, infinite="inf")


def format_summary(summaries) -> str:
    """The time-to-target tables over seeds: one block per study and target, one line per arm
    (the last column: the factor that keeps a slower arm below dense, :func:`held_back`)."""

    blocks = []
    for summary in summaries:
        for index, (target, threshold) in enumerate(zip(summary.targets, summary.thresholds)):
            tuned = " (lr tuned on this target)" if index == summary.middle and len(summary.lrs_tried.get(
                summary.arms[index][0].arm, {})) > 1 else ""
            lines = [f"\n{summary.title()}: target {target.describe()}"
                     + (f" = {threshold:.4g}" if threshold is not None and target.fraction else "") + tuned,
                     f"{'arm':>26} {'lr':>8} {'reached':>22} {'median time s [95% CI]':>26} "
                     f"{'median steps':>12} {'speedup [95% CI]':>22} {'= step x':>9} {'steps':>6}  optimizer  held back by"]
            for arm in summary.arms[index]:
                lines.append(
                    f"{arm.arm:>26} {'-' if arm.lr is None else format(arm.lr, '.3g'):>8} "
                    f"{arm.reached_text():>22} {interval_text(arm.time):>26} "
                    f"{interval_text(arm.steps, '.0f'):>12} {ratio_text(arm.speedup):>22} "
                    f"{ratio_text({'median': (arm.step_factor or {}).get('median')}):>9} "
                    f"{ratio_text({'median': (arm.steps_factor or {}).get('median')}):>6}  {arm.optimizer_impl or '-'}"
                    + (f"  {held_back(arm)}" if held_back(arm) else ""))
            blocks.append("\n".join(lines))
    return "\n".join(blocks) if blocks else "no time-to-target results"
