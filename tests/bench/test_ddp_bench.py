"""The ``ddp_step`` measurement: its record, its byte checks, its faults and its CLI options.

One tiny real run (2 gloo processes) feeds the record tests; the fault tests start their
own; :func:`meprop.lab.engine.ddp.summarize` is also tested on a hand-made result.
"""

from __future__ import annotations

import pytest
import torch.distributed as dist

from meprop.lab.plan.cases import Case, grid
from meprop.lab.engine.ddp import run_ddp_case, summarize
from meprop.lab.engine.runner import TimingOptions, case_record
from meprop.lab.cli import main
from meprop.distributed import all_reduce_bytes
from meprop.lab.results import schema

gloo = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo")
TINY = dict(hidden=32, k=4, batch=4, in_features=16, threads=1, world_size=2)
FAST = TimingOptions(budget_s=0.05, min_samples=3, max_samples=5)


@pytest.fixture(scope="module")
def record():
    case = Case("mlp", "ddp_step", mode="unified", **TINY)
    return case_record("run", case, **run_ddp_case(case, FAST))


@gloo
@pytest.mark.slow
def test_record_has_three_sides_with_checked_bytes(record):
    assert schema.record_problem(record) is None and record["status"] == "ok"
    ddp = record["ddp"]
    assert set(ddp["sides"]) == {"dense", "meprop_allreduce", "meprop_hook"}
    dense_bytes = all_reduce_bytes(ddp["param_bytes"], 2)
    assert ddp["param_bytes"] == 4 * (16 * 32 + 32 + 32 * 32 + 32 + 32 * 10 + 10)
    for name, side in ddp["sides"].items():
        assert side["payload_ok"], name
        assert side["timing"]["n_samples"] >= 3
    assert ddp["sides"]["dense"]["sent_bytes"] == dense_bytes
    assert ddp["sides"]["meprop_allreduce"]["sent_bytes"] == dense_bytes
    hook = ddp["sides"]["meprop_hook"]
    assert hook["forms"] == {"dense": 0, "union": 2, "gather": 0}  # synchronized: the same k rows
    assert hook["rows_sent"] == 2 * 4
    assert hook["sent_bytes_total"] == hook["sent_bytes"] + sum(ddp["extra_bytes"].values())
    assert ddp["bytes_ratio"]["meprop_hook"] > 1
    assert record["dense"]["median_s"] == ddp["sides"]["dense"]["timing"]["median_s"]
    assert record["meprop"]["median_s"] == hook["timing"]["median_s"]


@gloo
@pytest.mark.slow
def test_a_rank_that_dies_is_a_recorded_failure_not_a_hang():
    case = Case("mlp", "ddp_step", mode="per_example", **TINY)
    fields = run_ddp_case(case, FAST, fault="exit", collective_timeout_s=20)
    assert fields["status"] == "skipped" and fields["reason"].startswith("ddp_step failed")
    assert "exit" in fields["reason"].lower()


@gloo
@pytest.mark.slow
def test_the_case_time_limit_stops_the_ranks():
    case = Case("mlp", "ddp_step", mode="per_example", **TINY)
    fields = run_ddp_case(case, FAST, limit_s=0.5)
    assert fields == {"status": "skipped",
                      "reason": "ddp_step failed: exceeded the case's time limit of 0.5 s"}


def _fake_result(world: int) -> dict:
    counter = {"all_reduce_payload": 400, "all_gather_payload": 0, "flag_payload": 0,
               "planned_payload": 400, "sent_bytes": all_reduce_bytes(400, world), "rows_sent": 0,
               "forms": {"dense": 0, "union": 0, "gather": 0}, "weights": [], "collectives": 1}
    side = {"times": [0.01, 0.02, 0.03], "counters": [counter] * 3}
    return {"samples": {name: side for name in ("dense", "meprop_allreduce", "meprop_hook")},
            "param_bytes": 400, "extra_bytes": {"selection": 0.0, "lazy_rows": 8.0}}


def test_more_ranks_than_cores_is_allowed_with_a_note(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert summarize(_fake_result(2), 2, 1)["ddp"]["note"] is None
    note = summarize(_fake_result(4), 4, 1)["ddp"]["note"]
    assert "4 ranks x 1 thread(s) on 2 CPU core(s)" in note


def test_paired_ratio_of_rounds():
    from meprop.lab.results.stats import median_interval, paired_ratios

    out = paired_ratios([2.0, 3.0, 4.0, 6.0], [1.0, 1.5, 2.0, 3.0])
    assert out["median"] == 2.0 and out["iqr"] == 0.0 and out["ci95"] == [2.0, 2.0] and out["n"] == 4
    assert paired_ratios([], []) is None and paired_ratios([1.0], [1.0, 2.0]) is None
    spread = paired_ratios([2.0, 3.0, 5.0, 9.0], [1.0, 1.0, 1.0, 1.0])  # the one interval of the results layer
    assert spread["median"] == 4.0 and spread["ci95"] == list(median_interval([2.0, 3.0, 5.0, 9.0]))
    assert summarize(_fake_result(2), 2, 1)["ddp"]["hook_vs_allreduce_paired"]["median"] == 1.0


def test_a_miscounted_payload_is_flagged():
    result = _fake_result(2)
    bad = dict(result["samples"]["meprop_hook"]["counters"][0], all_reduce_payload=396)
    result["samples"]["meprop_hook"] = {"times": [0.01], "counters": [bad]}
    sides = summarize(result, 2, 1)["ddp"]["sides"]
    assert not sides["meprop_hook"]["payload_ok"] and sides["dense"]["payload_ok"]


def test_case_and_grid_tie_ddp_step_to_world_size():
    with pytest.raises(ValueError, match="world_size"):
        Case("mlp", "ddp_step", hidden=32, k=4, batch=4)
    with pytest.raises(ValueError, match="world_size"):
        Case("mlp", "train_step", hidden=32, k=4, batch=4, world_size=2)
    cases = grid(workload=("mlp",), measurement=("ddp_step", "train_step"), hidden=(32,), k=(4,),
                 batch=(4,), world_size=(2, 4))
    assert [(c.measurement, c.world_size) for c in cases] == [
        ("ddp_step", 2), ("ddp_step", 4), ("train_step", 1)]
    assert cases[1].key.endswith("/w4") and "/w" not in cases[2].key


def test_cli_world_size(capsys):
    args = ["bench", "--measurement", "ddp_step", "--workload", "mlp", "--hidden", "32", "--k", "4",
            "--batch", "4", "--list"]
    assert main(args + ["--world-size", "2,4"]) == 0
    listed = capsys.readouterr().out.split()
    assert [key[-3:] for key in listed] == ["/w2", "/w4"]
    assert main(args + ["--world-size", "1"]) == 2
    assert "--world-size must be integers >= 2" in capsys.readouterr().err
