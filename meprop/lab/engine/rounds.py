"""Rounds: a grid measured several times, each pass in a fresh Python process, combined by medians.

The asv suite's run loop (``benchmarks/common.py`` is only its glue) and the pytest-benchmark
cases' same-run ratio:

- :func:`measure_case`: one case's dense and meProp times, interleaved in this process
  (:func:`meprop.lab.engine.runner.run_case`, so a case is built, timed, skipped and freed as
  ``meprop bench`` does it): a flat dict of floats, or ``{"skipped": reason}``;
- :func:`measure_round`: one pass over a grid's combinations in this process;
- :func:`measure_grid`: ``settings.rounds`` passes, round-robin, each in a new interpreter
  (:func:`round_in_fresh_process`): a process's heap layout, page placement and allocator
  state move all its timings together, so rounds in one process would share that luck; the
  combinations that cannot run here (:func:`skip_reason`: e.g. CUDA on a CPU-only machine)
  are skipped in the parent, and a grid with none to run starts no process;
- :func:`combine`: one entry from a case's rounds: the median of each value over the
  rounds, the relative time being the median of the per-round ratios (each measured
  interleaved), rounded to :data:`SIGNIFICANT` digits;
- :func:`interleaved_ratio`: dense and meProp timed interleaved once, with the speedup's
  interval of :mod:`meprop.lab.results.stats`.
"""

from __future__ import annotations

import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from meprop.lab.engine import allocator, runner
from meprop.lab.engine.timer import num_threads, time_pair
from meprop.lab.ops.build import build
from meprop.lab.results.stats import speedup_interval
from meprop.lab.plan.asv_grid import Settings, grid_case
from meprop.lab.plan.cases import Case

__all__ = ["SIGNIFICANT", "ROUND_TIMEOUT_S", "check_possible", "measure_case", "measure_round", "runnable_case",
           "skip_reason", "measure_grid", "grid_combos", "round_in_fresh_process", "rounded", "combine",
           "interleaved_ratio", "main"]

#: Significant digits of a combined value (what a measurement on a shared machine can tell apart).
SIGNIFICANT = 3
#: Seconds one round (one pass over a grid) may take in its child process.
ROUND_TIMEOUT_S = 3600


def check_possible(case: Case) -> None:
    """Raise NotImplementedError when ``case`` cannot run here (the cheap question: is the
    device there?); the engine's own memory check runs when the workload is built. CUDA is
    first touched here, not at import."""
    if case.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise NotImplementedError(f"{case.device}: cuda not available")


def _options(case: Case, settings: Settings) -> runner.TimingOptions:
    """On the ``cpu`` clock a single-threaded CPU case is timed in the process's CPU seconds
    (``time.process_time``), which other processes' load does not stretch as it does wall time."""
    if settings.clock == "cpu" and case.device == "cpu" and case.threads == 1:
        return runner.TimingOptions(budget_s=settings.budget_s, clock=time.process_time)
    return runner.TimingOptions(budget_s=settings.budget_s)


def measure_case(case: Case, settings: Settings) -> dict:
    """Dense and meProp of ``case`` timed interleaved: medians (seconds per call), the
    relative time meProp / dense, each side's relative IQR and the ideal speedup; or
    ``{"skipped": reason}`` when the workload finds it cannot run (e.g. too little memory). Whether
    its device is there was asked before (:func:`runnable_case`)."""
    allocator.apply()  # meprop bench's default allocator setting
    fields = runner.run_case(case, _options(case, settings), measure_memory=False)
    if fields.get("status") == "skipped":
        return {"skipped": fields["reason"]}
    dense, meprop = fields["dense"], fields["meprop"]  # timer.Measurement, per call
    return {"dense": dense.median, "meprop": meprop.median, "relative_time": meprop.median / dense.median,
            "dense_rel_iqr": dense.rel_iqr, "meprop_rel_iqr": meprop.rel_iqr, "ideal": case.ideal}


def runnable_case(workload: str, measurement: str, combo: tuple, fields: dict, settings: Settings) -> Case | dict:
    """The :class:`Case` of one combination, or ``{"skipped": reason}`` when it is known not to
    run here before anything is timed (no such case, or its device is missing)."""
    try:
        case = grid_case(workload, measurement, combo, settings.threads, fields)
        check_possible(case)
    except NotImplementedError as exc:
        return {"skipped": str(exc)}
    return case


def skip_reason(workload: str, measurement: str, combo: tuple, fields: dict, settings: Settings) -> dict | None:
    """``{"skipped": reason}`` for a combination that cannot run here (:func:`runnable_case`), else None."""
    found = runnable_case(workload, measurement, combo, fields, settings)
    return found if isinstance(found, dict) else None


def measure_round(workload: str, measurement: str, combos: list[tuple], fields: dict,
                  settings: Settings) -> list[dict]:
    """One pass over ``combos`` in this process: a :func:`measure_case` entry for each, or its
    ``{"skipped": reason}``."""
    out = []
    for combo in combos:
        found = runnable_case(workload, measurement, combo, fields, settings)
        out.append(found if isinstance(found, dict) else measure_case(found, settings))
    return out


def rounded(value: float, digits: int = SIGNIFICANT) -> float:
    """``value`` to ``digits`` significant digits (``0.10276941`` -> ``0.103``)."""
    return float(f"{value:.{digits}g}")


def combine(rounds: list[dict]) -> dict:
    """One entry from a case's rounds: the median of each value over the rounds, rounded.

    The relative time is the median of the per-round ratios (each measured interleaved),
    not a ratio of medians taken in different rounds. A case skipped in any round is skipped.
    """
    skipped = [r for r in rounds if "skipped" in r]
    if skipped:
        return skipped[0]
    out = {name: rounded(statistics.median(r[name] for r in rounds)) for name in rounds[0] if name != "ideal"}
    out["speedup"] = rounded(1 / out["relative_time"]) if out["relative_time"] > 0 else float("inf")
    out.update(ideal=rounds[0]["ideal"], rounds=len(rounds))
    return out


def measure_grid(workload: str, measurement: str, combos: list[tuple], fields: dict,
                 settings: Settings) -> dict:
    """``{combo: combined entry}``: ``settings.rounds`` passes over ``combos``, round-robin (a
    burst of load hits one round of a case, not all), each in a fresh process."""
    combos = [tuple(c) for c in combos]
    skipped = {combo: reason for combo in combos
               if (reason := skip_reason(workload, measurement, combo, fields, settings)) is not None}
    runnable = [combo for combo in combos if combo not in skipped]  # no process started for the others
    measured: dict[tuple, list] = {combo: [] for combo in runnable}
    for _ in range(settings.rounds if runnable else 0):
        for combo, entry in zip(runnable, round_in_fresh_process(workload, measurement, runnable, fields, settings)):
            measured[combo].append(entry)
    return {combo: skipped[combo] if combo in skipped else combine(measured[combo]) for combo in combos}


def grid_combos(params: list[list]) -> list[tuple]:
    """Every combination of a grid's axes (asv's ``params``), in asv's order."""
    return list(itertools.product(*params))


#: Run in the child: the same meprop as the parent's (its folder first on sys.path), then main().
_CHILD = "import sys; sys.path.insert(0, sys.argv[1]); from meprop.lab.engine.rounds import main; main(sys.argv[2:])"


def round_in_fresh_process(workload: str, measurement: str, combos: list[tuple], fields: dict,
                           settings: Settings) -> list[dict]:
    """:func:`measure_round` in a new interpreter (same executable, environment and meprop)."""
    import meprop

    root = str(Path(meprop.__file__).resolve().parents[1])  # the folder this meprop is imported from
    with tempfile.TemporaryDirectory(prefix="meprop-rounds-") as tmp:
        spec, result = Path(tmp, "spec.json"), Path(tmp, "result.json")
        spec.write_text(json.dumps({"workload": workload, "measurement": measurement,
                                    "combos": [list(c) for c in combos], "fields": fields,
                                    "settings": vars(settings)}))
        proc = subprocess.run([sys.executable, "-c", _CHILD, root, str(spec), str(result)],
                              capture_output=True, text=True, timeout=ROUND_TIMEOUT_S)
        if proc.returncode != 0 or not result.exists():
            raise RuntimeError(f"measuring {workload}/{measurement} in a child process failed "
                               f"(exit {proc.returncode}): {proc.stderr[-3000:]}")
        return json.loads(result.read_text())


def main(argv: list[str]) -> None:
    """The child's entry: ``SPEC_JSON RESULT_JSON``, one :func:`measure_round`."""
    spec_path, result_path = argv
    spec = json.loads(Path(spec_path).read_text())
    entries = measure_round(spec["workload"], spec["measurement"], [tuple(c) for c in spec["combos"]],
                            spec["fields"], Settings(**spec["settings"]))
    Path(result_path).write_text(json.dumps(entries))


def interleaved_ratio(case: Case, budget_s: float) -> dict:
    """Dense and meProp of ``case`` timed interleaved (ABBA) in this process: medians in
    seconds, the speedup, its 95% interval (:func:`~meprop.lab.results.stats.speedup_interval`),
    samples (pytest-benchmark's ``extra_info["interleaved"]``)."""
    with num_threads(case.threads):
        dense_fn, meprop_fn = build(case, "dense"), build(case, "meprop")
        dense, meprop = time_pair(dense_fn, meprop_fn, device=case.device, threads=case.threads,
                                  budget_s=budget_s, warmup_s=min(0.05, budget_s), min_samples=3,
                                  extend_factor=2.0)
    ci = speedup_interval(dense.to_dict(), meprop.to_dict()) or {}
    return {"dense_median_s": dense.median, "meprop_median_s": meprop.median,
            "speedup": dense.median / meprop.median, "low": ci.get("low"), "high": ci.get("high"),
            "level": ci.get("level"), "method": ci.get("method"),
            "n_samples": min(dense.n_samples, meprop.n_samples), "noisy": dense.noisy or meprop.noisy,
            "timer": "meprop.lab.engine.timer.time_pair (interleaved ABBA, same process)",
            "dense": dense.to_dict(), "meprop": meprop.to_dict()}
