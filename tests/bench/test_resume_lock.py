"""Reliability of the results file: the end-of-file policy shared by ``--resume`` and
``meprop report``, the writer's lock, retrying skipped cases, and the bounds of the timing options."""

import json
import subprocess
import sys
import warnings

import pytest
import torch

from meprop.lab.plan.cases import Case
from meprop.lab.engine.runner import case_record
from meprop.lab.results.schema import env_record
from meprop.lab.results.store import ResultsLockedError, ResultsWriter, read_records
from meprop.lab.engine.timer import Measurement
from meprop.lab.cli import main
from meprop.lab.report.ingest import load_results as report_load

CASE = Case("linear", "linear_backward", 64, 8, 4, threads=1)
FAST = ["--no-progress", "--no-memory", "--budget", "0.01", "--min-samples", "2", "--threads", "1"]


def _env(stamp="2026-11-21T00:00:00+00:00"):
    return {"machine": "m1", "timestamp": stamp, "profile": "custom"}


def _ok(run_id, case):
    m = Measurement((1e-3, 1e-3, 1e-3))
    return case_record(run_id, case, dense=m, meprop=m)


def _write(path, run_id, records, *, resume=False):
    with ResultsWriter(path, resume=resume) as writer:
        writer.write(env_record(run_id, _env()))
        for record in records:
            writer.write(record)
    return path


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------- item 2: the end of a file
def test_complete_last_line_without_newline_is_kept_and_not_glued_onto(tmp_path):
    path = _write(tmp_path / "results.jsonl", "run1", [_ok("run1", CASE)])
    path.write_bytes(path.read_bytes().rstrip(b"\n"))  # complete, but unterminated
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither reader warns about a complete record
        assert len(read_records(path)) == 2
        with ResultsWriter(path, resume=True) as writer:
            assert writer.done == {CASE.key}
            writer.write(env_record("run2", _env()))
            writer.write(_ok("run2", CASE.replace(k=4)))
    records = _lines(path)  # every line is one JSON object: nothing was glued on
    assert [r["type"] for r in records] == ["env", "bench", "env", "bench"]
    assert path.read_bytes().endswith(b"\n")
    assert len(report_load([path]).of_type("bench")) == 2


def test_complete_last_line_without_newline_then_cli_resume(tmp_path, capsys):
    argv = ["bench", "--hidden", "32", "--k", "4", "--batch", "4", "--out", str(tmp_path), *FAST]
    assert main(argv) == 0
    path = tmp_path / "results.jsonl"
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    more = ["bench", "--hidden", "32", "--k", "4", "--batch", "4,8", "--out", str(tmp_path),
            "--resume", *FAST]
    assert main(more) == 0
    assert "1 measured, 0 skipped, 1 already done" in capsys.readouterr().out
    assert [r["type"] for r in _lines(path)] == ["env", "bench", "env", "bench"]
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "report")]) == 0


def test_incomplete_tail_is_dropped_by_both_readers_with_file_and_line(tmp_path):
    path = _write(tmp_path / "results.jsonl", "run1", [_ok("run1", CASE)])
    good = path.read_bytes()
    path.write_bytes(good + b'{"schema":"meprop.results/1","type":"bench","ru')  # cut short
    where = f"{path}:3"
    loaded = report_load([path])  # the report keeps the two records and notes the tail
    assert len(loaded.records) == 2
    assert any(p.startswith(where) and "incomplete last line" in p for p in loaded.problems)
    with pytest.warns(UserWarning, match=f"{path}:3: ignoring an incomplete last line"):
        with ResultsWriter(path, resume=True) as writer:
            assert writer.done == {CASE.key}
    assert path.read_bytes() == good  # the resume dropped the tail and nothing else


def test_report_cli_and_resume_agree_on_an_incomplete_tail(tmp_path, capsys):
    path = _write(tmp_path / "results.jsonl", "run1", [_ok("run1", CASE)])
    path.write_bytes(path.read_bytes() + b"{junk")
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r")]) == 0
    assert f"{path}:3: ignoring an incomplete last line" in capsys.readouterr().err


# --------------------------------------------------------------------------- item 4: one writer at a time
_HOLDER = (
    "import sys\n"
    "from meprop.lab.results.store import ResultsWriter\n"
    "writer = ResultsWriter(sys.argv[1], resume=True)\n"
    "print('locked', flush=True)\n"
    "sys.stdin.read()\n"
)


@pytest.fixture
def held(tmp_path):
    """A results file held open by a writer in another process; yields (path, pid)."""
    path = _write(tmp_path / "out" / "results.jsonl", "run1", [_ok("run1", CASE)])
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield path, proc.pid
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


def test_second_writer_is_refused_naming_file_and_holder(held):
    path, pid = held
    before = path.read_bytes()
    with pytest.raises(ResultsLockedError, match=str(path)) as info:
        ResultsWriter(path, resume=True)
    if sys.platform.startswith("linux"):
        assert f"process {pid}" in str(info.value)
    assert path.read_bytes() == before


def test_second_bench_run_into_the_same_out_is_refused(held, capsys):
    path, pid = held
    before = path.read_bytes()
    argv = ["bench", "--hidden", "32", "--k", "4", "--batch", "4", "--out", str(path.parent),
            "--resume", *FAST]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("meprop bench: error: ") and str(path) in err and "being written" in err
    if sys.platform.startswith("linux"):
        assert f"process {pid}" in err
    assert path.read_bytes() == before


def test_second_train_run_into_the_same_out_is_refused(held, capsys):
    path, _ = held
    before = path.read_bytes()
    argv = ["train", "--preset", "synthetic", "--quick", "--only", "dense", "--epochs", "1",
            "--out", str(path), "--resume", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("meprop train: error: ") and str(path) in err and "being written" in err
    assert path.read_bytes() == before


def test_lock_is_held_for_the_writer_lifetime_only(tmp_path):
    path = tmp_path / "results.jsonl"
    with ResultsWriter(path):
        with pytest.raises(ResultsLockedError):
            ResultsWriter(path, resume=True)  # also within one process (another open file)
    with ResultsWriter(path, resume=True):  # released on close
        pass


# --------------------------------------------------------------------------- item 7: retry skipped cases
def test_resume_retries_skipped_cases_and_latest_outcome_wins(tmp_path):
    cuda_case = CASE.replace(k=4)
    path = _write(tmp_path / "results.jsonl", "run1", [
        _ok("run1", CASE),
        case_record("run1", cuda_case, status="skipped", reason="out of memory: CPU"),
    ])
    with ResultsWriter(path, resume=True) as writer:
        assert writer.done == {CASE.key}  # the skipped case is to be run again
        writer.write(env_record("run2", _env("2026-11-22T00:00:00+00:00")))
        writer.write(_ok("run2", cuda_case))
        assert writer.done == {CASE.key, cuda_case.key}
    with ResultsWriter(path, resume=True) as writer:
        assert writer.done == {CASE.key, cuda_case.key}
        writer.write(env_record("run3", _env("2026-11-23T00:00:00+00:00")))
        writer.write(case_record("run3", cuda_case, status="skipped", reason="out of memory: x"))
    with ResultsWriter(path, resume=True) as writer:  # the latest record of a key decides
        assert writer.done == {CASE.key}


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_resume_retries_cases_skipped_for_no_cuda(tmp_path, capsys):
    argv = ["bench", "--hidden", "32", "--k", "4", "--batch", "4", "--device", "cpu,cuda",
            "--out", str(tmp_path), *FAST]
    assert main(argv) == 0
    assert "1 measured, 1 skipped, 0 already done" in capsys.readouterr().out
    assert main([*argv, "--resume"]) == 0
    assert "0 measured, 1 skipped, 1 already done" in capsys.readouterr().out  # tried again
    bench = [r for r in read_records(tmp_path) if r["type"] == "bench"]
    assert [r["status"] for r in bench] == ["ok", "skipped", "skipped"]


# --------------------------------------------------------------------------- item 9: bounded options
@pytest.mark.parametrize("argv, message", [
    (["--threads", "10000"], "--threads must be an int from 1 to"),
    (["--threads", "0"], "--threads must be an int from 1 to"),
    (["--budget", "inf"], "--budget must be a number of seconds in (0, 3600]"),
    (["--budget", "nan"], "--budget must be a number of seconds in (0, 3600]"),
    (["--budget", "-1"], "--budget must be a number of seconds in (0, 3600]"),
    (["--min-samples", "1000000"], "--min-samples must be an int from 1 to 10000, got 1000000"),
    (["--min-samples", "0"], "--min-samples must be an int from 1 to 10000, got 0"),
])
def test_timing_options_are_bounded(tmp_path, capsys, argv, message):
    assert main(["bench", *FAST, *argv, "--out", str(tmp_path / "o"), "--list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("meprop bench: error: ") and message in err
    assert not (tmp_path / "o").exists()


def test_thread_bound_is_this_machines_cpu_count(tmp_path, capsys):
    import os

    cpus = os.cpu_count()
    assert main(["bench", *FAST, "--threads", str(cpus + 1), "--out", str(tmp_path), "--list"]) == 2
    assert f"from 1 to {cpus} (os.cpu_count()" in capsys.readouterr().err
    assert main(["bench", *FAST, "--threads", str(cpus), "--out", str(tmp_path), "--list"]) == 0
