"""Table builders on synthetic results: known speedups in, the same numbers out."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import report_fixtures as fx

from meprop.lab.report.frames import bench_frame, env_frame, nominal_k_ratio
from meprop.lab.report.tables import (
    break_even_table,
    headline_table,
    memory_table,
    speedup_table,
    write_table,
)


def test_speedups_out_equal_speedups_in(quick_records):
    frame = bench_frame(quick_records)
    lb = frame[frame["measurement"] == "linear_backward"]
    assert len(lb) == sum(len(c) for c in fx.SPEEDUPS.values())
    for (mode, hidden, batch), curve in fx.SPEEDUPS.items():
        for ratio, expected in curve.items():
            k = max(1, round(ratio * hidden))
            row = lb[(lb["mode"] == mode) & (lb["hidden"] == hidden) & (lb["batch"] == batch) & (lb["k"] == k)]
            assert len(row) == 1
            assert row["speedup"].iloc[0] == pytest.approx(expected)
            assert row["ideal"].iloc[0] == pytest.approx(hidden / k)
            assert row["efficiency"].iloc[0] == pytest.approx(expected * k / hidden)
            assert row["dense_ms"].iloc[0] == pytest.approx(hidden * batch * 1e-6)


def test_speedup_recomputed_only_when_missing():
    rec = fx.bench_record("r", hidden=1000, batch=8, k=10, dense_s=2e-3, meprop_s=5e-4)
    rec["speedup"] = None  # e.g. an input that stores only the medians
    frame = bench_frame([fx.env_record("r"), rec])
    assert frame["speedup"].iloc[0] == pytest.approx(4.0)
    rec["speedup"] = 3.5  # a stored speedup is reported as stored
    assert bench_frame([fx.env_record("r"), rec])["speedup"].iloc[0] == 3.5


def test_noisy_cells_flagged_in_table(quick_records):
    table = speedup_table(bench_frame(quick_records), "linear_backward")
    noisy = table[table["noisy"] == True]  # noqa: E712
    assert len(noisy) == 1
    row = noisy.iloc[0]
    assert (row["mode"], row["hidden n"], row["batch"], row["k"]) == ("unified", 1024, 64, 41)
    assert row["spread %"] == pytest.approx(30.0)
    assert not table.loc[table["noisy"] != True, "spread %"].gt(10).any()  # noqa: E712


def test_break_even_is_largest_ratio_still_faster(quick_records):
    be = break_even_table(bench_frame(quick_records))
    by = {(r["mode"], r["hidden n"], r["batch"]): r for _, r in be.iterrows()}
    # per_example 1024/64: 0.01:9, 0.04:3, 0.1:1.2, 0.5:0.6 -> break-even at k=102 (0.0996), slower at 0.5
    row = by[("per_example", 1024, 64)]
    assert row["break-even k/n"] == pytest.approx(102 / 1024)
    assert row["first slower k/n"] == pytest.approx(0.5)
    assert row["speedup at break-even"] == pytest.approx(1.2)
    # per_example 1024/1024: 0.1 -> 0.9 (slower) -> break-even 0.04
    assert by[("per_example", 1024, 1024)]["break-even k/n"] == pytest.approx(41 / 1024)
    # unified is faster everywhere: break-even at the largest ratio, nothing slower
    row = by[("unified", 4096, 1024)]
    assert row["break-even k/n"] == pytest.approx(0.5) and math.isnan(row["first slower k/n"])


def test_break_even_blank_when_never_faster():
    recs = [fx.env_record("r")] + [
        fx.bench_record("r", hidden=500, batch=1, k=k, mode="per_example", dense_s=1e-4, meprop_s=2e-4)
        for k in (5, 50)
    ]
    be = break_even_table(bench_frame(recs))
    assert len(be) == 1 and math.isnan(be["break-even k/n"].iloc[0])
    assert be["first slower k/n"].iloc[0] == pytest.approx(0.01)


def test_break_even_counts_no_flagged_cell_as_faster():
    # per_example n=1024, batch 64: a clean 9x at 1%, a noisy 5x at 10%, and 3x at 50% where
    # the ideal n/k is 2 (the dense baseline is broken): only the 1% point is a win
    recs = [fx.env_record("r"),
            fx.bench_record("r", hidden=1024, batch=64, k=10, mode="per_example", dense_s=9e-3, meprop_s=1e-3),
            fx.bench_record("r", hidden=1024, batch=64, k=102, mode="per_example", dense_s=5e-3, meprop_s=1e-3,
                            iqr_frac=0.15),
            fx.bench_record("r", hidden=1024, batch=64, k=512, mode="per_example", dense_s=3e-3, meprop_s=1e-3)]
    frame = bench_frame(recs)
    assert frame["flag"].tolist() == ["", "noisy", "above ideal"]
    assert (frame["speedup_low"] > 1).all()  # each interval alone would read as a win
    (row,) = [r for _, r in break_even_table(frame).iterrows()]
    assert row["break-even k/n"] == pytest.approx(10 / 1024)
    assert row["first slower k/n"] == pytest.approx(102 / 1024)
    assert row["speedup at break-even"] == pytest.approx(9.0)


def test_headline_best_per_device_and_mode(quick_records):
    head = headline_table(bench_frame(quick_records)).set_index("mode")
    assert head.loc["unified", "best linear-only speedup"] == pytest.approx(45.0)
    assert head.loc["per_example", "best linear-only speedup"] == pytest.approx(12.0)
    assert "n=4096, batch 1024, k=41" in head.loc["unified", "linear-only at"]
    assert head.loc["unified", "overall at"] == "not measured"


def test_machines_kept_apart():
    recs = fx.quick_like_records("run-a", "box-a") + fx.quick_like_records("run-b", "box-b")
    for r in recs:  # box-b is twice as fast with meProp everywhere
        if r["type"] == "bench" and r["run_id"] == "run-b":
            r["meprop"]["median_s"] /= 2
            r["speedup"] *= 2
    head = headline_table(bench_frame(recs))
    best = head.set_index(["machine", "mode"])["best linear-only speedup"]
    assert best[("box-a", "unified")] == pytest.approx(45.0)
    assert best[("box-b", "unified")] == pytest.approx(90.0)
    env = env_frame(recs)
    assert list(env.columns) == ["box-a / run-a", "box-b / run-b"]
    assert env.loc["cpu_model", "box-a / run-a"] == "AMD EPYC"


def test_skipped_and_missing_dense_rows_kept_with_a_note():
    recs = [fx.env_record("r"),
            fx.bench_record("r", hidden=8192, batch=1024, k=128, status="skipped", reason="out of memory"),
            fx.bench_record("r", hidden=1024, batch=1, k=10, dense_s=None)]
    table = speedup_table(bench_frame(recs), "linear_backward")
    assert list(table["note"]) == ["no dense baseline", "out of memory"]
    assert table["speedup"].isna().all()


def test_nominal_k_ratio_groups_rounded_ratios():
    labels = nominal_k_ratio(pd.Series([10 / 1024, 41 / 4096, 102 / 1024, 0.1, 0.04, 0.5]))
    assert list(labels) == ["0.01", "0.01", "0.1", "0.1", "0.04", "0.5"]


def test_memory_table_and_files(tmp_path):
    peak = {"dense_bytes": 64 * 2**20, "meprop_bytes": 16 * 2**20, "kind": "cpu_rss_delta"}
    zero = {"dense_bytes": 0, "meprop_bytes": 0, "kind": "cpu_rss_delta"}
    step = dict(workload="mlp", measurement="train_step", layers=2, in_features=784)
    recs = [fx.env_record("r"), fx.bench_record("r", hidden=4096, batch=64, k=41, peak=peak),
            fx.bench_record("r", hidden=4096, batch=1, k=41, peak=zero),  # nothing measured
            fx.bench_record("r", hidden=500, batch=1, k=5, peak=peak, **step),
            fx.bench_record("r", hidden=500, batch=1, k=5, peak=peak, adam="fused", **step)]
    table, zeros = memory_table(bench_frame(recs))
    assert zeros == 1 and len(table) == 3
    assert table[["dense MiB", "meProp MiB", "meProp / dense"]].iloc[0].tolist() == [64.0, 16.0, 0.25]
    steps = table[table["measurement"] == "train_step"]  # the two steps differ by their Adam, shown
    assert sorted(steps["Adam"]) == ["default", "fused"] and set(steps["meProp optimizer"]) == {"lazy"}
    paths = write_table(table, tmp_path, "peak_memory")
    assert pd.read_csv(paths["csv"])["meProp MiB"].tolist() == [16.0, 16.0, 16.0]
    md = paths["md"].read_text()
    assert md.splitlines()[0].startswith("|") and "cpu_rss_delta" in md
