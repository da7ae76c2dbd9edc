"""One ``meprop converge`` invocation: set up, measure, record, print the time-to-target table.

Applies the suite's fair allocator setting (:func:`meprop.lab.engine.allocator.apply`), writes the
``env`` record, runs :func:`meprop.lab.converge.loop.converge` and prints the outcome of
:func:`meprop.lab.converge.time_to_target.outcomes`. A workload that cannot be measured (a user
factory returning the wrong things, a variant that cannot start from the shared weights) is
recorded as a ``failed`` record and reported in one line, without a traceback.
"""

from __future__ import annotations

import math
from pathlib import Path

from meprop.lab.engine import allocator
from meprop.lab.ops.user_model import UserModelError
from meprop.lab.converge.loop import ConvergenceError, RunConfig, converge, run_key
from meprop.lab.results import schema
from meprop.lab.results.env import snapshot
from meprop.lab.results.store import ResultsWriter, new_run_id, read_records

__all__ = ["measure", "format_table", "results_file"]


def _workload(args, preset):
    if preset is not None:
        return preset.make_workload(args.quick)
    from meprop.lab.converge.user_workload import UserWorkload

    return UserWorkload(args.model)


def measure(args, preset, plan, variants) -> int:
    from meprop.lab.converge.time_to_target import outcomes, runs_of

    malloc = allocator.apply(allocator.FAIR)
    path = results_file(args.out)
    name = args.preset or args.model
    with ResultsWriter(path, resume=args.resume) as writer:
        run_id = new_run_id()
        writer.write(schema.env_record(run_id, snapshot(threads=1, malloc=malloc)))
        try:
            workload = _workload(args, preset)
            workload.build(variants[0])  # loads the data: steps_per_epoch needs it
            max_steps = plan.max_steps or max(1, math.ceil(plan.epochs * workload.steps_per_epoch()))
            config = RunConfig(max_steps=max_steps, eval_every=min(plan.eval_every, max_steps),
                               target=plan.target, seed=args.seed, warmup=args.warmup, patience=plan.patience)
            say = (lambda *_: None) if args.quiet else print
            say(f"{name}: {len(variants)} variants, {max_steps} steps each, evaluation every "
                f"{config.eval_every}, target {plan.target.describe()}")
            converge(workload, variants, config, writer=writer, run_id=run_id, preset=args.preset or "model",
                     state_dir=path.parent / ".state", resume=args.resume, say=say)
            key = run_key(workload.name, args.preset or "model", variants, config, workload.settings())
        except (UserModelError, ConvergenceError) as error:
            writer.write(schema.convergence_record(
                run_id, key=f"converge/{name}/failed/{run_id}", run_key=f"converge/{name}/failed",
                preset=args.preset or "model", workload=name, label="(all)", step=0, status="failed",
                reason=str(error), target=plan.target.to_dict()))
            raise
    rows = runs_of(read_records(path)).get(key, [])
    print(f"\ntime to target ({plan.target.describe()}), {name}:")
    print(format_table(outcomes(rows)))
    return 0


def format_table(rows) -> str:
    """The time-to-target table (one line per variant) of :func:`meprop.lab.converge.time_to_target.outcomes`."""
    lines = [f"{'variant':>30} {'status':>11} {'time s':>8} {'steps':>7} {'ratio':>6} {'= step':>7} "
             f"{'x steps':>8} {'final':>7} {'best':>7}"]

    def fmt(value, spec):
        width = int(spec.rstrip("df").split(".")[0])
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-".rjust(width)
        return format(value, spec)
    for o in rows:
        lines.append(f"{o.label:>30} {o.status:>11} {fmt(o.time_s, '8.2f')} {fmt(o.steps, '7d')} "
                     f"{fmt(o.ratio, '6.2f')} {fmt(o.step_ratio, '7.2f')} {fmt(o.steps_ratio, '8.2f')} "
                     f"{fmt(o.final, '7.2f')} {fmt(o.best, '7.2f')}")
    return "\n".join(lines)


def results_file(out: str) -> Path:
    path = Path(out)
    return path if path.suffix == ".jsonl" else path / "results.jsonl"
