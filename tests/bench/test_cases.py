"""Case validation, keys, custom grids and the named profiles (including the perf profile's target rows)."""

import math
import pytest
from pathlib import Path

import meprop.lab.plan
from meprop.lab.plan.cases import WORKLOADS, MEASUREMENTS, Case, grid
from meprop.lab.plan.profiles import PROFILES, profile_cases
from meprop.lab.plan.target_file import load_targets
from meprop.lab.plan.targets import Target

ROOT = Path(__file__).resolve().parents[2]
#: the project's own targets file
TARGETS = load_targets(ROOT / "benchmarks" / "targets.toml")


def test_case_defaults_and_derived_fields():
    c = Case("linear", "linear_backward", hidden=4096, k=41, batch=64)
    assert c.in_features == 4096 and c.layers == 1
    assert c.k_ratio == pytest.approx(0.01, rel=0.01)
    assert c.ideal == pytest.approx(4096 / 41)
    m = Case("mlp", "overall_backward", hidden=500, k=20, batch=10, layers=3)
    assert m.in_features == 784 and m.layers == 3
    assert Case.from_dict(m.to_dict()) == m


def test_keys_are_stable_and_distinct():
    a = Case("linear", "forward", 1024, 10, 64)
    assert a.key == Case("linear", "forward", 1024, 10, 64).key
    assert a.key == "linear/forward/m1024-n1024x1-c10/k10/b64/unified/cpu/float32/tauto"
    variants = [a.replace(**change) for change in (
        dict(k=11), dict(batch=65), dict(mode="per_example"), dict(device="cuda"),
        dict(dtype="float64"), dict(threads=2), dict(measurement="train_step"),
        dict(in_features=512),
    )]
    assert len({v.key for v in variants} | {a.key}) == len(variants) + 1
    assert a.resolved(3).threads == 3 and a.resolved(3).key.endswith("/t3")
    assert a.replace(threads=2).resolved(3).threads == 2


@pytest.mark.parametrize("change, error, match", [
    (dict(workload="cnn"), ValueError, "workload"),
    (dict(measurement="backward"), ValueError, "measurement"),
    (dict(hidden=0), ValueError, "hidden"),
    (dict(hidden=-5), ValueError, "hidden"),
    (dict(k=0), ValueError, "k must be a positive int"),
    (dict(k=2000), ValueError, "at most hidden=1024"),
    (dict(batch=0), ValueError, "batch"),
    (dict(batch=1.5), TypeError, "batch"),
    (dict(device="gpu"), ValueError, "device"),
    (dict(dtype="int8"), ValueError, "dtype"),
    (dict(mode="topk"), ValueError, "mode"),
    (dict(threads=0), ValueError, "threads"),
])
def test_case_bad_input(change, error, match):
    args = dict(workload="linear", measurement="forward", hidden=1024, k=10, batch=64)
    args.update(change)
    with pytest.raises(error, match=match):
        Case(**args)


def test_grid_resolves_ratios_and_dedupes():
    cases = grid(hidden=[100, 1000], k_ratio=[0.01, 0.011], batch=[1], mode=["unified"])
    # 0.01 and 0.011 resolve to the same k=1 at n=100, different at n=1000
    assert [(c.hidden, c.k) for c in cases] == [(100, 1), (1000, 10), (1000, 11)]
    assert [c.k for c in grid(hidden=[64], k=[3, 64])] == [3, 64]
    assert [c.k for c in grid(hidden=[100])] == [10]  # default ratio 0.1
    with pytest.raises(ValueError, match="k_ratio must be in"):
        grid(k_ratio=[1.5])
    with pytest.raises(ValueError, match="k_ratio must be in"):
        grid(k_ratio=[0.0])
    with pytest.raises(ValueError, match="at most out_features"):
        grid(hidden=[64], k=[65])


def test_profile_names_and_unknown_profile():
    assert list(PROFILES) == ["smoke", "quick", "standard", "paper", "full", "optimizers", "perf"]
    with pytest.raises(ValueError, match="profile must be one of"):
        profile_cases("fast")


def test_every_profile_has_unique_valid_cases():
    for name in PROFILES:
        cases = profile_cases(name)
        assert cases, name
        assert len({c.key for c in cases}) == len(cases), name


def test_smoke_is_tiny_and_covers_every_measurement():
    cases = profile_cases("smoke")
    assert len(cases) <= 16
    assert all(c.hidden <= 64 and c.batch <= 8 for c in cases)
    assert {c.measurement for c in cases} == set(MEASUREMENTS)
    assert {c.workload for c in cases} == set(WORKLOADS) - {"model"}  # model: a user's factory


def test_standard_grid_is_the_documented_grid():
    cases = profile_cases("standard")
    lin = [c for c in cases if c.workload == "linear" and c.measurement == "linear_backward"]
    assert {c.hidden for c in lin} == {500, 1024, 4096}
    assert {c.batch for c in lin} == {1, 64, 1024}
    assert {round(c.k_ratio, 2) for c in lin} == {0.01, 0.04, 0.1, 0.5}
    assert {c.mode for c in lin} == {"unified", "per_example"}
    assert len(lin) == 3 * 3 * 4 * 2
    assert all(c.device == "cpu" for c in cases)
    assert {c.measurement for c in cases} == set(MEASUREMENTS)


def test_quick_is_a_first_run_with_a_cell_for_every_section():
    from meprop.lab.workloads import REGISTRY

    cases = profile_cases("quick")
    assert len(cases) <= 45 and all(c.device == "cpu" for c in cases)
    assert all(c.hidden * c.batch <= 4096 * 64 for c in cases)  # no second-long dense calls
    assert {c.measurement for c in cases} == set(MEASUREMENTS)
    assert {c.workload for c in cases} == set(WORKLOADS) - {"model"}
    # the headline's card of every workload: its training step at its typical shape, both modes
    for name in set(WORKLOADS) - {"model"}:
        shape = REGISTRY[name].typical_shape
        typical = [c for c in cases if c.workload == name and c.measurement == "train_step"
                   and c.hidden == shape["hidden"] and c.batch == shape["batch"]
                   and abs(math.log(c.k_ratio / shape["k_ratio"])) < 0.05]
        assert typical, name
    modes = {c.mode for c in cases if c.measurement == "train_step" and c.workload != "lstm"}
    assert modes == {"unified", "per_example"}
    steps = [c for c in cases if c.measurement == "train_step"]
    assert {c.adam for c in steps} == {"default", "fused"} and {c.optimizer for c in steps} == {"lazy", "exact"}
    # the break-even and the figures: three k ratios at two widths, both modes
    lin = [c for c in cases if c.workload == "linear" and c.measurement == "linear_backward" and c.batch == 64]
    assert {(c.hidden, c.mode) for c in lin} == {(h, m) for h in (1024, 4096) for m in ("unified", "per_example")}
    assert {round(c.k_ratio, 2) for c in lin} == {0.01, 0.1, 0.5}
    # the paper's Table 1 cell, one DDP step, and rows the project's targets judge
    assert any(c.hidden == 500 and c.batch == 10 and c.k == 20 and c.measurement == "linear_backward"
               for c in cases)
    assert [c.world_size for c in cases if c.measurement == "ddp_step"] == [2]
    assert len({c.key for c in cases} & {c.key for c in profile_cases("perf", TARGETS)}) >= 8


def test_paper_profile_has_the_papers_shapes():
    cases = profile_cases("paper")
    table7 = {c.k for c in cases if c.workload == "linear" and c.hidden == 8192 and c.batch == 1024}
    assert table7 == {8, 16, 32, 64, 128, 256, 512}
    table8 = {c.k for c in cases if c.workload == "mlp" and c.hidden == 8192
              and c.measurement == "overall_backward"}
    assert table8 == table7
    h500 = {(c.k, c.batch) for c in cases if c.hidden == 500}
    assert {(k, b) for k in (5, 10, 20, 80) for b in (1, 10, 50)} <= h500


def test_full_profile_spans_devices_and_ratios():
    cases = profile_cases("full")
    assert {c.device for c in cases} == {"cpu", "cuda"}
    assert max(c.hidden for c in cases) == 8192
    assert min(c.k_ratio for c in cases) < 0.01 and max(c.k_ratio for c in cases) == 1.0


def test_perf_covers_every_target_row():
    keys = {c.key for c in profile_cases("perf", TARGETS)}
    assert all(c.dtype == "float32" for c in profile_cases("perf", TARGETS))
    # the kernel-level rows run on 2 threads; the training-step rows on the thread count they name
    assert all(c.threads == (t.threads or 2) for t in TARGETS for c in t.cases())
    assert all(c.threads == 2 for t in TARGETS
               if t.measurement != "train_step" and t.threads is None for c in t.cases())
    for target in TARGETS:
        assert {c.key for c in target.cases()} <= keys, target.label
    rows = {(c.workload, c.measurement, c.hidden, c.batch, c.k, c.mode)
            for t in TARGETS for c in t.cases()}
    expected = {
        ("linear", "linear_backward", 8192, 1024, 128, "unified"),
        ("linear", "linear_backward", 8192, 1024, 512, "unified"),
        ("linear", "linear_backward", 4096, 1024, 41, "unified"),
        ("linear", "linear_backward", 4096, 64, 410, "unified"),
        ("linear", "linear_backward", 4096, 1, 41, "per_example"),
        ("linear", "linear_backward", 4096, 64, 41, "per_example"),
        ("mlp", "overall_backward", 4096, 1024, 41, "unified"),
        ("mlp", "overall_backward", 4096, 1024, 41, "per_example"),
        ("mlp", "overall_backward", 500, 1024, 20, "unified"),
    }
    assert expected <= rows
    speedups = {t.label: t.minimum for t in TARGETS if t.kind == "speedup"}
    assert speedups["unified, n=8192, batch 1024, k=128 (1.6%)"] == 30.0
    break_even = [t for t in TARGETS if t.kind == "break_even"][0]
    assert break_even.minimum == 0.10
    assert all(c.hidden >= 1024 and c.batch >= 64 and c.mode == "per_example"
               for c in break_even.cases())
    assert any(t.kind == "worst" and t.measurement == "forward" for t in TARGETS)


def test_perf_profile_is_the_targets_cases_in_table_order():
    # one definition: the profile is built from the targets, nothing added or dropped
    from_targets = [c.key for t in TARGETS for c in t.cases()]
    perf = [c.key for c in profile_cases("perf", TARGETS)]
    assert perf == list(dict.fromkeys(from_targets))
    # the break-even grid: n {1024, 4096} x batch {64, 1024} x k/n {5,10,15,20,30}%,
    # with k/n never below the nominal ratio
    break_even = [t for t in TARGETS if t.kind == "break_even"][0].cases()
    assert sorted((c.hidden, c.batch, c.k) for c in break_even) == sorted(
        (n, b, math.ceil(r * n)) for n in (1024, 4096) for b in (64, 1024)
        for r in (0.05, 0.10, 0.15, 0.20, 0.30))
    assert all(c.k_ratio >= r for c, r in zip(break_even, [0.05, 0.10, 0.15, 0.20, 0.30] * 4))
    forward = [t for t in TARGETS if t.kind == "worst" and t.measurement == "forward"][0].cases()
    assert {(c.workload, c.mode, c.hidden, c.batch, c.k) for c in forward} == {
        ("mlp", "unified", 4096, 1024, 41), ("mlp", "per_example", 4096, 1024, 41),
        ("linear", "unified", 4096, 1024, 41)}
    assert all(c.measurement == "forward" for c in forward)
    # the review row is not a timing: no cases
    assert [t.cases() for t in TARGETS if t.kind == "review"] == [(), ()]
    # the kernel-level targets' 32 cases, the four training-step rows (each with the torch.optim.Adam
    # defaults of its target and with fused Adam, the strongest dense baseline), the compiled kernels' six,
    # then the two never-slower-than-dense grids less the cells other targets already run
    # (MLP: 24 less n=4096 batch 1024 k=1%; linear: 16 less n=4096 batch 64 k=1% and 25%,
    # batch 1024 k=1%, and n=4096 k=10% at both batches, the break-even grid's
    # ceil(0.1 n) = round(0.1 n) = 410)
    assert len(perf) == 32 + 4 * 2 + 6 + 23 + 11
    steps = profile_cases("perf", TARGETS)[32:40]
    assert [c.measurement for c in steps] == ["train_step"] * 8
    assert [c.adam for c in steps] == ["default", "fused"] * 4
    assert all(c.optimizer == "lazy" for c in steps)


def test_single_case_targets_derive_their_case_from_their_fields():
    t = Target("x", 5.0, workload="mlp", measurement="overall_backward", mode="per_example",
               hidden=4096, batch=1024, k_ratio=0.01, in_features=784, layers=2)
    assert t.names_one_case
    (case,) = t.cases()
    assert case == Case("mlp", "overall_backward", 4096, 41, 1024, mode="per_example", threads=2,
                        dtype="float32", in_features=784, layers=2)
    # a range (min_hidden) or a missing k names no single case: nothing derived
    assert Target("y", 0.1, kind="break_even", mode="per_example", min_hidden=1024).cases() == ()
    assert Target("z", 2.0, mode="unified", hidden=1024, batch=64).cases() == ()


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(label="a", minimum=1.0, kind="faster"), ValueError, "kind must be one of"),
    (dict(label="a", minimum=1.0, measurement="backward"), ValueError, "measurement"),
    (dict(label="a", minimum=1.0, workload="cnn"), ValueError, "workload"),
    (dict(label="a", minimum=None), ValueError, "minimum must be None exactly for kind='review'"),
    (dict(label="a", minimum=1.0, kind="review"), ValueError, "minimum must be None"),
    (dict(label="a", minimum=1.0, k=10, k_ratio=0.1), ValueError, "at most one of k and k_ratio"),
    (dict(label="a", minimum=1.0, perf_cases=["case"]), TypeError, "perf_cases must be a tuple of Case"),
])
def test_target_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        Target(**kwargs)


def test_spec_package_exports_the_targets_api():
    assert meprop.lab.plan.Target is Target and meprop.lab.plan.load_targets is load_targets


def test_perf_covers_the_compiled_kernel_rows():
    rows = {(c.workload, c.measurement, c.hidden, c.in_features, c.batch, c.k, c.threads)
            for c in profile_cases("perf", TARGETS) if c.mode == "per_example"}
    assert {
        ("linear", "linear_backward", 500, 784, 10, 20, 1),
        ("linear", "linear_backward", 500, 784, 1, 20, 1),
        ("linear", "linear_backward", 4096, 4096, 1024, 41, 2),
        ("linear", "linear_backward", 4096, 4096, 64, 1024, 2),
        ("lstm", "linear_backward", 500, 100, 1, 5, 1),
        ("lstm", "train_step", 500, 100, 1, 5, 1),
    } <= rows


def test_lstm_case_counts_k_among_the_gate_entries():
    case = Case("lstm", "linear_backward", 500, 5, 1, mode="per_example")
    assert case.in_features == 100 and case.ideal == 400 and case.k_ratio == 5 / 2000
    Case("lstm", "linear_backward", 500, 2000, 1)  # k = 4h: dense
    with pytest.raises(ValueError, match="4 \\* hidden=2000"):
        Case("lstm", "linear_backward", 500, 2001, 1)
