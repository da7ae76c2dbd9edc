"""The speedup's confidence interval, defined once: a seeded bootstrap of the ratio of medians.

A speedup is dense median / meProp median, each the median of a handful of samples (5 to
100), so the figure needs its interval before anyone reads it as a win. The method:

- **bootstrap** (both sides' per-call samples recorded): each side's samples are resampled
  with replacement, independently, :data:`RESAMPLES` times; the interval is the central
  :data:`LEVEL` percentile interval of the resampled ratios of medians. The generator is
  seeded (:data:`SEED`), so one record always gets one interval.
- **normal approximation** (only median, IQR and sample count recorded: pytest-benchmark,
  asv, records written before the samples were): the standard error of each median is
  estimated from its IQR (sigma ~ IQR / 1.349, SE(median) ~ 1.2533 sigma / sqrt(n)); the
  log-ratio's error is the two combined in quadrature.
- no interval when neither is possible (a side without spread or sample count).

:func:`speedup_interval` returns the interval object stored in a ``bench`` record
(``speedup_ci``); :func:`straddles_one` says whether it contains 1.0, in which case the
cell is not a win (nor a loss) whatever its median says; :func:`is_headline_worthy` is the
rule a headline figure and a met target obey. :data:`METHOD_NOTE` is the sentence the
report's method note quotes.

Over seeds (time to accuracy, ``meprop converge --seeds N``): :func:`over_seeds` gives the
median of per-seed values with a bootstrap interval over the seeds, censored values (a seed
that never reached the target: :data:`CENSORED`, infinite) kept, never dropped;
:func:`paired_ratio` is one seed's paired speedup.

Over rounds (the DDP sides, each timed once per round): :func:`paired_ratios` gives the median
of the per-round ratios, their IQR and the bootstrap interval of :func:`median_interval`.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Sequence

import numpy as np

__all__ = [
    "LEVEL",
    "RESAMPLES",
    "SEED",
    "METHOD_NOTE",
    "bootstrap_ratio_interval",
    "approx_ratio_interval",
    "speedup_interval",
    "straddles_one",
    "is_headline_worthy",
    "CENSORED",
    "SEEDS_NOTE",
    "median_censored",
    "median_interval",
    "paired_ratio",
    "over_seeds",
    "paired_ratios",
]

#: The interval's confidence level.
LEVEL = 0.95
#: Bootstrap resamples per interval.
RESAMPLES = 2000
#: The bootstrap generator's seed (an interval is a deterministic function of the samples).
SEED = 20170706
#: For the report's method note.
METHOD_NOTE = (f"The <b>{LEVEL:.0%} interval</b> of each speedup is a percentile bootstrap of the "
               f"ratio of medians ({RESAMPLES} resamples of each side's samples, independently, "
               "seeded); where only median, IQR and sample count were recorded (pytest-benchmark, "
               "asv, older records), a normal approximation of each median's standard error "
               "(IQR / 1.349 x 1.2533 / &radic;n), combined on the log scale. A cell whose "
               "interval contains 1.0 is neither a win nor a loss.")


def _check_level(level: float) -> float:
    if not (isinstance(level, float) and 0 < level < 1):
        raise ValueError(f"level must be a float in (0, 1), got {level!r}")
    return level


def _finite(samples: Sequence[float] | None, name: str) -> np.ndarray | None:
    if samples is None:
        return None
    values = np.asarray(samples, dtype=float)
    if values.ndim != 1:
        raise ValueError(f"{name} must be a flat sequence of seconds, got shape {values.shape}")
    values = values[np.isfinite(values)]
    return values if values.size else None


def bootstrap_ratio_interval(dense_s: Sequence[float], meprop_s: Sequence[float], *, level: float = LEVEL,
                             resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float] | None:
    """``(low, high)`` of median(dense) / median(meprop) by a seeded percentile bootstrap.

    dense_s: (n_d,), meprop_s: (n_m,) per-call seconds. None when a side has no finite
    sample or meProp's resampled medians reach 0.
    """
    _check_level(level)
    dense, meprop = _finite(dense_s, "dense_s"), _finite(meprop_s, "meprop_s")
    if dense is None or meprop is None:
        return None
    rng = np.random.default_rng(seed)
    # (resamples, n) indices per side; medians: (resamples,)
    dense_medians = np.median(dense[rng.integers(0, dense.size, (resamples, dense.size))], axis=1)
    meprop_medians = np.median(meprop[rng.integers(0, meprop.size, (resamples, meprop.size))], axis=1)
    if not (meprop_medians > 0).all():
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(dense_medians / meprop_medians, [tail, 100 - tail])
    return float(low), float(high)


def _log_se(stats: dict) -> float | None:
    """Standard error of log(median) from the IQR and the sample count (None without them)."""
    median, iqr, n = (stats or {}).get("median_s"), (stats or {}).get("iqr_s"), (stats or {}).get("n_samples")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               for v in (median, iqr, n)) or median <= 0 or n < 2 or iqr < 0:
        return None
    return 1.2533 * (iqr / 1.349) / median / math.sqrt(n)


def approx_ratio_interval(dense: dict, meprop: dict, *, level: float = LEVEL) -> tuple[float, float] | None:
    """``(low, high)`` of the speedup from each side's median, IQR and sample count (normal, log scale)."""
    _check_level(level)
    ses = [_log_se(dense), _log_se(meprop)]
    if None in ses:
        return None
    ratio = dense["median_s"] / meprop["median_s"]
    half = NormalDist().inv_cdf(0.5 + level / 2) * math.hypot(*ses)
    return float(ratio * math.exp(-half)), float(ratio * math.exp(half))


def speedup_interval(dense: dict | None, meprop: dict | None, *, level: float = LEVEL) -> dict | None:
    """The ``speedup_ci`` object of a record from its two timing objects, or None.

    ``{"low", "high", "level", "method"}``, method ``"bootstrap"`` when both timings carry
    ``samples_s`` (per-call seconds), else ``"normal"`` (:func:`approx_ratio_interval`).
    """
    if not isinstance(dense, dict) or not isinstance(meprop, dict):
        return None
    bounds, method = None, "bootstrap"
    if dense.get("samples_s") and meprop.get("samples_s"):
        bounds = bootstrap_ratio_interval(dense["samples_s"], meprop["samples_s"], level=level)
    if bounds is None:
        bounds, method = approx_ratio_interval(dense, meprop, level=level), "normal"
    if bounds is None:
        return None
    return {"low": bounds[0], "high": bounds[1], "level": level, "method": method}


def straddles_one(low: float | None, high: float | None) -> bool | None:
    """True when the interval contains 1.0 (no win, no loss); None without an interval."""
    try:
        if not (math.isfinite(low) and math.isfinite(high)):
            return None
    except TypeError:  # None
        return None
    return bool(low <= 1.0 <= high)


def _flagged(value: object) -> bool:
    """A flag column's value: True / numpy True; None, NaN (unknown) and False are not set."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return bool(value)


def is_headline_worthy(*, noisy: object, above_ideal: object, low: float | None, high: float | None) -> bool:
    """A figure fit to quote: not flagged noisy, not above the ideal, with a known interval
    that lies wholly above 1.0 (a win)."""
    if _flagged(noisy) or _flagged(above_ideal):
        return False
    if straddles_one(low, high) is None:
        return False
    return low > 1.0


# ----------------------------------------------------------------------------- over seeds
#: A seed that did not reach its target within the budget (AlgoPerf: infinite time).
CENSORED = math.inf

SEEDS_NOTE = (f"Over seeds: the <b>median</b> with a {LEVEL:.0%} percentile bootstrap interval ({RESAMPLES} "
              "resamples of the seeds, seeded). A seed that did not reach the target counts as infinite "
              "time (censored, never dropped); with an even count the median is the upper of the middle two "
              "only when both are finite (else the lower), so an arm is reached when it reached on at least "
              "half its seeds. The speedup is a paired ratio per seed (same start, same batches).")


def median_censored(values: Sequence[float]) -> float:
    """The median of ``values`` in [0, inf] (inf: censored); NaN when empty.

    With an even count the two middle values are averaged when both are finite; otherwise
    the lower one is taken (so the median is finite iff at least half the values are).
    """
    ordered = np.sort(np.asarray(values, dtype=float))
    return float(_middle(ordered[None, :])[0]) if ordered.size else math.nan


def _middle(ordered: np.ndarray) -> np.ndarray:
    """Row medians of a (rows, n) array sorted along axis 1, by :func:`median_censored`'s rule."""
    n = ordered.shape[1]
    if n % 2:
        return ordered[:, n // 2]
    low, high = ordered[:, n // 2 - 1], ordered[:, n // 2]
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(high), (low + high) / 2, low)


def median_interval(values: Sequence[float], *, level: float = LEVEL, resamples: int = RESAMPLES,
                    seed: int = SEED) -> tuple[float, float] | None:
    """``(low, high)`` percentile bootstrap interval of :func:`median_censored` over ``values``
    (one per seed, in [0, inf]); None with fewer than 2 values. No interpolation between
    resampled medians (they may be infinite)."""
    _check_level(level)
    data = np.asarray([v for v in values if not math.isnan(v)], dtype=float)  # (n,)
    if data.size < 2:
        return None
    rng = np.random.default_rng(seed)
    medians = _middle(np.sort(data[rng.integers(0, data.size, (resamples, data.size))], axis=1))  # (R,)
    tail = (1 - level) / 2
    low, high = np.quantile(medians, [tail, 1 - tail], method="inverted_cdf")
    return float(low), float(high)


def paired_ratio(reference: float, other: float) -> float:
    """``reference / other`` of one seed's two times (or steps), either possibly censored (inf):
    other censored -> 0, reference censored -> inf, both -> NaN (no information)."""
    if math.isinf(reference) and math.isinf(other):
        return math.nan
    if math.isinf(other):
        return 0.0
    if math.isinf(reference):
        return math.inf
    return reference / other if other > 0 else math.nan


def over_seeds(values: Sequence[float], **kwargs) -> dict:
    """``{"median", "low", "high", "n", "finite"}`` of per-seed ``values`` (NaN ones left out and
    not counted; ``finite``: how many are not censored)."""
    kept = [float(v) for v in values if v is not None and not math.isnan(v)]
    bounds = median_interval(kept, **kwargs)
    return {"median": median_censored(kept) if kept else None, "low": bounds[0] if bounds else None,
            "high": bounds[1] if bounds else None, "n": len(kept), "finite": sum(math.isfinite(v) for v in kept)}


def paired_ratios(slower: Sequence[float], faster: Sequence[float]) -> dict | None:
    """``{"median", "iqr", "n", "ci95"}`` of ``slower[i] / faster[i]`` (one pair per round):
    the median ratio, its IQR and the interval of :func:`median_interval` (None with one
    round); None when the lists are empty or of different lengths."""
    if not len(slower) or len(slower) != len(faster):
        return None
    ratios = np.asarray(slower, dtype=float) / np.asarray(faster, dtype=float)  # (rounds,)
    q1, q3 = np.percentile(ratios, [25, 75])
    bounds = median_interval(ratios.tolist())
    return {"median": float(np.median(ratios)), "iqr": float(q3 - q1), "n": int(ratios.size),
            "ci95": list(bounds) if bounds else None}
