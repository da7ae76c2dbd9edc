"""Training-step records: the optimizers that ran, the phase split and the Amdahl limit."""

import inspect

import pytest
import torch

import meprop.optim as meprop_optim
from meprop.lab.plan.cases import Case
from meprop.lab.ops.build import build
from meprop.lab.engine.runner import TimingOptions, case_record, run_case
from meprop.lab.results import schema

FAST = TimingOptions(budget_s=0.05, warmup_s=0.0, min_samples=3, max_samples=5)


@pytest.mark.parametrize("optimizer", ["lazy", "exact"])
def test_step_record_names_optimizers_and_splits_phases(optimizer):
    case = Case("mlp", "train_step", 64, 4, 8, mode="per_example", threads=1, in_features=16,
                optimizer=optimizer)
    record = case_record("r", case, **run_case(case, FAST, measure_memory=False))
    assert record["case"]["optimizer"] == optimizer
    assert record["optimizers"] == {"dense": "torch.optim.Adam",
                                    "meprop": f"meprop.optim.Adam(lazy={optimizer == 'lazy'})"}
    for side in ("dense", "meprop"):
        assert set(record["phases"][side]) == {"forward_s", "backward_s", "optimizer_s"}
        assert all(v > 0 for v in record["phases"][side].values())
    meprop = record["phases"]["meprop"]
    assert record["amdahl_limit"] == pytest.approx(
        record["dense"]["median_s"] / (meprop["forward_s"] + meprop["optimizer_s"]))
    assert schema.record_problem(record) is None
    assert case.key.endswith("/opt-exact") == (optimizer == "exact")


def test_other_measurements_carry_no_step_fields():
    case = Case("linear", "linear_backward", 32, 4, 4, threads=1)
    record = case_record("r", case, **run_case(case, FAST, measure_memory=False))
    assert "optimizers" not in record and "phases" not in record and record["case"]["optimizer"] == "lazy"


def test_bad_optimizer_mode_is_refused():
    with pytest.raises(ValueError, match=r"optimizer must be one of \('lazy', 'exact', 'torch:sgd:default',"):
        Case("mlp", "train_step", 64, 4, 8, optimizer="fast")


@pytest.mark.parametrize("optimizer", ["lazy", "exact"])
def test_fused_adam_runs_on_both_sides_and_is_recorded(optimizer):
    case = Case("mlp", "train_step", 64, 4, 8, mode="per_example", threads=1, in_features=16,
                optimizer=optimizer, adam="fused")
    dense, meprop = (build(case, side) for side in ("dense", "meprop"))
    for op in (dense, meprop):
        op()
    opts = [inspect.getclosurevars(op).nonlocals["optimizer"] for op in (dense, meprop)]
    assert type(opts[0]) is torch.optim.Adam and isinstance(opts[1], meprop_optim.Adam)
    assert all(group["fused"] for opt in opts for group in opt.param_groups)
    assert opts[1].param_groups[0]["lazy"] == (optimizer == "lazy")
    record = case_record("r", case, **run_case(case, FAST, measure_memory=False))
    assert record["case"]["adam"] == "fused" and case.key.endswith("/adam-fused")
    assert record["optimizers"] == {
        "dense": "torch.optim.Adam(fused=True)",
        "meprop": f"meprop.optim.Adam(lazy={optimizer == 'lazy'}, fused=True)"}
    assert schema.record_problem(record) is None
    # the default keeps the older keys and names
    assert not Case("mlp", "train_step", 64, 4, 8).key.endswith("fused")


def test_bad_adam_impl_is_refused():
    with pytest.raises(ValueError, match=r"adam must be one of \('default', 'fused'\), got 'foreach'"):
        Case("mlp", "train_step", 64, 4, 8, adam="foreach")


def test_phase_probe_gives_each_side_its_lead_in_steps():
    from meprop.lab.ops.train_step import probe_phases

    log = []

    def side(name):
        def fn():
            log.append(name)
        fn.phases = lambda: log.append(name.upper()) or {"forward_s": 1.0, "backward_s": 2.0, "optimizer_s": 3.0}
        return fn

    split = probe_phases(side("d"), side("m"), repeats=2, rewarm=(1, 0))
    assert log == ["d", "D", "M", "d", "D", "M"]  # an untimed dense step before each probed one
    assert split["dense"] == split["meprop"] == {"forward_s": 1.0, "backward_s": 2.0, "optimizer_s": 3.0}
    assert probe_phases(lambda: None, side("m")) is None  # not a training step: no split
