"""The "Training step across torch optimizers" table: every arm shown, the three ratios right.

Fake records with chosen medians (no timing): dense / meProp per arm, the fastest dense of
the same optimizer and of any optimizer in the group, failures kept as rows.
"""

from __future__ import annotations

import pytest

from meprop.lab.report.frames import bench_frame
from meprop.lab.report.sections.optimizers import optimizer_step_table, section
from meprop.lab.plan.cases import Case
from meprop.lab.plan.profiles import profile_cases
from tests.report import report_fixtures as fx


def _step(optimizer: str, dense_ms: float, meprop_ms: float, adam: str = "default", **kw) -> dict:
    return fx.bench_record("r", hidden=500, batch=10, k=20, workload="mlp", layers=2, in_features=784,
                           measurement="train_step", mode="per_example", threads=1, optimizer=optimizer,
                           adam=adam, dense_s=dense_ms / 1e3,
                           meprop_s=None if meprop_ms is None else meprop_ms / 1e3, **kw)


def _records():
    return [fx.env_record("r"),
            _step("torch:adam:default", 2.0, 2.5),      # slower than dense with the same optimizer
            _step("torch:adam:fused", 1.0, 0.8),
            _step("torch:sgd:default", 0.5, 0.4),
            _step("lazy", 2.0, 1.0),
            _step("torch:rmsprop:foreach", 1.5, None, status="error", reason="boom")]


def _row(table, optimizer, impl):
    rows = table[(table["optimizer"] == optimizer) & (table["implementation"] == impl)]
    assert len(rows) == 1, (optimizer, impl, table[["optimizer", "implementation"]])
    return rows.iloc[0]


def test_each_arm_against_same_fastest_same_and_fastest_dense():
    table = optimizer_step_table(bench_frame(_records()))
    assert len(table) == 5
    adam = _row(table, "Adam", "default")
    assert adam["vs dense, same optimizer"] == pytest.approx(2.0 / 2.5)
    assert adam["vs fastest dense, same optimizer"] == pytest.approx(1.0 / 2.5)
    assert adam["fastest dense of it"] == "fused"
    assert adam["vs fastest dense"] == pytest.approx(0.5 / 2.5)
    assert adam["fastest dense"] == "SGD default"
    lazy = _row(table, "meprop.optim.Adam(lazy) vs torch Adam", "default")
    assert lazy["vs dense, same optimizer"] == pytest.approx(2.0)
    assert lazy["vs fastest dense, same optimizer"] == pytest.approx(1.0 / 1.0)  # dense fused Adam


def test_the_fastest_dense_names_the_dense_sides_optimizer():
    records = _records() + [_step("lazy", 0.1, 1.0, adam="fused")]  # its dense side: torch's fused Adam
    table = optimizer_step_table(bench_frame(records))
    assert set(table["fastest dense"]) == {"Adam fused"}


def test_a_failed_arm_is_shown_with_its_reason():
    table = optimizer_step_table(bench_frame(_records()))
    failed = _row(table, "RMSprop", "foreach")
    assert failed["status"] == "error" and failed["note"] == "boom"


def test_no_torch_optimizer_arm_no_table(tmp_path):
    frame = bench_frame([fx.env_record("r"), _step("lazy", 2.0, 1.0)])
    assert optimizer_step_table(frame).empty
    assert "No training step" in section(frame, tmp_path).html


def test_section_writes_the_table_and_counts_slower_rows(tmp_path):
    part = section(bench_frame(_records()), tmp_path)
    assert part.heading == "Training step across torch optimizers"
    assert "1 of 5 rows are slower" in part.html
    assert (tmp_path / "tables" / "train_step_optimizers.csv").is_file()


def test_the_profile_holds_every_torch_arm_at_both_widths():
    cases = profile_cases("optimizers")
    names = {c.optimizer for c in cases}
    assert {"torch:sgdm:fused", "torch:adamw:foreach", "torch:rmsprop:default", "lazy"} <= names
    assert "torch:rmsprop:fused" not in names  # torch has none
    assert {c.hidden for c in cases} == {500, 4096} and {c.mode for c in cases} == {"per_example", "unified"}
    assert len({c.key for c in cases}) == len(cases)


def test_case_refuses_bad_optimizer_values():
    base = dict(workload="mlp", measurement="train_step", hidden=32, k=4, batch=2)
    with pytest.raises(ValueError, match="optimizer"):
        Case(**base, optimizer="torch:adam:turbo")
    with pytest.raises(ValueError, match="adam must be 'default' with a torch optimizer"):
        Case(**base, optimizer="torch:adam:foreach", adam="fused")
