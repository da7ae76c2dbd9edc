"""Time to target: the arithmetic of a time-to-accuracy run, from its ``convergence`` records.

A :class:`Target` is either an absolute dev metric (``Target(absolute=97.5)``) or a fraction
of dense's best dev metric in the same run (``Target(fraction=0.99)``). For each variant,
:func:`outcomes` finds the first evaluation at or above the target:

- ``time_s`` (training seconds to it), ``steps`` and ``examples``;
- ``ratio`` = dense time to target / the variant's time (above 1: the variant got there sooner);
- its split ``ratio = step_ratio x steps_ratio`` with
  ``step_ratio`` = dense mean step time / the variant's (both up to the target) and
  ``steps_ratio`` = dense steps to target / the variant's: the first is the step speedup
  meProp buys, the second what its convergence costs (below 1: more steps needed);
- for a variant that did not reach the target (dense did): ``step_ratio`` over both whole
  runs and ``steps_ratio_bound`` = dense steps to target / the variant's steps trained (the
  steps factor is below it), so the report can still say which factor holds it back;
- ``final`` and ``best`` dev metric, ``test_at_best`` (the test metric at the first best-dev
  evaluation: the paper's protocol, where the workload reports one); ``status``: ``reached``, ``not reached``,
  ``diverged`` or ``failed`` (the reason is kept).

Time to target is resolved to the evaluation interval: the target is counted as reached at
the first evaluation that shows it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Target", "Outcome", "outcomes", "runs_of", "best_of"]


@dataclass(frozen=True)
class Target:
    """Exactly one of ``absolute`` (a dev metric) and ``fraction`` (of dense's best, in (0, 1])."""

    absolute: float | None = None
    fraction: float | None = None

    def __post_init__(self) -> None:
        if (self.absolute is None) == (self.fraction is None):
            raise ValueError(f"give exactly one of absolute and fraction, got absolute={self.absolute!r}, "
                             f"fraction={self.fraction!r}")
        if self.fraction is not None and not (isinstance(self.fraction, (int, float)) and 0 < self.fraction <= 1):
            raise ValueError(f"fraction must be a number in (0, 1], got {self.fraction!r}")
        if self.absolute is not None and not (isinstance(self.absolute, (int, float))
                                              and math.isfinite(self.absolute)):
            raise ValueError(f"absolute must be a finite number, got {self.absolute!r}")

    def to_dict(self) -> dict:
        return {"absolute": self.absolute, "fraction": self.fraction}

    @classmethod
    def from_dict(cls, data: dict) -> "Target":
        return cls(absolute=data.get("absolute"), fraction=data.get("fraction"))

    def describe(self) -> str:
        return f"{self.absolute:g}" if self.absolute is not None else f"{100 * self.fraction:g}% of dense's best"

    def threshold(self, dense_best: float | None) -> float | None:
        """The metric to reach: ``absolute``, or ``fraction`` of the way from 0 to dense's best
        measured below it by its size (``best - (1 - fraction) |best|``: below the best for a
        negative metric too)."""
        if self.absolute is not None:
            return float(self.absolute)
        return None if dense_best is None else dense_best - (1 - self.fraction) * abs(dense_best)


@dataclass
class Outcome:
    """One variant's time-to-target figures (None where not defined)."""

    label: str
    method: str
    k: int | None
    mode: str | None
    optimizer_mode: str | None
    status: str
    reason: str | None
    threshold: float | None
    time_s: float | None
    steps: int | None
    examples: int | None
    final: float | None
    best: float | None
    total_time_s: float
    total_steps: int
    test_at_best: float | None = None
    ratio: float | None = None
    step_ratio: float | None = None
    steps_ratio: float | None = None
    steps_ratio_bound: float | None = None
    seed: int | None = None
    lr: float | None = None
    arm: str | None = None
    optimizer_impl: str | None = None

    @property
    def step_time_s(self) -> float | None:
        """Mean training step time up to the target (None when not reached)."""
        return None if not self.steps else self.time_s / self.steps


def runs_of(records: list[dict]) -> dict[str, list[dict]]:
    """``convergence`` records grouped by ``run_key`` (each list in step order, one record per
    (label, step): the last written wins)."""
    grouped: dict[str, dict] = {}
    for record in records:
        if record.get("type") == "convergence":
            grouped.setdefault(record["run_key"], {})[(record["label"], record["step"])] = record
    return {key: sorted(rows.values(), key=lambda r: r["step"]) for key, rows in grouped.items()}


def outcomes(records: list[dict], target: Target | None = None,
             reference_best: float | None = None) -> list[Outcome]:
    """Per-variant outcomes of ONE run's records (the target: the records' own unless given).

    The dense variant (``method == "dense"``) is the reference of the ratios; without one,
    ratios are None (and a fraction target cannot be resolved: every variant is ``not reached``).
    ``reference_best``: the best a fraction target is taken of (default: this run's dense best;
    over seeds, dense's median best).
    """
    if not records:
        return []
    target = target or Target.from_dict(records[0]["target"])
    labels = list(dict.fromkeys(r["label"] for r in records))
    by_label = {label: [r for r in records if r["label"] == label] for label in labels}
    dense_label = next((label for label in labels if by_label[label][0].get("method") == "dense"), None)
    dense_best = reference_best if reference_best is not None else (
        _best(by_label[dense_label]) if dense_label else None)
    threshold = target.threshold(dense_best)
    result = [_outcome(label, by_label[label], threshold) for label in labels]
    dense = next((o for o in result if o.label == dense_label), None)
    for outcome in result:
        if dense is not None and dense.time_s and outcome.time_s:
            outcome.ratio = dense.time_s / outcome.time_s
            outcome.step_ratio = dense.step_time_s / outcome.step_time_s
            outcome.steps_ratio = dense.steps / outcome.steps
        elif dense is not None and dense.time_s and outcome.total_steps and outcome.total_time_s > 0 \
                and outcome.status == "not reached":
            # not reached: the step-time factor over both whole runs, and an upper bound of the steps factor
            outcome.step_ratio = (dense.total_time_s / dense.total_steps) / (outcome.total_time_s / outcome.total_steps)
            outcome.steps_ratio_bound = dense.steps / outcome.total_steps
    return result


def best_of(rows: list[dict]) -> float | None:
    """The best dev metric of one variant's records (None: no evaluation)."""
    return _best(rows)


def _best(rows: list[dict]) -> float | None:
    values = [r["dev_metric"] for r in rows if r.get("dev_metric") is not None]
    return max(values) if values else None


def _outcome(label: str, rows: list[dict], threshold: float | None) -> Outcome:
    scored = [r for r in rows if r.get("dev_metric") is not None]
    hit = next((r for r in scored if threshold is not None and r["dev_metric"] >= threshold), None)
    stopped = next((r for r in rows if r.get("status") in ("diverged", "failed")), None)
    if hit is not None:
        status, reason = "reached", None
    elif stopped is not None:
        status, reason = stopped["status"], stopped.get("reason")
    else:
        status = "not reached"
        best = _best(rows)
        reason = ("no dense best to take the fraction of" if threshold is None else
                  f"best {'none' if best is None else format(best, '.4g')} < target {threshold:.4g}")
    last = rows[-1]
    first = rows[0]
    return Outcome(
        label=label, method=first.get("method"), k=first.get("k"), mode=first.get("mode"),
        optimizer_mode=first.get("optimizer_mode"), status=status, reason=reason, threshold=threshold,
        time_s=hit["train_time_s"] if hit else None, steps=hit["step"] if hit else None,
        examples=hit.get("examples") if hit else None, final=scored[-1]["dev_metric"] if scored else None,
        best=_best(rows), total_time_s=last.get("train_time_s") or 0.0, total_steps=last["step"],
        test_at_best=max(scored, key=lambda r: r["dev_metric"]).get("test_metric") if scored else None,
        seed=first.get("seed"), lr=first.get("lr"), arm=first.get("arm") or label,
        optimizer_impl=first.get("optimizer_impl"),
    )
