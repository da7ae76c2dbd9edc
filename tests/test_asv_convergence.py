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
    cache = {"dense": {"steps": 200.0, "final": 90.9, "speedup": None},
             "meProp k=20": {"steps": math.inf, "final": 52.7, "speedup": 0.0},
             "meProp k=20 (lazy Adam)": {"steps": 350.0, "final": 60.0, "speedup": 0.8}}
    bench.setup(cache, "dense")
    assert bench.track_steps_to_target(cache, "dense") == 200.0
    assert math.isnan(bench.track_steps_to_target(cache, "meProp k=20"))
    assert bench.track_final_dev(cache, "meProp k=20 (lazy Adam)") == 60.0
    assert bench.track_time_to_target_speedup(cache, "meProp k=20 (lazy Adam)") == 0.8
    assert math.isnan(bench.track_time_to_target_speedup(cache, "dense"))
    assert bench.track_time_to_target_speedup.unit == "x"
    assert module.Convergence.params == [list(cache)]


def test_missing_runner_or_data_is_na():
    bench = _module().Convergence()
    with pytest.raises(NotImplementedError, match="no MNIST"):
        bench.setup({"unavailable": "no MNIST"}, "dense")


def test_the_cache_is_the_summary_over_seeds(monkeypatch):
    """setup_cache reads the shared statistics (two paired seeds) on a small synthetic stand-in."""
    module = _module()
    from meprop.lab.converge import paper_workload
    from meprop.lab.paper import data
    from meprop.lab.paper.train import TrainConfig

    class Small(paper_workload.PaperWorkload):
        def __init__(self, name, config, load):
            super().__init__(name, TrainConfig("synthetic", hidden=32, batch=10, limit=200),
                             lambda: data.make_synthetic(200, 100, seed=0))
    monkeypatch.setattr(paper_workload, "PaperWorkload", Small)
    monkeypatch.setattr(data, "mnist_path", lambda: None)
    cache = module._measure()
    assert set(cache) == set(module._VARIANTS)
    assert cache["dense"]["speedup"] is None and cache["meProp k=20"]["speedup"] is not None
    assert all(c["final"] is not None for c in cache.values())
