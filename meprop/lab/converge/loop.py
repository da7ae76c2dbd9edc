"""Time to accuracy: dense and meProp variants trained side by side, evaluated every N steps.

The measurement (docs/time_to_accuracy.md):

- **Same start, same data.** Every variant is built under the same seed and then loads the
  first variant's initial ``state_dict`` (so the start is identical even when the model
  classes differ); each variant reads its own copy of the same batch stream
  (:class:`meprop.lab.converge.state.BatchStream`: epoch ``e`` is drawn from a generator seeded
  by ``(seed, e)``) and trains with its own copy of the same global RNG state (dropout).
- **Same machine noise.** All variants live in one process and train in alternating blocks
  of ``eval_every`` steps; the order of the variants rotates every round, so none is always
  first after an evaluation.
- **Training clock only.** A block's batches are drawn before its clock starts; the clock
  (:class:`meprop.lab.stopwatch.Stopwatch`, device-synchronised) brackets forward, backward and
  the optimizer step of the block's steps; evaluation runs with the clock stopped.
- **Steady state.** Before the first block each variant runs ``warmup`` steps on a throwaway
  copy (fresh model and optimizer), so lazy initialisation, kernel loading and the allocator
  do not land on the first block of the measured run.

After every round one ``convergence`` record per variant is written (and flushed) through
:class:`meprop.lab.results.store.ResultsWriter`, then the state of every variant is saved
(:mod:`meprop.lab.converge.state`), so ``--resume`` continues from the last finished round
and loses no evaluation. A non-finite training loss or evaluation stops that variant with a
``diverged`` record; the others go on.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from meprop.checks import check_int_at_least
from meprop.lab.converge import remedies as remedy
from meprop.lab.converge.state import BatchStream, VariantRun, load_state, save_state
from meprop.lab.converge.time_to_target import Target
from meprop.lab.ops.user_model import UserModelError
from meprop.lab.results import schema
from meprop.lab.stopwatch import Stopwatch, num_threads

__all__ = ["Variant", "RunConfig", "Trainee", "ConvergenceError", "run_key", "converge"]


class ConvergenceError(ValueError):
    """A workload or variant that cannot be measured; the message says what was expected."""


@dataclass(frozen=True)
class Variant:
    """One trained side: ``k=None`` is dense; else meProp with ``mode`` and ``optimizer_mode``.

    ``lr``: the learning rate (None: the workload's); ``arm``: the arm this variant is one
    tuning point of (None: the label; an lr grid makes one variant per (arm, lr)).
    ``schedule`` (a spec of :func:`meprop.schedule.parse`) and ``error_feedback`` (the memory's
    decay in (0, 1]; None: off) are remedies (:mod:`meprop.lab.converge.remedies`) a workload
    may support (its ``supports``: a set of ``"schedule"``, ``"error_feedback"``); a workload
    that does not is refused before training.
    """

    label: str
    k: int | None = None
    mode: str = "per_example"
    optimizer_mode: str = "exact"
    lr: float | None = None
    arm: str | None = None
    schedule: str | None = None
    error_feedback: float | None = None

    @property
    def method(self) -> str:
        return "dense" if self.k is None else "meprop"

    @property
    def arm_label(self) -> str:
        return self.arm or self.label

    def remedies(self) -> set[str]:
        """The remedies this variant asks of its workload."""
        return {name for name, on in (("schedule", self.schedule is not None),
                                      ("error_feedback", self.error_feedback is not None)) if on}


@dataclass(frozen=True)
class RunConfig:
    """How long and how often: ``max_steps`` per variant, an evaluation every ``eval_every``
    steps, ``warmup`` throwaway steps, ``patience`` (stop once every variant reached the target
    and none improved its best for this many evaluations; None: run to ``max_steps``)."""

    max_steps: int
    eval_every: int
    target: Target
    seed: int = 1
    warmup: int = 20
    patience: int | None = None
    threads: int | None = 1
    device: str = "cpu"
    targets: tuple = ()
    study: str | None = None

    def __post_init__(self) -> None:
        if not self.targets:
            object.__setattr__(self, "targets", (self.target,))
        if not all(isinstance(t, Target) for t in self.targets):
            raise TypeError(f"targets must be Targets, got {[type(t).__name__ for t in self.targets]}")
        check_int_at_least(self.max_steps, "max_steps", 1)
        check_int_at_least(self.eval_every, "eval_every", 1)
        check_int_at_least(self.seed, "seed", 0)
        check_int_at_least(self.warmup, "warmup", 0)
        if self.patience is not None:
            check_int_at_least(self.patience, "patience", 1)
        if not isinstance(self.target, Target):
            raise TypeError(f"target must be a Target, got {type(self.target).__name__}")


@dataclass
class Trainee:
    """What a workload builds for one variant: the model, its optimizer and ``loss(batch)``."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loss: object  # Callable[[batch], scalar tensor]
    optimizer_impl: str | None = None  # e.g. "torch.optim.Adam(fused)"; None: the optimizer's class
    remedies: object = None  # meprop.lab.converge.remedies.Remedies: stepped after each optimizer step

    def implementation(self) -> str:
        if self.optimizer_impl:
            return self.optimizer_impl
        cls = type(self.optimizer)
        return f"{cls.__module__}.{cls.__name__}"


def run_key(workload_name: str, preset: str, variants, config: RunConfig, settings: dict) -> str:
    """A stable id of the measurement: its records and saved state carry it."""
    blob = json.dumps({"workload": workload_name, "variants": [asdict(v) for v in variants],
                       "seed": config.seed, "eval_every": config.eval_every, "settings": settings},
                      sort_keys=True, default=str)
    return f"converge/{preset}/{workload_name}/{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


@dataclass
class _Context:
    workload: object
    variants: list
    config: RunConfig
    key: str
    preset: str
    run_id: str
    writer: object
    state_path: Path | None
    say: object
    done_keys: set = field(default_factory=set)


def converge(workload, variants, config: RunConfig, *, writer=None, run_id: str = "run", preset: str = "custom",
             state_dir: str | Path | None = None, resume: bool = False, say=print) -> dict[str, VariantRun]:
    """Train ``variants`` of ``workload`` side by side; returns each variant's final :class:`VariantRun`.

    ``workload`` provides ``name``, ``metric``, ``settings()``, ``steps_per_epoch()``,
    ``build(variant) -> Trainee``, ``batches(epoch, generator)`` and ``evaluate(model) -> float``
    (docs/time_to_accuracy.md). ``writer`` gets the ``convergence`` records; the state saved
    after every round goes to a file of ``state_dir`` named after the run key (``resume``:
    continue from it).
    """
    variants = list(variants)
    labels = [v.label for v in variants]
    if not variants or len(set(labels)) != len(labels):
        raise ConvergenceError(f"variants must be non-empty with distinct labels, got {labels}")
    key = run_key(workload.name, preset, variants, config, workload.settings())
    ctx = _Context(workload, variants, config, key, preset, run_id, writer,
                   None if state_dir is None else Path(state_dir) / (key.replace("/", "_") + ".state.pt"), say)
    if writer is not None:
        ctx.done_keys = {r.get("key") for r in getattr(writer, "records", []) if r.get("type") == "convergence"}
    with num_threads(config.threads):
        runs = _start(ctx, resume)
        if runs is None:
            say(f"{key}: already finished (state at {ctx.state_path}); nothing to do")
            return load_state(ctx.state_path, key, None)[0]
        return _loop(ctx, runs)


def _build(ctx: _Context, variant: Variant, reference: dict | None):
    missing = variant.remedies() - set(getattr(ctx.workload, "supports", ()))
    if missing:
        raise ConvergenceError(f"variant {variant.label!r} asks for {sorted(missing)}, which workload "
                               f"{ctx.workload.name!r} does not support")
    torch.manual_seed(ctx.config.seed)
    try:
        trainee = ctx.workload.build(variant)
    except (ConvergenceError, UserModelError):
        raise
    except Exception as error:  # a workload's own fault: a recorded outcome, not a traceback
        raise ConvergenceError(f"{ctx.workload.name}: building {variant.label!r} raised "
                               f"{type(error).__name__}: {error}") from error
    if not isinstance(trainee, Trainee):
        raise ConvergenceError(f"{ctx.workload.name}: build({variant.label!r}) must return a Trainee, "
                               f"got {type(trainee).__name__}")
    trainee.model.to(ctx.config.device)
    try:
        trainee.remedies = remedy.apply(trainee.model, variant, ctx.config.seed)
    except remedy.RemedyError as error:
        raise ConvergenceError(f"{ctx.workload.name}: {error}") from None
    if reference is not None:
        try:
            remedy.load_reference(trainee.model, reference)
        except RuntimeError as error:
            raise ConvergenceError(f"{variant.label!r} cannot start from the first variant's weights "
                                   f"(its parameters differ): {error}") from None
    return trainee


def _start(ctx: _Context, resume: bool):
    """Fresh or resumed variant runs (None: the run already finished)."""
    runs, reference = {}, None
    for variant in ctx.variants:
        trainee = _build(ctx, variant, reference)
        if reference is None:
            reference = {k: v.detach().clone() for k, v in trainee.model.state_dict().items()}
        stream = BatchStream(ctx.workload, ctx.config.seed)
        runs[variant.label] = VariantRun(variant, trainee, stream, rng=_seeded_rng(ctx.config.seed))
    recorded = ctx.writer is None or any(str(k).startswith(ctx.key + "/") for k in ctx.done_keys)
    if resume and ctx.state_path is not None and ctx.state_path.exists() and not recorded:
        ctx.say(f"{ctx.key}: the results file holds none of this run's records; starting it afresh")
    elif resume and ctx.state_path is not None and ctx.state_path.exists():
        finished = load_state(ctx.state_path, ctx.key, runs)[1]
        if finished:
            return None
        ctx.say(f"resumed at step {max(r.step for r in runs.values())} from {ctx.state_path}")
    for run in runs.values():
        _warm_up(ctx, run.variant)
    return runs


def _seeded_rng(seed: int) -> torch.Tensor:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.get_rng_state()


def _warm_up(ctx: _Context, variant: Variant) -> None:
    """``warmup`` steps on a throwaway copy (fresh model, optimizer and stream)."""
    if ctx.config.warmup == 0:
        return
    with torch.random.fork_rng(devices=[]):
        trainee = _build(ctx, variant, None)
        stream = BatchStream(ctx.workload, ctx.config.seed + 1)
        for _ in range(ctx.config.warmup):
            _train_step(trainee, stream.next())


def _train_step(trainee: Trainee, batch) -> torch.Tensor:
    loss = trainee.loss(batch)
    loss.backward()
    trainee.optimizer.step()
    trainee.optimizer.zero_grad(set_to_none=False)
    if trainee.remedies is not None:
        trainee.remedies.step()  # the k of the next step (a schedule)
    return loss.detach()


def _loop(ctx: _Context, runs: dict) -> dict:
    config = ctx.config
    round_index = min(r.step for r in runs.values()) // config.eval_every
    while any(r.active and r.step < config.max_steps for r in runs.values()):
        order = list(ctx.variants)
        shift = round_index % len(order)
        for variant in order[shift:] + order[:shift]:
            run = runs[variant.label]
            if run.active and run.step < config.max_steps:
                _train_block(run, min(config.eval_every, config.max_steps - run.step), config.device)
        for variant in ctx.variants:
            _evaluate(ctx, runs[variant.label])
        round_index += 1
        finished = not any(r.active and r.step < config.max_steps for r in runs.values()) or _plateaued(ctx, runs)
        if ctx.state_path is not None:
            save_state(ctx.state_path, ctx.key, runs, finished)
        if finished:
            break
    return runs


def _train_block(run: VariantRun, steps: int, device: str) -> None:
    """``steps`` training steps on the clock (batches drawn before it starts)."""
    batches = [run.stream.next() for _ in range(steps)]
    watch = Stopwatch(device)
    run.trainee.model.train()
    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(run.rng)
        total = torch.zeros(())
        with watch:
            for batch in batches:
                total = total + _train_step(run.trainee, batch)
        run.rng = torch.get_rng_state()
    run.step += steps
    run.examples += sum(_batch_size(b) for b in batches)
    run.clock += watch.elapsed
    run.block_loss = float(total) / steps
    run.block_time = watch.elapsed
    run.pending = True
    if not math.isfinite(run.block_loss):
        run.stop("diverged", f"the training loss became {run.block_loss} by step {run.step}")


def _batch_size(batch) -> int:
    target = batch[-1] if isinstance(batch, (tuple, list)) else batch
    return int(target.shape[0]) if isinstance(target, torch.Tensor) and target.dim() > 0 else 1


def _evaluate(ctx: _Context, run: VariantRun) -> None:
    if not run.pending:
        return
    run.pending = False
    metric = test = None
    if run.status == "ok":
        metric, test, fault = _score(ctx.workload, run.trainee.model)
        if fault is not None:
            run.stop("failed", fault)
            metric = None
        elif not _is_real(metric):
            run.stop("failed", f"evaluate() must return a real number, got {type(metric).__name__}")
            metric = None
        elif not math.isfinite(metric := float(metric)):
            run.stop("diverged", f"the evaluation returned {metric} at step {run.step}")
            metric = None
        else:
            run.observe(float(metric))
    test = float(test) if metric is not None and _is_real(test) and math.isfinite(float(test)) else None
    _write(ctx, run, metric, test)


def _is_real(value) -> bool:
    """A real number (Python's, numpy's scalars), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and type(value).__name__ != "bool_"


def _score(workload, model) -> tuple:
    """``(dev metric, test metric, fault)``: an evaluation that raises is a fault (one line)."""
    model.eval()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        try:
            metric = workload.evaluate(model)
            scorer = getattr(workload, "evaluate_test", None)  # optional: the paper's test score
            return metric, scorer(model) if scorer is not None else None, None
        except Exception as error:  # the user's evaluate(): recorded as failed, the others go on
            return None, None, f"evaluate() raised {type(error).__name__}: {error}"
        finally:
            model.train()


def _write(ctx: _Context, run: VariantRun, metric: float | None, test: float | None = None) -> None:
    variant = run.variant
    record = schema.convergence_record(
        ctx.run_id, key=f"{ctx.key}/{variant.label}/step{run.step}", run_key=ctx.key, preset=ctx.preset,
        workload=ctx.workload.name, metric=ctx.workload.metric, label=variant.label, method=variant.method,
        k=variant.k, mode=variant.mode, optimizer_mode=variant.optimizer_mode, step=run.step,
        examples=run.examples, epoch=run.stream.epoch, train_time_s=run.clock, block_time_s=run.block_time,
        train_loss=run.block_loss if math.isfinite(run.block_loss) else None, dev_metric=metric, test_metric=test,
        status=run.status, reason=run.reason, target=ctx.config.target.to_dict(),
        targets=[t.to_dict() for t in ctx.config.targets], settings=ctx.workload.settings(),
        eval_every=ctx.config.eval_every, seed=ctx.config.seed, lr=variant.lr, arm=variant.arm_label,
        optimizer_impl=run.trainee.implementation(), study=ctx.config.study, schedule=variant.schedule,
        error_feedback=variant.error_feedback,
    )
    if ctx.writer is not None and record["key"] not in ctx.done_keys:
        ctx.writer.write(record)
    shown = "-" if metric is None else f"{metric:.2f}"
    ctx.say(f"{variant.label:>28}: step {run.step:>7} train {run.clock:8.2f} s  loss "
            f"{run.block_loss:.4f}  {ctx.workload.metric} {shown}" + (f"  [{run.status}: {run.reason}]"
                                                                       if run.status != "ok" else ""))


def _plateaued(ctx: _Context, runs: dict) -> bool:
    """Every active variant reached the target (absolute targets) and none improved lately."""
    patience = ctx.config.patience
    if patience is None:
        return False
    active = [r for r in runs.values() if r.active]
    if any(t.absolute is None for t in ctx.config.targets):
        return False
    top = max(t.absolute for t in ctx.config.targets)
    reached = all(r.best is not None and r.best >= top for r in active)
    return bool(active) and reached and all(r.since_best >= patience for r in active)
