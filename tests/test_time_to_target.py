"""Time-to-target arithmetic (meprop.lab.converge.time_to_target) on hand-made convergence records."""

import pytest

from meprop.lab.converge.time_to_target import Target, outcomes, runs_of
from meprop.lab.results import schema


def rec(label, step, seconds, metric, k=None, status="ok", target=None, key="run/a", reason=None):
    return schema.convergence_record(
        "r", key=f"{key}/{label}/{step}", run_key=key, label=label, step=step, examples=step * 10,
        train_time_s=seconds, dev_metric=metric, method="dense" if k is None else "meprop", k=k,
        mode="per_example", optimizer_mode="lazy", status=status, reason=reason,
        target=(target or Target(absolute=90.0)).to_dict())


def test_ratio_splits_into_step_time_and_steps():
    records = [rec("dense", 100, 4.0, 85.0), rec("dense", 200, 8.0, 91.0),
               rec("mp", 100, 1.0, 70.0, k=20), rec("mp", 200, 2.0, 88.0, k=20), rec("mp", 300, 3.0, 92.0, k=20)]
    dense, mp = outcomes(records)
    assert (dense.status, dense.time_s, dense.steps, dense.ratio) == ("reached", 8.0, 200, 1.0)
    assert (mp.status, mp.time_s, mp.steps, mp.examples) == ("reached", 3.0, 300, 3000)
    assert mp.ratio == pytest.approx(8.0 / 3.0)
    assert mp.step_ratio == pytest.approx((8.0 / 200) / (3.0 / 300))  # 4x faster steps
    assert mp.steps_ratio == pytest.approx(200 / 300)  # but 1.5x the steps
    assert mp.ratio == pytest.approx(mp.step_ratio * mp.steps_ratio)
    assert (mp.final, mp.best, mp.total_steps) == (92.0, 92.0, 300)
    assert mp.test_at_best is None  # these records carry no test metric


def test_fraction_target_takes_dense_best_of_the_same_run():
    target = Target(fraction=0.9)
    records = [rec("dense", 10, 1.0, 50.0, target=target), rec("dense", 20, 2.0, 100.0, target=target),
               rec("mp", 10, 0.5, 89.0, k=4, target=target), rec("mp", 20, 1.0, 90.0, k=4, target=target)]
    records[1]["test_metric"], records[3]["test_metric"] = 97.0, 88.0
    dense, mp = outcomes(records)
    assert (dense.test_at_best, mp.test_at_best) == (97.0, 88.0)
    assert dense.threshold == mp.threshold == pytest.approx(90.0)
    assert (dense.steps, mp.steps) == (20, 20)
    assert mp.ratio == pytest.approx(2.0) and mp.steps_ratio == 1.0


def test_not_reached_diverged_and_no_dense():
    records = [rec("dense", 10, 1.0, 80.0), rec("mp", 10, 0.5, 60.0, k=4),
               rec("bad", 10, 0.5, None, k=8, status="diverged", reason="the training loss became nan")]
    dense, mp, bad = outcomes(records)
    assert dense.status == mp.status == "not reached" and mp.ratio is None
    assert mp.step_ratio is None and mp.steps_ratio_bound is None  # dense did not reach either
    assert mp.reason == "best 60 < target 90"
    assert bad.status == "diverged" and bad.reason.endswith("nan") and bad.final is None
    alone = outcomes([rec("mp", 10, 0.5, 95.0, k=4, target=Target(fraction=0.9))])
    assert alone[0].status == "not reached" and "no dense best" in alone[0].reason


def test_runs_are_grouped_and_a_rewritten_evaluation_counts_once():
    records = [rec("dense", 10, 1.0, 80.0), rec("dense", 10, 1.1, 80.0), rec("dense", 10, 1.0, 80.0, key="run/b")]
    runs = runs_of(records + [{"type": "env"}])
    assert set(runs) == {"run/a", "run/b"} and len(runs["run/a"]) == 1


@pytest.mark.parametrize("kwargs", [{}, {"absolute": 1.0, "fraction": 0.5}, {"fraction": 1.5},
                                    {"fraction": 0.0}, {"absolute": float("nan")}])
def test_bad_targets_are_refused(kwargs):
    with pytest.raises(ValueError):
        Target(**kwargs)


def test_bad_status_is_refused_and_records_validate():
    with pytest.raises(ValueError, match="status must be one of"):
        rec("dense", 1, 1.0, 1.0, status="weird")
    good = rec("dense", 1, 1.0, 1.0)
    assert schema.schema_problem(good) is None and schema.record_problem(good) is None
    assert "step" in schema.record_problem({**good, "step": -1})
    assert "dev_metric" in schema.record_problem({**good, "dev_metric": "high"})


def test_not_reached_still_gets_its_step_factor_and_a_steps_bound():
    records = [rec("dense", 100, 4.0, 95.0), rec("dense", 200, 8.0, 96.0),
               rec("mp", 100, 1.0, 50.0, k=4), rec("mp", 200, 2.0, 60.0, k=4)]
    _, mp = outcomes(records)
    assert mp.ratio is None and mp.steps_ratio is None
    assert mp.step_ratio == pytest.approx((8.0 / 200) / (2.0 / 200))
    assert mp.steps_ratio_bound == pytest.approx(100 / 200)
