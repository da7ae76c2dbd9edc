"""Bad input: a one-line error (exit 2) or a report that says what is missing; no tracebacks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import report_fixtures as fx

from meprop.lab.cli import main
from meprop.lab.report import ResultsError, build_report


def _report(capsys, *args):
    status = main(["report", *map(str, args)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return status, out, err


def test_missing_path(tmp_path, capsys):
    status, out, err = _report(capsys, tmp_path / "nope.jsonl", "--out", tmp_path / "rep")
    assert status == 2 and "does not exist" in err and "nope.jsonl" in err
    assert not (tmp_path / "rep" / "index.html").exists()


def test_empty_file(tmp_path, capsys):
    empty = tmp_path / "results.jsonl"
    empty.write_text("")
    status, _, err = _report(capsys, empty, "--out", tmp_path / "rep")
    assert status == 2 and "empty" in err


def test_corrupt_line_names_file_and_line(tmp_path, capsys):
    path = fx.write_jsonl(tmp_path / "results.jsonl", fx.quick_like_records())
    lines = path.read_text().splitlines()
    lines[3] = "{this is not json"
    path.write_text("\n".join(lines) + "\n")
    status, _, err = _report(capsys, path, "--out", tmp_path / "rep")
    assert status == 2 and f"{path}:4" in err


def test_foreign_json(tmp_path, capsys):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"hello": "world"}))
    status, _, err = _report(capsys, path, "--out", tmp_path / "rep")
    assert status == 2 and "none of the formats" in err


def test_other_schema_major_refused_even_beside_good_results(tmp_path, capsys):
    good = fx.write_jsonl(tmp_path / "a" / "results.jsonl", fx.quick_like_records())
    newer = [dict(r, schema="meprop.results/2") for r in fx.quick_like_records("run-b")]
    bad = fx.write_jsonl(tmp_path / "b" / "results.jsonl", newer)
    status, _, err = _report(capsys, good, bad, "--out", tmp_path / "rep")
    assert status == 2 and "meprop.results/2" in err and str(bad) in err


def test_no_dense_baselines_gives_a_report_that_says_so(tmp_path, capsys):
    records = [fx.env_record("r")] + [
        fx.bench_record("r", hidden=1024, batch=64, k=k, dense_s=None, meprop_s=1e-4) for k in (10, 41)]
    path = fx.write_jsonl(tmp_path / "results.jsonl", records)
    status, out, err = _report(capsys, path, "--out", tmp_path / "rep")
    assert status == 0 and "no dense baselines" in err
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "no dense baselines" in page and 'class="problems severe"' in page
    assert "no dense baseline" in (tmp_path / "rep" / "tables" / "speedup_linear_backward.csv").read_text()


def test_empty_file_beside_good_results_is_listed(tmp_path, capsys):
    fx.write_jsonl(tmp_path / "in" / "a" / "results.jsonl", fx.tiny_records())
    (tmp_path / "in" / "b").mkdir()
    (tmp_path / "in" / "b" / "results.jsonl").write_text("")
    (tmp_path / "in" / "notes.json").write_text('{"not": "results"}')
    status, out, err = _report(capsys, tmp_path / "in", "--out", tmp_path / "rep")
    assert status == 0
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "empty results file" in page and "notes.json: not a results file" in page
    assert "empty results file" in err


def test_directory_without_results(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "readme.txt").write_text("hi")
    status, _, err = _report(capsys, tmp_path / "in", "--out", tmp_path / "rep")
    assert status == 2 and "holds no *.jsonl or *.json files" in err


def test_unwritable_output(tmp_path, capsys):
    tiny = fx.write_jsonl(tmp_path / "results.jsonl", fx.tiny_records())
    blocker = tmp_path / "file"
    blocker.write_text("x")
    status, _, err = _report(capsys, tiny, "--out", blocker / "rep")
    assert status == 2 and "output folder" in err


def test_build_report_raises_results_error(tmp_path):
    with pytest.raises(ResultsError, match="no results given"):
        build_report([], tmp_path / "rep")


@pytest.mark.slow
def test_command_line_prints_index_path(tmp_path):
    tiny = fx.write_jsonl(tmp_path / "results.jsonl", fx.tiny_records())
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "meprop", "report", str(tiny), "--out",
                           str(tmp_path / "rep"), "--title", "Nightly"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    index = tmp_path / "rep" / "index.html"
    assert proc.stdout.strip() == str(index.resolve())
    assert "<title>Nightly</title>" in index.read_text()


def test_run_interrupted_before_its_first_case(tmp_path, capsys):
    path = fx.write_jsonl(tmp_path / "results.jsonl", [fx.env_record("r")])
    status, out, err = _report(capsys, path, "--out", tmp_path / "rep")
    assert status == 0 and "no benchmark records" in err
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "no benchmark records in the inputs" in page and "No speedups could be computed" in page
    assert "box-a / r" in page  # the environment that was recorded is still shown


def test_training_results_only(tmp_path, capsys):
    path = fx.write_jsonl(tmp_path / "results.jsonl", [fx.env_record("r"), fx.train_record("r", 1)])
    status, out, err = _report(capsys, path, "--out", tmp_path / "rep")
    assert status == 0
    page = (tmp_path / "rep" / "index.html").read_text()
    assert 'id="accuracy"' in page and "No training results" not in page


# ----------------------------------------------------------------- pytest-benchmark and asv inputs
DATA = Path(__file__).parent / "data"


def _pytest_benchmark(path, benchmarks):
    data = json.loads((DATA / "pytest_benchmark.json").read_text())
    data["benchmarks"] = benchmarks
    path.write_text(json.dumps(data))
    return path


def test_pytest_benchmark_with_null_benchmarks_is_a_clear_error(tmp_path, capsys):
    path = _pytest_benchmark(tmp_path / "bench.json", None)
    status, _, err = _report(capsys, path, "--out", tmp_path / "rep")
    assert status == 2 and str(path) in err and '"benchmarks": null' in err


def test_pytest_benchmark_with_null_benchmarks_beside_good_results_is_skipped(tmp_path, capsys):
    good = fx.write_jsonl(tmp_path / "results.jsonl", fx.tiny_records())
    path = _pytest_benchmark(tmp_path / "bench.json", None)
    status, _, err = _report(capsys, good, path, "--out", tmp_path / "rep")
    assert status == 0 and f"{path}: pytest-benchmark file with no benchmarks" in err


def test_meprop_median_of_zero(tmp_path, capsys):
    records = fx.tiny_records()
    records[1]["meprop"]["median_s"] = 0.0
    records[1]["speedup"] = records[1]["efficiency"] = None
    path = fx.write_jsonl(tmp_path / "results.jsonl", records)
    status, _, _ = _report(capsys, path, "--out", tmp_path / "rep")
    assert status == 0 and (tmp_path / "rep" / "index.html").exists()


@pytest.mark.parametrize("field, value, message", [
    ("speedup", "fast", "field 'speedup' must be a number or null, got 'fast'"),
    ("case.hidden", "abc", "case field 'hidden' must be an integer, got 'abc'"),
    ("case", [1024, 64], "field 'case' must be an object, got list"),
])
def test_wrong_typed_field_skips_the_record_naming_file_and_line(tmp_path, capsys, field, value, message):
    records = fx.tiny_records()
    target = records[1]
    if field.startswith("case."):
        target["case"][field.split(".")[1]] = value
    else:
        target[field] = value
    path = fx.write_jsonl(tmp_path / "results.jsonl", records)
    status, _, err = _report(capsys, path, "--out", tmp_path / "rep")
    assert status == 0 and f"{path}:2: {message}" in err and "record skipped" in err
    page = (tmp_path / "rep" / "index.html").read_text()
    assert message.replace("'", "&#x27;") in page


def test_wrong_typed_field_in_the_only_record_is_a_clear_error(tmp_path, capsys):
    records = fx.tiny_records()[:2]
    records[1]["case"] = "linear"
    path = fx.write_jsonl(tmp_path / "results.jsonl", records)
    status, _, err = _report(capsys, path, "--out", tmp_path / "rep")
    assert status == 0 and f"{path}:2: field 'case' must be an object" in err  # the env record is kept


def test_foreign_pytest_benchmark_file_without_k_or_device(tmp_path, capsys):
    entries = [{"name": f"test_linear_backward[{variant}]", "params": {"variant": variant, "hidden": 512, "batch": 8},
                "stats": {"median": median, "iqr": median / 50, "rounds": 10, "min": median, "mean": median}}
               for variant, median in (("dense", 2e-3), ("meprop", 1e-3))]
    path = _pytest_benchmark(tmp_path / "foreign.json", entries)
    status, _, err = _report(capsys, path, "--out", tmp_path / "rep")
    assert status == 0, err
    table = (tmp_path / "rep" / "tables" / "speedup_linear_backward.csv").read_text()
    assert "512" in table and "2.0" in table


def test_asv_result_with_a_scalar_value(tmp_path, capsys):
    folder = tmp_path / "asv"
    shutil.copytree(DATA / "asv" / "results", folder)
    result = next((folder / "vm").glob("0123abcd-*.json"))
    data = json.loads(result.read_text())
    data["results"]["bench_linear_backward.LinearBackward.track_meprop"][0] = 0.5  # a scalar, not a list
    result.write_text(json.dumps(data))
    status, _, err = _report(capsys, folder, "--out", tmp_path / "rep")
    assert "Traceback" not in err
    assert (status == 0 and "track_meprop" in err) or (status == 2 and str(result) in err)


def test_unrelated_jsonl_in_a_results_directory_is_skipped(tmp_path, capsys):
    fx.write_jsonl(tmp_path / "in" / "run" / "results.jsonl", fx.tiny_records())
    (tmp_path / "in" / "notes.jsonl").write_text('{"event": "started"}\n{"event": "done"}\n')
    status, _, err = _report(capsys, tmp_path / "in", "--out", tmp_path / "rep")
    assert status == 0 and "notes.jsonl: not a results file, ignored" in err
    assert "results.jsonl (jsonl" in (tmp_path / "rep" / "index.html").read_text()


def test_repository_root_does_not_pick_up_the_test_fixtures(tmp_path, capsys):
    root = tmp_path / "checkout"
    fx.write_jsonl(root / "results" / "quick" / "results.jsonl", fx.tiny_records())
    shutil.copytree(DATA, root / "tests" / "report" / "data")
    (root / ".venv" / "lib").mkdir(parents=True)
    (root / ".venv" / "lib" / "x.json").write_text("{}")
    status, _, err = _report(capsys, root, "--out", tmp_path / "rep")
    assert status == 0 and "tests" not in err and ".venv" not in err
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "pytest_benchmark.json" not in page and "[asv]" not in page and "tests/report/data" not in page
