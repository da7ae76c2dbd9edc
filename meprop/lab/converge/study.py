"""Time to target over seeds: the summaries the CLI table, the report and asv all read.

A *study* is one preset setting measured over paired seeds (records share ``study``; each
seed is one run, ``run_key``, where every variant starts from the same weights and reads the
same batches). For each target and each arm :func:`summarize` gives:

- the lr the arm won with: the one of the grid with the lowest median time to the middle
  target over the seeds (censored seeds: infinite);
- per seed (at that lr): time and steps to target, inf when not reached, diverged or failed;
- the median time and median steps with bootstrap intervals over seeds, how many seeds
  reached, diverged, failed;
- beside dense (the reference): the paired per-seed time-to-target speedup (dense time /
  arm time) and its split into the step-time factor (mean step time up to the target, or
  over the whole run when not reached) and the steps factor, each as median and interval.

:func:`ranked` orders the meProp arms of a target by their median speedup (censored last) and
:func:`held_back` names the factor of the split that keeps an arm under a bar. The
statistics are :mod:`meprop.lab.results.stats`' (defined once there). A fraction target
is taken of dense's median best over the seeds. Records written before seeds existed (no
``study``) are a study of one seed.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from dataclasses import dataclass, field

from meprop.lab.converge.time_to_target import Target, best_of, outcomes, runs_of
from meprop.lab.results.stats import median_censored, over_seeds, paired_ratio

__all__ = ["study_key", "ArmSummary", "StudySummary", "summarize", "studies_of", "ranked", "held_back"]

_INF = math.inf


@dataclass
class ArmSummary:
    """One arm at one target, over the seeds (``time``, ``steps``, ``speedup``, ``step_factor``,
    ``steps_factor``: :func:`meprop.lab.results.stats.over_seeds` dicts; None for dense's ratios)."""

    arm: str
    method: str
    k: int | None
    mode: str | None
    optimizer_mode: str | None
    optimizer_impl: str | None
    lr: float | None
    seeds: int
    reached: int
    diverged: int
    failed: int
    time: dict
    steps: dict
    best: float | None
    speedup: dict | None = None
    step_factor: dict | None = None
    steps_factor: dict | None = None
    per_seed: list = field(default_factory=list)  # Outcome per seed

    @property
    def status(self) -> str:
        """``reached`` when the median time is finite (reached on at least half the seeds)."""
        return "reached" if self.time["median"] is not None and math.isfinite(self.time["median"]) else "not reached"

    def reached_text(self) -> str:
        extra = "".join(f", {n} {what}" for n, what in ((self.diverged, "diverged"), (self.failed, "failed")) if n)
        return f"reached on {self.reached} of {self.seeds} seeds{extra}"


@dataclass
class StudySummary:
    study: str
    preset: str
    workload: str
    metric: str
    settings: dict
    seeds: list
    targets: list
    thresholds: list
    arms: list  # [target index] -> [ArmSummary], dense first
    lrs_tried: dict  # arm -> {lr: median time to the middle target}
    steps_trained: int

    @property
    def middle(self) -> int:
        return len(self.targets) // 2

    def title(self) -> str:
        cell = self.workload if self.workload != self.preset else ""
        return f"{self.preset}{' ' + cell if cell else ''} ({len(self.seeds)} seeds, {self.steps_trained} steps)"


def study_key(preset: str, workload: str, settings: dict) -> str:
    """A study's id: the preset and its workload setting, not the variants. Each seed's dense
    arm depends on the seed alone, so runs of any subset of the variants (``--only`` runs
    spread over processes, each to its own ``--out``) pair by seed in one study."""
    blob = json.dumps({"settings": settings}, sort_keys=True, default=str)
    return f"converge/{preset}/{workload}/{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def studies_of(records: list[dict]) -> dict[str, dict[str, list[dict]]]:
    """``{study: {run_key: records}}`` of the ``convergence`` records, keyed by
    :func:`study_key` of what the records say they measured (so files written when the key
    still named the variants join their study too); a run without ``study`` (written before
    seeds existed) is a study of its own."""
    grouped: dict[str, dict[str, list[dict]]] = {}
    for key, rows in runs_of(records).items():
        first = rows[0]
        study = first.get("study")
        if study and "settings" in first and first.get("preset") and first.get("workload"):
            study = study_key(first["preset"], first["workload"], first["settings"])
        grouped.setdefault(study or key, {})[key] = rows
    return grouped


def _targets(rows: list[dict]) -> list[Target]:
    first = rows[0]
    return [Target.from_dict(t) for t in (first.get("targets") or [first["target"]])]


def _dense_median_best(runs: dict) -> float | None:
    bests: dict = {}  # (seed, lr) -> best: a seed's dense run counted once however many runs hold it
    for rows in runs.values():
        dense = [r for r in rows if r.get("method") == "dense"]
        best = best_of(dense)
        if best is not None:
            bests.setdefault((dense[0].get("seed"), dense[0].get("lr")), best)
    return statistics.median(bests.values()) if bests else None


def _time(o) -> float:
    return o.time_s if o.status == "reached" and o.time_s is not None else _INF


def _steps(o) -> float:
    return float(o.steps) if o.status == "reached" and o.steps is not None else _INF


def _step_time(o) -> float | None:
    if o.status == "reached" and o.steps:
        return o.time_s / o.steps
    return o.total_time_s / o.total_steps if o.total_steps and o.total_time_s > 0 else None


def _per_seed(runs: dict, target: Target, reference: float | None) -> dict:
    """``{(arm, lr): [Outcome per seed]}``: one outcome per seed, the longest trained where
    several runs of the study hold the same arm, lr and seed (e.g. dense, in every run)."""
    table: dict = {}
    for rows in runs.values():
        for o in outcomes(rows, target, reference_best=reference):
            seeds = table.setdefault((o.arm or o.label, o.lr), {})
            kept = seeds.get(o.seed)
            if kept is None or o.total_steps > kept.total_steps:
                seeds[o.seed] = o
    return {key: list(seeds.values()) for key, seeds in table.items()}


def _winners(table: dict) -> tuple[dict, dict]:
    """The lr each arm wins with (lowest median time, then highest median best) and what each tried."""
    tried: dict = {}
    for (arm, lr), seeds in table.items():
        best = median_censored([o.best if o.best is not None else -_INF for o in seeds])
        tried.setdefault(arm, {})[lr] = (median_censored([_time(o) for o in seeds]), -best)
    return {arm: min(lrs, key=lambda lr: lrs[lr]) for arm, lrs in tried.items()}, \
        {arm: {lr: value[0] for lr, value in lrs.items()} for arm, lrs in tried.items()}


def _arm(arm: str, seeds: list, dense: list | None) -> ArmSummary:
    first = seeds[0]
    summary = ArmSummary(
        arm=arm, method=first.method, k=first.k, mode=first.mode, optimizer_mode=first.optimizer_mode,
        optimizer_impl=first.optimizer_impl, lr=first.lr, seeds=len(seeds),
        reached=sum(o.status == "reached" for o in seeds), diverged=sum(o.status == "diverged" for o in seeds),
        failed=sum(o.status == "failed" for o in seeds), time=over_seeds([_time(o) for o in seeds]),
        steps=over_seeds([_steps(o) for o in seeds]),
        best=median_censored([o.best for o in seeds if o.best is not None]) if any(o.best is not None for o in seeds)
        else None, per_seed=seeds)
    if dense is not None and first.method != "dense":
        pairs = [(d, o) for d in dense for o in seeds if d.seed == o.seed]
        summary.speedup = over_seeds([paired_ratio(_time(d), _time(o)) for d, o in pairs])
        summary.steps_factor = over_seeds([paired_ratio(_steps(d), _steps(o)) for d, o in pairs])
        steps = [(_step_time(d), _step_time(o)) for d, o in pairs]
        summary.step_factor = over_seeds([d / o for d, o in steps if d and o])
    return summary


def _summarize_one(study: str, runs: dict) -> StudySummary:
    rows = next(iter(runs.values()))
    targets = _targets(rows)
    reference = _dense_median_best(runs)
    tables = [_per_seed(runs, t, reference) for t in targets]
    won, tried = _winners(tables[len(targets) // 2])
    per_target = []
    for table in tables:
        chosen = {arm: table[(arm, lr)] for arm, lr in won.items()}
        dense_arm = next((arm for arm, seeds in chosen.items() if seeds[0].method == "dense"), None)
        dense = chosen.get(dense_arm)
        ordered = sorted(chosen, key=lambda arm: (arm != dense_arm, list(chosen).index(arm)))
        per_target.append([_arm(arm, sorted(chosen[arm], key=lambda o: o.seed or 0), dense) for arm in ordered])
    first = rows[0]
    return StudySummary(
        study=study, preset=first.get("preset", "?"), workload=first.get("workload", "?"),
        metric=first.get("metric") or "dev metric", settings=first.get("settings") or {},
        seeds=sorted({r[0].get("seed") for r in runs.values()}, key=lambda s: (s is None, s or 0)),
        targets=targets, thresholds=[t.threshold(reference) for t in targets], arms=per_target,
        lrs_tried=tried, steps_trained=max(r["step"] for rows_ in runs.values() for r in rows_))


def summarize(records: list[dict]) -> list[StudySummary]:
    """One :class:`StudySummary` per study of ``records`` (records of failed setups, step 0 and
    no evaluation, are left out)."""
    result = []
    for study, runs in studies_of(records).items():
        runs = {key: rows for key, rows in runs.items() if any(r["step"] > 0 for r in rows)}
        if runs:
            result.append(_summarize_one(study, runs))
    return result


def _median(stats: dict | None) -> float | None:
    value = (stats or {}).get("median")
    return None if value is None or math.isnan(value) else value


def ranked(summary: StudySummary, index: int | None = None) -> list[ArmSummary]:
    """The meProp arms at target ``index`` (None: the middle one), best median speedup first;
    arms not reached (median speedup 0, censored) and arms without pairs last."""
    arms = [a for a in summary.arms[summary.middle if index is None else index] if a.method != "dense"]
    return sorted(arms, key=lambda a: (a.status != "reached", -(_median(a.speedup) or 0.0), -a.reached))


def held_back(arm: ArmSummary, bar: float = 1.0) -> str:
    """Which factor of the split keeps ``arm``'s speedup below ``bar`` ("" when it is above).

    Not reached (on more than half the seeds): the steps factor (the target is missed within the
    budget), and the step-time factor too when it is below 1. Reached: each factor below 1 is
    named with its median; both at least 1 but their product below the bar: "too small"."""
    if arm.method == "dense":
        return ""
    step, steps = _median(arm.step_factor), _median(arm.steps_factor)
    slow_step = f"step time (x{step:.2f})" if step is not None and step < 1 else ""
    if arm.status != "reached":
        return "steps (target missed on " + f"{arm.seeds - arm.reached} of {arm.seeds} seeds)" \
            + (f" and {slow_step}" if slow_step else "")
    speedup = _median(arm.speedup)
    if speedup is not None and speedup >= bar:
        return ""
    named = [part for part in (slow_step, f"steps (x{steps:.2f})" if steps is not None and steps < 1 else "")
             if part]
    if named:
        return " and ".join(named)
    return "" if step is None or steps is None else f"neither below 1, too small: x{step:.2f} x {steps:.2f}"
