"""One timing-options object: its defaults in one place, built by the profiles and the CLI."""

from __future__ import annotations

import pytest

from meprop.lab.plan.profiles import PROFILES
from meprop.lab.engine.timer import time_one
from meprop.lab.plan.timing import TimingOptions


class _Clock:
    """Each call of the timed op advances the clock by 1 ms."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def op(self):
        self.now += 1e-3


def test_defaults_and_overrides():
    base = TimingOptions()
    assert (base.min_samples, base.max_samples, base.budget_s) == (5, 100, 1.0)
    changed = base.replace(budget_s=2.0, min_samples=None)  # None keeps a field
    assert (changed.budget_s, changed.min_samples) == (2.0, 5)
    with pytest.raises(TypeError, match="unknown timing option.*'budget'"):
        base.replace(budget=2.0)
    with pytest.raises(ValueError, match="max_samples must be >= min_samples=9"):
        TimingOptions(min_samples=9, max_samples=3)


def test_the_timer_takes_options_and_overrides_of_them():
    clock = _Clock()
    options = TimingOptions(min_samples=4, max_samples=4, warmup_s=0, min_sample_s=0)
    assert time_one(clock.op, clock=clock, options=options).n_samples == 4
    assert time_one(clock.op, clock=clock, options=options, min_samples=6, max_samples=6).n_samples == 6
    with pytest.raises(TypeError, match="unknown timing option"):
        time_one(clock.op, clock=clock, samples=3)


def test_every_profile_carries_its_options():
    assert all(isinstance(p.timing, TimingOptions) for p in PROFILES.values())
    assert PROFILES["smoke"].timing.budget_s < PROFILES["perf"].timing.budget_s
