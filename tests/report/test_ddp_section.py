"""The report's DDP section: measured table, the two projections, and its place on the page."""

from __future__ import annotations

import report_fixtures as fx

from meprop.lab.plan.cases import Case
from meprop.lab.engine.ddp import summarize
from meprop.lab.engine.runner import case_record
from meprop.distributed import all_gather_bytes, all_reduce_bytes
from meprop.lab.report import build_report
from meprop.lab.report.sections import ddp

N, M_IN, K, CLASSES = 4096, 784, 41, 10
MEPROP_ELEMENTS = N * M_IN + N * N
PARAM_BYTES = 4 * (MEPROP_ELEMENTS + N + N + N * CLASSES + CLASSES)


def _synchronized_hook_bytes(world: int) -> float:
    """What the hook sends with k shared rows per meProp weight, by hand."""
    rest = PARAM_BYTES - 4 * MEPROP_ELEMENTS
    rows = all_reduce_bytes(4 * K * (M_IN + N), world)
    flags = all_gather_bytes(2 * N, world)
    selection, lazy = all_reduce_bytes(4 * 2 * N, world), all_reduce_bytes(2 * N, world)
    return all_reduce_bytes(rest, world) + rows + flags + selection + lazy


def _record(world: int = 2) -> dict:
    case = Case("mlp", "ddp_step", hidden=N, k=K, batch=256, mode="unified", threads=1, world_size=world)
    hook_sent = _synchronized_hook_bytes(world) - all_reduce_bytes(4 * 2 * N + 2 * N, world)
    weights = [{"n": N, "m": m, "form": "union", "rows_max": K, "rows_union": K} for m in (M_IN, N)]

    def counter(sent, payload, weights=()):
        return {"all_reduce_payload": payload, "all_gather_payload": 0, "flag_payload": 0,
                "planned_payload": payload, "sent_bytes": sent, "rows_sent": 2 * K if weights else 0,
                "forms": {"dense": 0, "union": len(weights), "gather": 0}, "weights": list(weights)}

    dense = counter(all_reduce_bytes(PARAM_BYTES, world), PARAM_BYTES)
    hook = counter(hook_sent, 0, weights)
    hook["planned_payload"] = hook["all_reduce_payload"] = 1  # consistent, not checked here
    samples = {"dense": {"times": [0.7, 0.71, 0.69], "counters": [dense] * 3},
               "meprop_allreduce": {"times": [0.25, 0.26, 0.24], "counters": [dense] * 3},
               "meprop_hook": {"times": [0.2, 0.21, 0.19], "counters": [hook] * 3}}
    result = {"samples": samples, "param_bytes": PARAM_BYTES,
              "extra_bytes": {"selection": all_reduce_bytes(4 * 2 * N, world),
                              "lazy_rows": all_reduce_bytes(2 * N, world)}}
    return case_record("run-d", case, **summarize(result, world, 1))


def test_projection_over_ranks_reproduces_the_measured_bytes_and_the_hand_count():
    record = _record(2)
    measured = record["ddp"]["sides"]["meprop_hook"]["sent_bytes_total"]
    assert ddp.projected_hook_bytes(record, 2) == measured == _synchronized_hook_bytes(2)
    for world in (4, 64):
        assert ddp.projected_hook_bytes(record, world) == _synchronized_hook_bytes(world)
    table = ddp.ranks_projection([record])
    assert table.loc[0, "2 ranks"] == all_reduce_bytes(PARAM_BYTES, 2) / measured


def test_per_example_union_grows_as_fitted_from_the_measured_union():
    record = _record(2)
    record["case"]["mode"] = "per_example"
    for weight in record["ddp"]["sides"]["meprop_hook"]["weights"]:
        weight.update(rows_max=100, rows_union=150, form="gather")  # union 1.5x at 2 ranks
    union4 = 100 * 1.5 ** 2  # 4 ranks: U * 4^log2(1.5)
    rest = PARAM_BYTES - 4 * MEPROP_ELEMENTS
    expected = all_reduce_bytes(rest, 4) + all_reduce_bytes(2 * N, 4)  # + the lazy row flags
    for m in (M_IN, N):
        expected += min(all_reduce_bytes(N * m * 4, 4), all_reduce_bytes(union4 * m * 4, 4),
                        all_gather_bytes(100 * m * 4, 4)) + all_gather_bytes(N, 4)
    assert abs(ddp.projected_hook_bytes(record, 4) - expected) < 1e-6 * expected


def test_bandwidth_projection_is_bytes_over_link_speed():
    record = _record(2)
    table = ddp.bandwidth_projection([record])
    dense_bytes = record["ddp"]["sides"]["dense"]["sent_bytes_total"]
    assert table.loc[0, "dense ms @10G"] == 1e3 * dense_bytes * 8 / 10e9
    assert abs(table.loc[0, "hook ms @100G"] * 10 - table.loc[0, "hook ms @10G"]) < 1e-12


def test_page_has_the_ddp_section_with_labelled_projections(tmp_path):
    records = [fx.env_record("run-d"), _record(2)]
    report = build_report(_as_loaded(tmp_path, records), tmp_path / "rep")
    page = report.index.read_text()
    assert 'id="ddp"' in page and "Projection (a model, not a measurement)" in page
    assert (tmp_path / "rep" / "tables" / "ddp_projection_ranks.csv").exists()
    assert "76." in (tmp_path / "rep" / "tables" / "ddp_measured.csv").read_text()


def test_no_ddp_records_gives_a_note():
    section = ddp.section([fx.env_record("run-x")], None)
    assert "No ddp_step results" in section.html and not section.files


def _as_loaded(tmp_path, records):
    return [fx.write_jsonl(tmp_path / "results.jsonl", records)]
