"""A ``worst`` target ("never slower than dense over a whole grid") judged on hand-made rows:
the slowest matching cell decides, a flagged slowest cell meets nothing, a partly measured
grid says so, and an unmeasured one reads "not measured"."""

from __future__ import annotations

from pathlib import Path

import pytest
import report_fixtures as fx

from meprop.lab.plan.target_file import load_targets
from meprop.lab.report.frames import bench_frame
from meprop.lab.report.sections.targets import match_targets

_GRID = """
[[target]]
label = "never slower"
kind = "{kind}"
minimum = 0.95
mode = "per_example"
threads = 2
[target.grid]
hidden = [64, 128]
batch = [8]
k_ratio = [0.25, 1.0]
"""


@pytest.fixture(params=["worst", "forward"])  # "forward": the older name, judged the same
def target(tmp_path: Path, request):
    path = tmp_path / "targets.toml"
    path.write_text(_GRID.format(kind=request.param))
    (loaded,) = load_targets(path)
    return loaded


def _cell(hidden: int, k: int, speedup: float, **fields) -> dict:
    return fx.bench_record("r", hidden=hidden, batch=8, k=k, mode="per_example",
                           dense_s=1e-3 * speedup, meprop_s=1e-3, **fields)


def _judge(target, cells) -> dict:
    (row,) = match_targets(bench_frame([fx.env_record("r"), *cells]), (target,)).to_dict("records")
    return row


def _grid(worst_speedup: float, **worst_fields) -> list[dict]:
    """The grid's four cells: a win, dense's time at k = n (where the ideal is 1), and n=128
    k=32 at ``worst_speedup``."""
    return [_cell(64, 16, 3.0), _cell(64, 64, 1.0),
            _cell(128, 32, worst_speedup, **worst_fields), _cell(128, 128, 1.0)]


def test_the_slowest_cell_decides_and_is_named(target):
    row = _judge(target, _grid(0.97))
    assert row["met"] == "yes" and row["achieved"] == pytest.approx(0.97) and row["kind"] == "worst"
    assert row["at"] == "worst of 4 measured: linear n=128, batch 8, k=32, 2 threads, per_example"
    row = _judge(target, _grid(0.90))
    assert row["met"] == "NO" and row["achieved"] == pytest.approx(0.90)


def test_an_interval_around_one_is_fine_for_a_minimum_below_one(target):
    row = _judge(target, _grid(0.99))
    assert row["low"] < 1 < row["high"]  # "interval contains 1": consistent with "not slower"
    assert row["met"] == "yes" and row["flag"] == ""


def test_a_flagged_slowest_cell_meets_nothing(target):
    row = _judge(target, _grid(0.97, iqr_frac=0.3))
    assert row["met"] == "NO (flagged)" and row["flag"] == "noisy"
    # above the ideal n/k = 1 at k = n: the dense baseline is broken, whatever the median says
    cells = [_cell(64, 16, 3.0), _cell(64, 64, 1.5), _cell(128, 32, 3.0), _cell(128, 128, 1.02)]
    assert bench_frame(cells)["above_ideal"].tolist() == [False, True, False, True]
    row = _judge(target, cells)
    assert row["achieved"] == pytest.approx(1.02) and "k=128" in row["at"]
    assert row["met"] == "NO (flagged)" and row["flag"] == "above ideal"


def test_a_partly_measured_grid_says_how_much_was_measured(target):
    row = _judge(target, _grid(0.97)[:2])
    assert row["met"] == "yes"
    assert row["at"].startswith("worst of 2 measured (4 in the grid): linear n=64")
    # a matching row outside the grid (batch 16) is judged too; the grid's share is named
    extra = fx.bench_record("r", hidden=64, batch=16, k=16, mode="per_example", dense_s=2e-3, meprop_s=1e-3)
    row = _judge(target, [*_grid(0.97)[:2], extra])
    assert row["at"].startswith("worst of 3 measured (2 of the 4 in the grid): ")


def test_a_grid_with_no_measured_row_reads_not_measured(target):
    assert _judge(target, [])["met"] == "not measured"
    skipped = [_cell(64, 16, 3.0, status="skipped", reason="out of memory")]
    assert _judge(target, skipped)["met"] == "not measured"
    other_mode = [fx.bench_record("r", hidden=64, batch=8, k=16, dense_s=3e-3, meprop_s=1e-3)]  # unified
    row = _judge(target, other_mode)
    assert row["met"] == "not measured" and row["at"] == ""
