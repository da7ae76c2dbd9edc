"""The timer's logic with an injected fake clock: statistics, interleaving, adaptive stopping."""

import math

import pytest
import torch

from meprop.lab.engine.timer import (
    NOISE_THRESHOLD, Measurement, Stopwatch, num_threads, time_one, time_pair,
)


class FakeClock:
    """A clock that only moves when an operation says so."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def op(self, durations, log=None, name=None):
        """A callable that advances the clock by the next duration (cycling)."""
        durations = list(durations)
        state = {"i": 0}

        def fn():
            self.now += durations[state["i"] % len(durations)]
            state["i"] += 1
            if log is not None:
                log.append(name)
        fn.calls = state
        return fn


def test_measurement_statistics():
    m = Measurement((1.0, 2.0, 3.0, 4.0, 100.0))
    assert m.median == 3.0
    assert m.iqr == pytest.approx(2.0)  # percentiles 2.0 and 4.0
    assert (m.min, m.mean, m.n_samples) == (1.0, 22.0, 5)
    assert m.noisy  # 2 / 3 > 10%
    d = m.to_dict()
    assert d["median_s"] == 3.0 and d["n_samples"] == 5 and d["min_s"] == 1.0


def test_noisy_threshold():
    assert not Measurement((1.0, 1.0, 1.0, 1.0)).noisy
    spread = NOISE_THRESHOLD * 0.9
    assert not Measurement((1.0 - spread / 2, 1.0, 1.0 + spread / 2)).noisy
    assert Measurement((0.8, 1.0, 1.2)).noisy


def test_empty_measurement_refused():
    with pytest.raises(ValueError, match="at least one sample"):
        Measurement(())


def test_constant_op_stops_at_min_samples():
    clock = FakeClock()
    fn = clock.op([0.01])
    m = time_one(fn, clock=clock, min_samples=5, max_samples=50, warmup_s=0, budget_s=10,
                 min_sample_s=0)
    assert m.n_samples == 5  # zero spread: settled as soon as allowed
    assert m.median == pytest.approx(0.01)
    assert fn.calls["i"] == 6  # one warm-up call + 5 samples


def test_noisy_op_runs_until_budget():
    clock = FakeClock()
    fn = clock.op([0.01, 0.03, 0.02, 0.05])  # relative IQR ~ 0.6: never settles to 1%
    m = time_one(fn, clock=clock, min_samples=3, max_samples=10_000, warmup_s=0,
                 budget_s=1.0, min_sample_s=0)
    total = sum(m.samples)
    assert 1.0 <= total < 1.0 + 0.05 + 1e-9  # stopped by the first sample past the budget
    assert m.n_samples < 10_000


def test_max_samples_bounds_a_noisy_op():
    clock = FakeClock()
    fn = clock.op([0.01, 0.03])
    m = time_one(fn, clock=clock, min_samples=3, max_samples=7, warmup_s=0, budget_s=1e9,
                 min_sample_s=0)
    assert m.n_samples == 7


def test_min_samples_taken_past_the_budget():
    clock = FakeClock()
    m = time_one(clock.op([1.0, 2.0]), clock=clock, min_samples=4, budget_s=0.1, warmup_s=0,
                 min_sample_s=0)
    assert m.n_samples == 4


def test_spread_settles_when_precision_is_reached():
    # relative IQR 0.2: SE ~ 1.2533 * 0.2 / 1.349 / sqrt(n) <= 0.02 needs n >= 87
    clock = FakeClock()
    fn = clock.op([0.8, 0.9, 1.0, 1.1, 1.2])
    m = time_one(fn, clock=clock, min_samples=3, max_samples=1000, warmup_s=0, budget_s=1e9,
                 rel_precision=0.02, min_sample_s=0)
    assert 85 <= m.n_samples <= 95
    assert m.rel_standard_error() <= 0.02


def test_warmup_runs_until_warmup_time_and_is_not_sampled():
    clock = FakeClock()
    fn = clock.op([5.0] + [0.01] * 1000)  # a slow first call (lazy init)
    m = time_one(fn, clock=clock, min_samples=5, warmup_s=5.995, budget_s=10, min_sample_s=0)
    assert m.min == pytest.approx(0.01) and m.median == pytest.approx(0.01)
    assert fn.calls["i"] == 1 + 100 + m.n_samples  # 5.0 + 100 * 0.01 passes 5.995 s


def test_fast_ops_are_batched_per_sample():
    clock = FakeClock()
    fn = clock.op([1e-5])
    m = time_one(fn, clock=clock, min_samples=3, warmup_s=0, min_sample_s=1e-3)
    assert m.number == 100
    assert m.median == pytest.approx(1e-5)  # per call, not per sample


def test_time_pair_interleaves_abba():
    clock = FakeClock()
    log = []
    dense = clock.op([0.04], log, "d")
    meprop = clock.op([0.01], log, "m")
    d, m = time_pair(dense, meprop, clock=clock, min_samples=4, max_samples=4, warmup_s=0,
                     min_sample_s=0, rewarm_below_s=0)
    assert log[:2] == ["d", "m"]  # warm-up
    assert log[2:] == ["d", "m", "m", "d", "d", "m", "m", "d"]
    assert d.median / m.median == pytest.approx(4.0)


def _cache_sharing_ops(clock, warm_s, cold_factor, log):
    """Two ops whose call costs ``cold_factor`` times more right after the other op ran."""
    last = {"name": None}

    def make(name, cost):
        def fn():
            cold = last["name"] not in (None, name)
            clock.now += cost * (cold_factor if cold else 1.0)
            last["name"] = name
            log.append(name)
        return fn
    return make("d", warm_s[0]), make("m", warm_s[1])


def _time_cache_sharing_pair(warm_s, cold_factor, samples, **timing):
    """time_pair of :func:`_cache_sharing_ops` on a fake clock: ``(dense, meprop, call log)``."""
    clock, log = FakeClock(), []
    dense, meprop = _cache_sharing_ops(clock, warm_s, cold_factor, log)
    d, m = time_pair(dense, meprop, clock=clock, min_samples=samples, max_samples=samples,
                     warmup_s=0, min_sample_s=0, **timing)
    return d, m, log


def test_short_calls_are_timed_warm_after_switching_sides():
    d, m, log = _time_cache_sharing_pair((0.004, 0.002), 1.7, samples=4)
    # each sample is a block of >= 20 ms of consecutive calls after one untimed call of
    # its own side: the steady state of a loop
    assert (d.median, m.median) == (pytest.approx(0.004), pytest.approx(0.002))
    # (calibrated on the one warm-up call each: meProp's came right after dense's, cold)
    assert (d.number, m.number) == (5, 6)
    assert d.rewarm == m.rewarm == 1 and d.to_dict()["rewarm"] == 1
    assert log[2:15] == ["d"] * 6 + ["m"] * 7
    # without the lead-in the same ops measure cold: the state the lead-in removes
    d, m, log = _time_cache_sharing_pair((0.004, 0.002), 1.7, samples=4, rewarm_below_s=0)
    assert m.median > 1.3 * 0.002 and m.rewarm == 0  # ABBA: half its samples follow the other side


def test_long_calls_and_single_ops_get_no_lead_in():
    d, m, log = _time_cache_sharing_pair((0.5, 0.1), 1.1, samples=3)
    assert d.rewarm == m.rewarm == 0 and len(log) == 2 + 6
    clock = FakeClock()
    single = time_one(clock.op([1e-3]), clock=clock, min_samples=3, max_samples=3, warmup_s=0)
    assert single.rewarm == 0


def test_time_pair_is_adaptive_for_both_sides():
    clock = FakeClock()
    dense = clock.op([0.04])
    meprop = clock.op([0.01, 0.02, 0.015])  # noisy: sampling goes on for both
    d, m = time_pair(dense, meprop, clock=clock, min_samples=3, max_samples=40, warmup_s=0,
                     budget_s=1e9, min_sample_s=0, rewarm_below_s=0)
    assert d.n_samples == m.n_samples == 40


@pytest.mark.parametrize("kwargs, match", [
    (dict(min_samples=0), "min_samples"),
    (dict(min_samples=5, max_samples=2), "max_samples"),
    (dict(budget_s=-1), "budget_s"),
    (dict(rewarm_below_s=-0.5), "rewarm_below_s"),
    (dict(threads=0), "threads"),
])
def test_bad_timing_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        time_one(lambda: None, **kwargs)


def test_threads_set_and_restored():
    before = torch.get_num_threads()
    seen = []
    time_one(lambda: seen.append(torch.get_num_threads()), threads=1, min_samples=1,
             max_samples=1, warmup_s=0, min_sample_s=0)
    assert set(seen) == {1}
    assert torch.get_num_threads() == before
    with num_threads(None) as n:
        assert n == before


def test_stopwatch_accumulates_intervals():
    clock = FakeClock()
    watch = Stopwatch("cpu", clock=clock)
    for step in (0.5, 0.25):
        with watch:
            clock.now += step
        clock.now += 10  # outside: not counted
    assert watch.elapsed == pytest.approx(0.75) and watch.laps == 2
    with pytest.raises(RuntimeError, match="already running"):
        with watch:
            with watch:
                pass
    watch.reset()
    assert (watch.elapsed, watch.laps) == (0.0, 0)


def test_stopwatch_real_clock_cpu():
    watch = Stopwatch("cpu")
    with watch:
        torch.ones(10).sum()
    assert 0 < watch.elapsed < 10 and not math.isnan(watch.elapsed)


def test_an_undecided_pair_gets_more_samples_up_to_its_extension():
    # dense and meProp alike, 40% spread: noisy, and the ratio's interval contains 1.0
    clock = FakeClock()
    dense, meprop = clock.op([0.010, 0.014, 0.012, 0.016]), clock.op([0.016, 0.010, 0.014, 0.012])
    d, m = time_pair(dense, meprop, clock=clock, min_samples=3, max_samples=10_000, warmup_s=0,
                     budget_s=0.2, extend_factor=2.0, min_sample_s=0, rewarm_below_s=0)
    spent = sum(d.samples) + sum(m.samples)
    assert 0.6 <= spent < 0.6 + 0.04  # budget + extension, stopped by the first round past it
    assert d.to_dict()["samples_s"] == list(d.samples)


def test_a_decided_pair_stops_at_the_budget_without_extension():
    # a clear 3x with 5% spread: neither noisy nor undecided, but not precise to 0.1% either
    clock = FakeClock()
    dense, meprop = clock.op([0.030, 0.031, 0.029, 0.0305]), clock.op([0.010, 0.0102, 0.0098, 0.0101])
    d, m = time_pair(dense, meprop, clock=clock, min_samples=3, max_samples=10_000, warmup_s=0,
                     budget_s=0.2, extend_factor=50.0, min_sample_s=0, rewarm_below_s=0, rel_precision=1e-4)
    assert 0.2 <= sum(d.samples) + sum(m.samples) < 0.2 + 0.05
