"""The report keeps the latest outcome of a case measured more than once:
a case skipped in one run and measured by a ``--resume`` that retried it shows as measured."""

from meprop.lab.report.build import build_report
from meprop.lab.report.diagnose import latest_per_case
from meprop.lab.report.frames import bench_frame
from meprop.lab.report.ingest import load_results

from report_fixtures import bench_record, env_record, write_jsonl


def _env(run_id, stamp, machine="box-a"):
    record = env_record(run_id, machine)
    record["env"]["timestamp"] = stamp
    return record


def _case(run_id, **kw):
    return bench_record(run_id, hidden=1024, batch=64, k=10, **kw)


def test_retried_skip_is_replaced_by_its_measurement(tmp_path):
    path = write_jsonl(tmp_path / "results.jsonl", [
        _env("r1", "2026-11-21T05:00:00+00:00"),
        _case("r1", status="skipped", reason="out of memory: CPU"),
        bench_record("r1", hidden=2048, batch=64, k=20),
        _env("r2", "2026-11-21T06:00:00+00:00"),  # the --resume that retried the skipped case
        _case("r2", dense_s=2e-3, meprop_s=1e-3),
    ])
    report = build_report([path], tmp_path / "out")
    assert not any("skipped" in p for p in report.problems)  # the skip is no longer the outcome
    assert any("1 case(s) were measured more than once" in p and "latest outcome" in p
               for p in report.problems)
    loaded = load_results([path])
    frame, repeated = latest_per_case(bench_frame(loaded.records), loaded)
    assert repeated == 1 and len(frame) == 2
    row = frame[frame["hidden"] == 1024].iloc[0]
    assert row["status"] == "ok" and row["run_id"] == "r2" and row["speedup"] == 2.0
    headline = report.headline.set_index("mode")
    assert headline.loc["unified", "best linear-only speedup"] == 10.0  # n=2048 (10x) beats the 2x


def test_latest_skip_wins_over_an_older_measurement():
    records = [_env("r1", "2026-11-21T05:00:00+00:00"), _case("r1"),
               _env("r2", "2026-11-21T06:00:00+00:00"), _case("r2", status="skipped", reason="oom")]
    loaded = load_results_from(records)
    frame, _ = latest_per_case(bench_frame(loaded.records), loaded)
    assert list(frame["status"]) == ["skipped"]


def test_latest_is_by_run_timestamp_across_files(tmp_path):
    # a.jsonl is read first but holds the newer run: the newer run wins, not the later file
    write_jsonl(tmp_path / "a.jsonl", [_env("new", "2026-11-22T00:00:00+00:00"),
                                       _case("new", dense_s=3e-3, meprop_s=1e-3)])
    write_jsonl(tmp_path / "b.jsonl", [_env("old", "2026-11-20T00:00:00+00:00"),
                                       _case("old", dense_s=2e-3, meprop_s=1e-3)])
    loaded = load_results([tmp_path])
    frame, repeated = latest_per_case(bench_frame(loaded.records), loaded)
    assert repeated == 1 and list(frame["run_id"]) == ["new"] and frame["speedup"].iloc[0] == 3.0


def test_other_machines_and_cases_are_kept():
    records = [_env("r1", "2026-11-21T05:00:00+00:00", "box-a"), _case("r1"),
               _env("r2", "2026-11-21T06:00:00+00:00", "box-b"), _case("r2"),
               bench_record("r2", hidden=2048, batch=64, k=20)]
    loaded = load_results_from(records)
    frame, repeated = latest_per_case(bench_frame(loaded.records), loaded)
    assert repeated == 0 and len(frame) == 3


def load_results_from(records):
    from meprop.lab.report.ingest import LoadedResults

    return LoadedResults(records=[dict(r) for r in records])
