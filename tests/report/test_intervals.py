"""The speedup's 95% interval (meprop.lab.results.stats), and the rule that a flagged cell is no win.

The bootstrap is checked against its definition (a ratio of medians resampled per side,
seeded), against the normal approximation on well-behaved samples, and for coverage on
simulated timings with a known true ratio; tables, targets and CSVs carry the interval.
"""

from __future__ import annotations

import numpy as np
import pytest
from report_fixtures import bench_record, env_record, write_jsonl

from meprop.lab.report.frames import bench_frame
from meprop.lab.results import schema, stats


def _timing(samples):
    samples = np.asarray(samples, dtype=float)
    q1, q3 = np.percentile(samples, [25, 75])
    return {"median_s": float(np.median(samples)), "iqr_s": float(q3 - q1), "n_samples": len(samples),
            "samples_s": samples.tolist()}


def test_bootstrap_is_seeded_and_brackets_the_ratio_of_medians():
    rng = np.random.default_rng(3)
    dense, meprop = rng.lognormal(np.log(10e-3), 0.05, 15), rng.lognormal(np.log(2e-3), 0.05, 15)
    first = stats.bootstrap_ratio_interval(dense, meprop)
    assert first == stats.bootstrap_ratio_interval(dense, meprop)  # deterministic
    low, high = first
    assert low < np.median(dense) / np.median(meprop) < high
    approx = stats.approx_ratio_interval(_timing(dense), _timing(meprop))
    assert approx[0] == pytest.approx(low, rel=0.05) and approx[1] == pytest.approx(high, rel=0.05)


def test_bootstrap_covers_the_true_ratio_about_as_often_as_its_level():
    rng = np.random.default_rng(11)
    covered = 0
    for seed in range(200):
        dense = rng.lognormal(np.log(3.0), 0.1, 25)
        meprop = rng.lognormal(np.log(1.0), 0.1, 25)
        low, high = stats.bootstrap_ratio_interval(dense, meprop, resamples=500, seed=seed)
        covered += low <= 3.0 <= high
    assert 0.85 <= covered / 200 <= 1.0


def test_speedup_interval_method_and_refusals():
    with_samples = stats.speedup_interval(_timing([2.0, 2.1, 1.9, 2.0, 2.05]), _timing([1.0, 1.1, 0.9, 1.0, 1.0]))
    assert with_samples["method"] == "bootstrap" and with_samples["level"] == 0.95
    plain = stats.speedup_interval({"median_s": 2.0, "iqr_s": 0.1, "n_samples": 9},
                                   {"median_s": 1.0, "iqr_s": 0.05, "n_samples": 9})
    assert plain["method"] == "normal" and plain["low"] < 2.0 < plain["high"]
    assert stats.speedup_interval({"median_s": 2.0}, {"median_s": 1.0}) is None  # no spread: no interval
    with pytest.raises(ValueError, match="level must be a float in"):
        stats.speedup_interval({"median_s": 2.0}, {"median_s": 1.0}, level=95)


def test_straddling_and_headline_rules():
    assert stats.straddles_one(0.9, 1.2) and not stats.straddles_one(1.1, 1.3)
    assert stats.straddles_one(None, 1.2) is None and stats.straddles_one(float("nan"), 1.0) is None
    assert stats.is_headline_worthy(noisy=False, above_ideal=False, low=1.1, high=1.3)
    assert not stats.is_headline_worthy(noisy=np.True_, above_ideal=False, low=1.1, high=1.3)
    assert not stats.is_headline_worthy(noisy=None, above_ideal=True, low=1.1, high=1.3)
    assert not stats.is_headline_worthy(noisy=None, above_ideal=False, low=0.9, high=1.3)
    assert not stats.is_headline_worthy(noisy=None, above_ideal=False, low=None, high=None)


def test_records_carry_the_interval_and_the_frame_flags_cells():
    record = schema.bench_record("r", key="k", case={"hidden": 100, "k": 10},
                                 dense=_timing([2.0, 2.02, 1.98, 2.01, 1.99]),
                                 meprop=_timing([1.0, 1.01, 0.99, 1.0, 1.0]))
    assert record["speedup_ci"]["method"] == "bootstrap" and record["speedup_ci"]["low"] > 1.9
    frame = bench_frame([
        bench_record("r1", hidden=4096, batch=64, k=41, dense_s=1.01e-3, meprop_s=1e-3),  # 1.01x
        bench_record("r1", hidden=4096, batch=1, k=41, dense_s=10e-3, meprop_s=1e-3, iqr_frac=0.3),
        bench_record("r1", hidden=4096, batch=1024, k=41, dense_s=10e-3, meprop_s=1e-3),
    ]).set_index("batch")
    assert frame.loc[64, "flag"] == "interval contains 1" and not frame.loc[64, "headline_ok"]
    assert frame.loc[1, "flag"].startswith("noisy") and not frame.loc[1, "headline_ok"]
    assert frame.loc[1024, "flag"] == "" and frame.loc[1024, "headline_ok"]
    assert (frame["ci_method"] == "normal").all()  # the fixtures record no samples


def test_tables_targets_and_csv_carry_the_interval_and_flagged_cells_meet_no_target(tmp_path):
    from meprop.lab.report import build_report
    from pathlib import Path

    from meprop.lab.plan.target_file import load_targets
    from meprop.lab.report.sections.targets import match_targets

    records = [  # the target "per-example, n=4096, batch 1, k=1%" (20x): 25x but noisy
        bench_record("r1", hidden=4096, batch=1, k=41, mode="per_example", dense_s=25e-3, meprop_s=1e-3,
                     iqr_frac=0.2),
        bench_record("r1", hidden=4096, batch=64, k=41, mode="per_example", dense_s=7e-3, meprop_s=1e-3),
    ]
    targets = load_targets(Path(__file__).resolve().parents[2] / "benchmarks" / "targets.toml")
    matched = match_targets(bench_frame(records), targets).set_index("target")
    noisy = matched.loc["per-example, n=4096, batch 1, k=1%"]
    assert noisy["met"] == "NO (flagged)" and "noisy" in noisy["flag"]
    clean = matched.loc["per-example, n=4096, batch 64, k=1%"]
    assert clean["met"] == "yes" and clean["low"] < 7 < clean["high"] and clean["samples"] == 7
    out = tmp_path / "out"
    build_report([write_jsonl(tmp_path / "r.jsonl", [env_record("r1"), *records])], out)
    import pandas as pd

    table = pd.read_csv(out / "tables" / "speedup_linear_backward.csv")
    assert {"speedup low", "speedup high", "flag"} <= set(table.columns)
    assert (table["speedup low"] < table["speedup"]).all() and (table["speedup"] < table["speedup high"]).all()
    page = (out / "index.html").read_text()
    assert "95% interval" in page and "percentile bootstrap" in page and "NO (flagged)" in page
