"""The benchmark loop: for each case, build both variants, time them interleaved, record.

Used by ``meprop bench`` (:mod:`meprop.lab.cli.bench`). Each finished case is written to the
results store at once; a case that cannot run (no CUDA, too large, out of memory) is
recorded as ``skipped`` with its reason and the run goes on. Other errors propagate,
leaving every finished record on disk.

Peak memory (the ``peak_memory`` field) is the extra memory one call of the measured
operation needs on top of what is in use just before it (model, inputs, ``.grad``):
on CUDA ``torch.cuda.max_memory_allocated`` minus ``memory_allocated`` before the call
(``kind="cuda_max_allocated"``); on CPU the peak resident set size during the call minus
the RSS before it (``kind="cpu_rss_delta"``): on Linux the kernel's high-water mark (VmHWM,
reset before the call), elsewhere sampled by a background thread. Approximate: memory the
allocator already holds is reused and reads as 0.
"""

from __future__ import annotations

import gc
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch

from meprop import dispatch, kernels
from meprop.lab.plan.cases import Case
from meprop.lab.engine.timer import Measurement, TimingOptions, num_threads, synchronize, time_pair
from meprop.lab.ops.train_step import optimizer_names, probe_phases
from meprop.lab.ops.build import ALLOCATION_POLICY, Unsupported, build, estimate_bytes
from meprop.lab.results import schema
from meprop.lab.results.env import snapshot
from meprop.lab.results.store import ResultsWriter
from meprop.lab.measurements import measurement

__all__ = ["TimingOptions", "RunSummary", "case_record", "run_case", "run_cases", "peak_memory"]


@dataclass
class RunSummary:
    ok: int = 0
    skipped: int = 0
    already_done: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def case_record(
    run_id: str,
    case: Case,
    *,
    dense: Measurement | None = None,
    meprop: Measurement | None = None,
    status: str = "ok",
    reason: str | None = None,
    peak_memory: dict | None = None,
    wall_s: float | None = None,
    formulations: dict | None = None,
    tuning: dict | None = None,
    optimizers: dict | None = None,
    phases: dict | None = None,
    ddp: dict | None = None,
) -> dict:
    """The ``bench`` record of a resolved ``case`` (:func:`meprop.lab.results.schema.bench_record`).

    ``dense`` / ``meprop`` are the timer's measurements, or None (skipped cases).
    ``wall_s``: wall time the case took in all (build, warm-up, probes). ``formulations``:
    the meProp linear backwards each formulation ran while the case was timed; ``tuning``:
    where their formulation choices came from (:func:`meprop.dispatch.choice_counts`).
    """
    noisy = bool((dense is not None and dense.noisy) or (meprop is not None and meprop.noisy))
    return schema.bench_record(
        run_id, key=case.key, case=case.to_dict(), status=status, reason=reason,
        dense=None if dense is None else dense.to_dict(),
        meprop=None if meprop is None else meprop.to_dict(),
        peak_memory=peak_memory, wall_s=wall_s, noisy=noisy, formulations=formulations,
        tuning=tuning, optimizers=optimizers, phases=phases, ddp=ddp,
    )


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before.get(name, 0) for name in after if after[name] > before.get(name, 0)}


def _is_oom(error: BaseException) -> bool:
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def peak_memory(fn: Callable[[], object], device: str, *, interval_s: float = 2e-4) -> tuple[int, str]:
    """Extra bytes one ``fn()`` call needs beyond what is in use before it; and the kind."""
    dev = torch.device(device)
    if dev.type == "cuda":
        synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
        fn()
        synchronize(dev)
        return int(torch.cuda.max_memory_allocated(dev) - before), "cuda_max_allocated"
    before = _rss()
    if _reset_peak_rss():  # Linux: the kernel's own high-water mark, nothing to sample
        fn()
        return int(max(0, _peak_rss() - before)), "cpu_rss_delta"
    peak = before
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _rss())
            stop.wait(interval_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        fn()
    finally:
        stop.set()
        sampler.join()
    peak = max(peak, _rss())
    return int(max(0, peak - before)), "cpu_rss_delta"


def _reset_peak_rss() -> bool:
    """Reset the process's resident-set high-water mark (VmHWM); False where Linux does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return _peak_rss() > 0
    except OSError:
        return False


def _peak_rss() -> int:
    """VmHWM of /proc/self/status in bytes (0 when unreadable)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _free(case: Case) -> None:
    # Tensors go with their last reference; a full collection (~0.2 s with torch
    # loaded) only after large cases, in case a cycle holds one.
    if estimate_bytes(case) > 2**26:
        gc.collect()
    if torch.device(case.device).type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_case(case: Case, options: TimingOptions, *, measure_memory: bool = True) -> dict:
    """Measure one resolved case; returns the fields of its bench record (no run id)."""
    if case.world_size > 1:  # its own processes: meprop.lab.engine.ddp
        from meprop.lab.engine.ddp import run_ddp_case

        return run_ddp_case(case, options)
    try:
        with num_threads(case.threads):
            dense_fn = build(case, "dense")
            meprop_fn = build(case, "meprop")
            memory = None
            if measure_memory:  # the first call of each: also the first warm-up call
                dense_bytes, kind = peak_memory(dense_fn, case.device)
                meprop_bytes, _ = peak_memory(meprop_fn, case.device)
                memory = {"dense_bytes": dense_bytes, "meprop_bytes": meprop_bytes, "kind": kind}
            before, choices = kernels.formulation_counts(), dispatch.choice_counts()
            dense, meprop = time_pair(dense_fn, meprop_fn, device=case.device,
                                      threads=case.threads, options=options)
            after, tuned = kernels.formulation_counts(), _delta(choices, dispatch.choice_counts())
            extra = {"tuning": tuned} if tuned else {}
            if measurement(case.measurement).steps_optimizer:  # after the timed samples: timing undisturbed
                extra = dict(optimizers=optimizer_names(case.optimizer, case.adam),
                             phases=probe_phases(dense_fn, meprop_fn, rewarm=(
                                 dense.rewarm * dense.number, meprop.rewarm * meprop.number)))
        ran = _delta(before, after)
        return dict(dense=dense, meprop=meprop, peak_memory=memory, formulations=ran or None, **extra)
    except Unsupported as error:
        return dict(status="skipped", reason=str(error))
    except Exception as error:  # out of memory: recorded, the run goes on
        if not _is_oom(error):
            raise
        return dict(status="skipped", reason=f"out of memory: {str(error).splitlines()[0][:200]}")
    finally:
        dense_fn = meprop_fn = None
        _free(case)


def run_cases(
    cases: Iterable[Case],
    writer: ResultsWriter,
    run_id: str,
    *,
    options: TimingOptions = TimingOptions(),
    profile: str | None = None,
    argv: list[str] | None = None,
    progress: bool = True,
    measure_memory: bool = True,
    malloc: dict | None = None,
) -> RunSummary:
    """Run every case not already in ``writer.done``, writing one record per case.

    The run's ``env`` record is written before its first ``bench`` record (a resumed
    run with nothing left to do writes nothing). Threads None resolve to torch's
    current count.
    """
    from tqdm.auto import tqdm

    current = torch.get_num_threads()
    resolved = [case.resolved(current) for case in cases]
    summary = RunSummary()
    env_written = False
    warned: set[str] = set()
    todo = [case for case in resolved if case.key not in writer.done]
    summary.already_done = len(resolved) - len(todo)
    # the bar counts only the cases still to measure, so its rate and ETA are theirs
    # (a resumed run's skipped cases would otherwise pass as instantly measured ones)
    bar = tqdm(todo, unit="case", disable=not progress, dynamic_ncols=True)
    if summary.already_done and progress:
        bar.write(f"resuming: {summary.already_done} of {len(resolved)} case(s) already measured")
    for case in bar:
        bar.set_postfix_str(f"{case.workload} {case.measurement} n={case.hidden} k={case.k} "
                            f"B={case.batch} {case.mode}", refresh=False)
        if not env_written:
            threads = sorted({c.threads for c in resolved})
            env = snapshot(threads=threads[0] if len(threads) == 1 else current,
                           allocator=ALLOCATION_POLICY, profile=profile, argv=argv, malloc=malloc)
            writer.write(schema.env_record(run_id, env))
            env_written = True
        started = time.perf_counter()
        fields = run_case(case, options, measure_memory=measure_memory)
        record = case_record(run_id, case, **fields, wall_s=time.perf_counter() - started)
        writer.write(record)
        if record["status"] == "ok":
            summary.ok += 1
        else:
            summary.skipped += 1
            reason = record["reason"]
            summary.reasons[reason] = summary.reasons.get(reason, 0) + 1
            if reason == "cuda not available" and reason not in warned:
                warned.add(reason)
                warnings.warn(f"device {case.device!r} requested but cuda is not available "
                              f"(torch {torch.__version__}); its cases are recorded as skipped")
    return summary
