"""The JSON-lines store: round trip, resume, merging machines, refusing corrupt or foreign files."""

import gzip
import json

import pytest

from meprop.lab.plan.cases import Case
from meprop.lab.engine.runner import case_record
from meprop.lab.engine.timer import Measurement
from meprop.lab.report.frames import envs_frame, results_frame
from meprop.lab.report.ingest import load_results
from meprop.lab.results.schema import SCHEMA, env_record
from meprop.lab.results.store import ResultsError, ResultsWriter, read_records

CASE = Case("linear", "linear_backward", 1024, 10, 64, threads=2)


def _env(machine):
    return {"machine": machine, "cpu_model": f"cpu of {machine}", "git_commit": "abc",
            "timestamp": "2026-11-21T00:00:00+00:00", "profile": "custom", "torch_version": "2"}


def _write_run(path, machine, run_id, cases, *, resume=False, speed=10.0):
    with ResultsWriter(path, resume=resume) as writer:
        writer.write(env_record(run_id, _env(machine)))
        for case in cases:
            if case.key in writer.done:
                continue
            dense = Measurement((speed * 1e-3, speed * 1.1e-3, speed * 0.9e-3))
            meprop = Measurement((1e-3, 1e-3, 1e-3))
            writer.write(case_record(run_id, case, dense=dense, meprop=meprop,
                                      peak_memory={"dense_bytes": 10, "meprop_bytes": 2,
                                                   "kind": "cpu_rss_delta"}))
    return path


def test_bench_record_fields():
    dense, meprop = Measurement((0.04, 0.04, 0.04, 0.041)), Measurement((0.01, 0.01, 0.01))
    record = case_record("r1", CASE, dense=dense, meprop=meprop)
    assert record["schema"] == SCHEMA and record["type"] == "bench"
    assert record["key"] == CASE.key and record["case"]["k_ratio"] == CASE.k_ratio
    assert record["speedup"] == pytest.approx(4.0)
    assert record["ideal"] == pytest.approx(102.4)
    assert record["efficiency"] == pytest.approx(4.0 / 102.4)
    assert record["noisy"] is False and record["status"] == "ok"
    skipped = case_record("r1", CASE.replace(device="cuda"), status="skipped",
                           reason="cuda not available")
    assert skipped["dense"] is None and skipped["speedup"] is None
    assert skipped["reason"] == "cuda not available"
    with pytest.raises(ValueError, match="status"):
        case_record("r1", CASE, status="failed")


def test_round_trip(tmp_path):
    path = _write_run(tmp_path / "r.jsonl", "m1", "run1", [CASE, CASE.replace(k=20)])
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line)["schema"] == SCHEMA for line in lines)
    assert [r["type"] for r in read_records(path)] == ["env", "bench", "bench"]
    df = results_frame(tmp_path / "r.jsonl")
    assert list(df["k"]) == [10, 20]
    assert df["speedup"].tolist() == pytest.approx([10.0, 10.0])
    assert df["dense_median_s"].tolist() == pytest.approx([0.01, 0.01])
    assert set(df["machine"]) == {"m1"} and set(df["peak_kind"]) == {"cpu_rss_delta"}
    assert df.loc[0, "hidden"] == 1024 and df.loc[0, "threads"] == 2


def test_directory_is_read_as_its_results_file(tmp_path):
    _write_run(tmp_path / "results.jsonl", "m1", "run1", [CASE])
    assert len(results_frame(tmp_path)) == 1


def test_an_archived_results_file_reads_like_the_plain_one_and_is_never_written(tmp_path):
    plain = _write_run(tmp_path / "run" / "results.jsonl", "m1", "run1", [CASE, CASE.replace(k=20)])
    archive = tmp_path / "run" / "results.jsonl.gz"
    archive.write_bytes(gzip.compress(plain.read_bytes()))
    assert read_records(archive) == read_records(plain)
    plain.unlink()  # a run folder holding only the archive is read through it
    assert read_records(tmp_path / "run") == read_records(archive)
    assert list(results_frame(tmp_path / "run")["k"]) == [10, 20]
    report_input = load_results([tmp_path])  # meprop report finds the archive below a folder too
    assert [r["key"] for r in report_input.of_type("bench")] == [CASE.key, CASE.replace(k=20).key]
    with pytest.raises(ValueError, match="archived .*read-only.*gunzip"):
        ResultsWriter(archive, resume=True)
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(archive.read_bytes()[:-20])
    with pytest.raises(ResultsError, match="cut.jsonl.gz: cannot read results file"):
        read_records(cut)
    foreign = tmp_path / "foreign.jsonl.gz"
    foreign.write_bytes(b"not gzip at all")
    with pytest.raises(ResultsError, match="foreign.jsonl.gz: cannot read results file"):
        read_records(foreign)


def test_existing_results_are_never_overwritten(tmp_path):
    path = _write_run(tmp_path / "r.jsonl", "m1", "run1", [CASE])
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="--resume"):
        ResultsWriter(path)
    assert path.read_bytes() == before


def test_resume_skips_finished_keys_and_appends_a_new_run(tmp_path):
    path = _write_run(tmp_path / "r.jsonl", "m1", "run1", [CASE])
    with ResultsWriter(path, resume=True) as writer:
        assert writer.done == {CASE.key}
    _write_run(path, "m1", "run2", [CASE, CASE.replace(k=20)], resume=True)
    df = results_frame(path)
    assert len(df) == 2 and df["key"].is_unique
    assert list(df["run_id"]) == ["run1", "run2"]
    assert len(envs_frame(path)) == 2


def test_resume_drops_a_line_cut_short(tmp_path):
    path = _write_run(tmp_path / "r.jsonl", "m1", "run1", [CASE])
    with open(path, "a") as fh:
        fh.write('{"schema": "meprop.results/1", "type": "bench", "run_')  # killed mid-write
    with pytest.warns(UserWarning, match="incomplete last line"):
        assert len(results_frame(path)) == 1
    with pytest.warns(UserWarning):
        _write_run(path, "m1", "run2", [CASE.replace(k=20)], resume=True)
    assert len(results_frame(path)) == 2  # no warning now: the stub was removed
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_merge_two_machines(tmp_path):
    a = _write_run(tmp_path / "a.jsonl", "laptop", "run-a", [CASE], speed=10.0)
    b = _write_run(tmp_path / "b.jsonl", "server", "run-b", [CASE], speed=20.0)
    df = results_frame([a, b])
    assert len(df) == 2
    by_machine = df.set_index("machine")
    assert by_machine.loc["laptop", "speedup"] == pytest.approx(10.0)
    assert by_machine.loc["server", "speedup"] == pytest.approx(20.0)
    assert set(df["source"]) == {str(a), str(b)}
    assert set(envs_frame([a, b])["cpu_model"]) == {"cpu of laptop", "cpu of server"}


@pytest.mark.parametrize("content, match", [
    ("this is not json\n", r"r\.jsonl:1: not a JSON object"),
    ('{"a": 1}\n', r"r\.jsonl:1: not a meprop results record"),
    ('{"schema": "other.tool/1", "type": "env", "run_id": "x", "env": {}}\n', "foreign schema"),
    ('{"schema": "meprop.results/2", "type": "env", "run_id": "x", "env": {}}\n',
     "unsupported schema version 'meprop.results/2'"),
    ('{"schema": "meprop.results/1", "type": "weird", "run_id": "x"}\n', "unknown record type"),
    ('{"schema": "meprop.results/1", "type": "bench", "run_id": "x"}\n', "lacks field"),
    ('[1, 2]\n', "not a meprop results record"),
])
def test_corrupt_or_foreign_files_are_refused(tmp_path, content, match):
    path = tmp_path / "r.jsonl"
    path.write_text(content)
    with pytest.raises(ResultsError, match=match):
        results_frame(path)


def test_corrupt_line_in_the_middle_names_its_line(tmp_path):
    path = _write_run(tmp_path / "r.jsonl", "m1", "run1", [CASE, CASE.replace(k=20)])
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:20]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ResultsError, match=r"r\.jsonl:2:"):
        results_frame(path)
    with pytest.raises(ResultsError, match=r"r\.jsonl:2:"):
        ResultsWriter(path, resume=True)  # a resume does not build on a corrupt file


def test_bench_record_without_env_is_refused(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(case_record("lonely", CASE)) + "\n")
    with pytest.raises(ResultsError, match="no env record"):
        results_frame(path)


def test_missing_file_and_no_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        results_frame(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="at least one"):
        results_frame([])


def test_unwritable_location(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="cannot create the output folder"):
        ResultsWriter(blocker / "sub" / "r.jsonl")
