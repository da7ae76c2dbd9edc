"""The performance targets matched against result rows; the paper's tables beside ours."""

from __future__ import annotations

import math
from pathlib import Path
import pandas as pd
import pytest
import report_fixtures as fx

from meprop.lab.plan.profiles import profile_cases
from meprop.lab.report.frames import bench_frame
from meprop.lab.report.sections import paper
from meprop.lab.plan.target_file import load_targets
from meprop.lab.report.sections.targets import match_targets, targets_display

ROOT = Path(__file__).resolve().parents[2]
TARGETS = load_targets(ROOT / "benchmarks" / "targets.toml")


def _by_target(matched):
    return matched.set_index("target")


def test_targets_met_missed_and_not_measured():
    recs = [fx.env_record("r", profile="perf"),
            # unified n=8192 B=1024 k=128: 32x >= 30x -> met
            fx.bench_record("r", hidden=8192, batch=1024, k=128, dense_s=3.2e-1, meprop_s=1e-2),
            # unified n=8192 B=1024 k=512: 10x < 11x -> missed
            fx.bench_record("r", hidden=8192, batch=1024, k=512, dense_s=1e-1, meprop_s=1e-2),
            # per-example n=4096 B=1 k=1% (k=41): 25x
            fx.bench_record("r", hidden=4096, batch=1, k=41, mode="per_example", dense_s=2.5e-3, meprop_s=1e-4),
            # MLP 784-500-500-10 overall, k=20, B=1024, unified: 3.5x
            fx.bench_record("r", hidden=500, batch=1024, k=20, workload="mlp", layers=2, in_features=784,
                            measurement="overall_backward", dense_s=3.5e-3, meprop_s=1e-3),
            # a linear n=500 row must not count as the MLP target
            fx.bench_record("r", hidden=500, batch=1024, k=20, dense_s=1e-3, meprop_s=1e-3),
            # forward 3% slower -> within 5%
            fx.bench_record("r", hidden=4096, batch=64, k=41, measurement="forward", dense_s=1e-3, meprop_s=1.03e-3)]
    t = _by_target(match_targets(bench_frame(recs), TARGETS))
    assert len(t) == len(TARGETS)
    row = t.loc["unified, n=8192, batch 1024, k=128 (1.6%)"]
    assert (row["met"], row["achieved"]) == ("yes", pytest.approx(32.0))
    row = t.loc["unified, n=8192, batch 1024, k=512 (6.25%)"]
    assert (row["met"], row["achieved"]) == ("NO", pytest.approx(10.0))
    assert t.loc["per-example, n=4096, batch 1, k=1%", "achieved"] == pytest.approx(25.0)
    assert t.loc["MLP 784-500-500-10 overall backprop, k=20, batch 1024, unified", "achieved"] == pytest.approx(3.5)
    assert t.loc["unified, n=4096, batch 64, k=10%", "met"] == "not measured"
    assert t.loc["masked-dense reference never on a fast path", "met"] == "n/a"
    row = t.loc["forward with meProp layers within 5% of dense (worst case)"]
    assert row["met"] == "yes" and row["achieved"] == pytest.approx(1 / 1.03)


def test_forward_target_fails_beyond_five_percent():
    recs = [fx.env_record("r"),
            fx.bench_record("r", hidden=1024, batch=64, k=10, measurement="forward", dense_s=1e-3, meprop_s=1.02e-3),
            fx.bench_record("r", hidden=4096, batch=64, k=41, measurement="forward", dense_s=1e-3, meprop_s=1.08e-3)]
    row = _by_target(match_targets(bench_frame(recs), TARGETS)).loc["forward with meProp layers within 5% of dense (worst case)"]
    assert row["met"] == "NO" and row["achieved"] == pytest.approx(1 / 1.08)


def test_break_even_target_uses_the_worst_group(quick_records):
    # per_example, n >= 1024, batch >= 64 in the fixture: break-even 0.0996, 0.04, 0.1, 0.1 -> worst 0.04
    t = match_targets(bench_frame(quick_records), TARGETS)
    row = _by_target(t).loc["per-example break-even k ratio, n >= 1024, batch >= 64"]
    assert row["met"] == "NO" and row["achieved"] == pytest.approx(41 / 1024)
    shown = targets_display(t).set_index("target")
    assert shown.loc["per-example break-even k ratio, n >= 1024, batch >= 64", "required"] == "≥ 10.0% k/n"
    assert shown.loc["unified, n=4096, batch 1024, k=1%", "achieved"] == "45.00x"


def test_k_ratio_target_matches_rounded_k_only():
    recs = [fx.env_record("r"),
            fx.bench_record("r", hidden=4096, batch=1024, k=41, dense_s=4e-2, meprop_s=1e-3),   # 1%: 40x
            fx.bench_record("r", hidden=4096, batch=1024, k=164, dense_s=4e-2, meprop_s=4e-3)]  # 4%
    row = _by_target(match_targets(bench_frame(recs), TARGETS)).loc["unified, n=4096, batch 1024, k=1%"]
    assert row["achieved"] == pytest.approx(40.0) and "k=41" in row["at"]


def _perf_profile_frame():
    """A result frame with one ok row per case of the ``perf`` profile (speedup falls with k/n)."""
    recs = [fx.env_record("r", profile="perf")]
    for c in profile_cases("perf", TARGETS):
        recs.append(fx.bench_record("r", hidden=c.hidden, batch=c.batch, k=c.k, mode=c.mode,
                                    measurement=c.measurement, workload=c.workload, layers=c.layers,
                                    in_features=c.in_features, threads=c.threads, classes=c.classes,
                                    dense_s=1e-2, meprop_s=1e-2 * 4 * c.k_ratio))
    return bench_frame(recs)


def _row_id(row):
    return (row["workload"], row["measurement"], row["hidden"], row["batch"], row["k"], row["mode"],
            row["in_features"], row["layers"])


def test_perf_profile_cases_measure_every_timing_target():
    frame = _perf_profile_frame()
    t = _by_target(match_targets(frame, TARGETS))
    timing = [target for target in TARGETS if target.kind != "review"]
    assert timing and all(target.cases() for target in timing)
    for target in timing:
        assert t.loc[target.label, "met"] in ("yes", "NO"), target.label
        assert not pd.isna(t.loc[target.label, "achieved"]), target.label
        # each target selects its own perf cases (and, for a one-case target, only that case)
        selected = {_row_id(row) for _, row in frame[target.selects(frame)].iterrows()}
        own = {(c.workload, c.measurement, c.hidden, c.batch, c.k, c.mode, c.in_features, c.layers)
               for c in target.cases()}
        assert own <= selected, target.label
        if target.names_one_case:
            assert selected == own, target.label
    # speedup = 1 / (4 k/n): still faster at the 20% point (k = ceil(0.2 n): 820 of 4096),
    # slower at 30%
    row = t.loc["per-example break-even k ratio, n >= 1024, batch >= 64"]
    assert row["met"] == "yes" and row["achieved"] == pytest.approx(math.ceil(0.2 * 4096) / 4096)
    # the never-slower grids: every cell measured, the slowest (k/n 50%: 0.5x here) decides
    for label in ("MLP 784-n-n-10 overall backprop, per-example, every cell: n 500/1024/4096, "
                  "k 1/4/10/50%, batch 64/1024",
                  "linear-only backprop, per-example, every cell: n 1024/4096, k 1/10/25/50%, batch 64/1024"):
        row = t.loc[label]
        assert row["met"] == "NO" and row["achieved"] == pytest.approx(0.5), label
        assert row["at"].startswith("worst of ") and "in the grid" not in row["at"], label
        assert "per_example" in row["at"] and "2 threads" in row["at"], label


def test_step_targets_select_the_lazy_optimizer_with_default_adam_only():
    # the training-step targets are defined with torch.optim.Adam's defaults and the lazy optimizer;
    # the same case with fused Adam or the exact optimizer is another row, never the target's
    step = dict(hidden=4096, batch=1, k=41, mode="per_example", measurement="train_step",
                workload="mlp", layers=2, in_features=784)
    recs = [fx.env_record("r"),
            fx.bench_record("r", **step, dense_s=60e-3, meprop_s=6e-3),  # no fields: an older record
            fx.bench_record("r", **step, dense_s=30e-3, meprop_s=6e-3, adam="fused"),
            fx.bench_record("r", **step, dense_s=60e-3, meprop_s=50e-3, optimizer="exact"),
            fx.bench_record("r", **step, dense_s=60e-3, meprop_s=5e-3, optimizer="lazy", adam="default")]
    frame = bench_frame(recs)
    target = next(t for t in TARGETS if t.measurement == "train_step" and t.batch == 1)
    assert target.selects(frame).tolist() == [True, False, False, True]


def test_review_target_selects_nothing():
    frame = _perf_profile_frame()
    reviews = [target for target in TARGETS if target.kind == "review"]
    assert len(reviews) == 2  # the masked-dense row and the torch.compile row
    for review in reviews:
        assert review.cases() == () and not review.selects(frame).any()


def test_paper_table7_side_by_side():
    recs = [fx.env_record("r")] + [
        fx.bench_record("r", hidden=8192, batch=1024, k=k, dense_s=0.3, meprop_s=0.3 / s)
        for k, s in ((128, 20.0), (512, 8.0))
    ] + [fx.bench_record("r", hidden=8192, batch=1024, k=100, dense_s=0.3, meprop_s=0.01)]  # not a paper k
    cmp = paper.paper_comparison(bench_frame(recs)).set_index("k")
    assert sorted(cmp.index) == [128, 512]
    assert cmp.loc[128, "paper speedup"] == 14.5 and cmp.loc[128, "paper meProp ms"] == 21.28
    assert cmp.loc[512, "our speedup"] == pytest.approx(8.0)
    assert cmp.loc[512, "ours / paper"] == pytest.approx(8.0 / 4.4)


def test_paper_tables_hold_the_papers_numbers():
    t = paper.paper_tables()
    assert t["table7"].set_index("k").loc[8, "speedup"] == 36.8
    assert t["table7"]["dense ms"].unique().tolist() == [308.0]
    assert t["table8"].set_index("k").loc[512, "speedup"] == 3.6
    mnist = t["table1"][(t["table1"]["task"] == "MNIST MLP") & (t["table1"]["optimizer"] == "Adam")].iloc[0]
    assert (mnist["k"], mnist["speedup"], mnist["meProp score"]) == (20, 21.4, 98.01)
    assert t["table2"].set_index("task").loc["POS", "backward speedup"] == 30.5
