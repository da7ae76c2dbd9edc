"""The asv convergence benchmarks (benchmarks/bench_convergence.py): units, n/a, not-reached values."""

import importlib.util
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("_asv_bench_convergence", ROOT / "benchmarks" / "bench_convergence.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tracks_have_units_and_report_not_reached_as_nan():
    module = _module()
    bench = module.Convergence()
    assert bench.track_steps_to_target.unit == "steps" and bench.track_final_dev.unit == "%"
    cache = {"dense": {"steps": 200, "final": 90.9}, "meProp k=20": {"steps": None, "final": 52.7},
             "meProp k=20 (lazy Adam)": {"steps": 350, "final": 60.0}}
    bench.setup(cache, "dense")
    assert bench.track_steps_to_target(cache, "dense") == 200.0
    assert math.isnan(bench.track_steps_to_target(cache, "meProp k=20"))
    assert bench.track_final_dev(cache, "meProp k=20 (lazy Adam)") == 60.0
    assert module.Convergence.params == [list(cache)]


def test_missing_runner_or_data_is_na():
    bench = _module().Convergence()
    with pytest.raises(NotImplementedError, match="no MNIST"):
        bench.setup({"unavailable": "no MNIST"}, "dense")
