"""Loaders: our JSON lines, pytest-benchmark --benchmark-json, asv results -> one table."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import report_fixtures as fx

from meprop.lab.report.frames import bench_frame
from meprop.lab.report.ingest import detect_format, load_results

DATA = Path(__file__).parent / "data"


def test_jsonl_file_and_run_directory(quick_jsonl):
    for path in (quick_jsonl, quick_jsonl.parent):
        loaded = load_results([path])
        assert detect_format(quick_jsonl) == "jsonl"
        assert len(loaded.of_type("env")) == 1
        assert len(loaded.of_type("bench")) == 64
        assert loaded.problems == []


def test_train_records_kept_apart(tmp_path):
    path = fx.write_jsonl(tmp_path / "r.jsonl", fx.quick_like_records() + [fx.train_record("run-a", 1)])
    loaded = load_results([path])
    assert len(loaded.of_type("train")) == 1
    assert len(bench_frame(loaded.records)) == 64


def test_truncated_last_line_is_reported_not_fatal(quick_jsonl):
    with open(quick_jsonl, "a", encoding="utf-8") as fh:
        fh.write('{"schema": "meprop.results/1", "type": "bench", "run_')  # interrupted write
    loaded = load_results([quick_jsonl])
    assert len(loaded.of_type("bench")) == 64
    assert any("incomplete last line" in p for p in loaded.problems)


def test_pytest_benchmark_json_paired_by_case():
    path = DATA / "pytest_benchmark.json"
    assert detect_format(path) == "pytest-benchmark"
    loaded = load_results([path])
    frame = bench_frame(loaded.records).set_index("measurement")
    row = frame.loc["linear_backward"]
    assert row["speedup"] == pytest.approx(0.001 / 5e-05)
    assert (row["hidden"], row["k"], row["batch"], row["mode"], row["machine"]) == (1024, 10, 64, "unified", "vm [pytest-benchmark]")
    assert row["noisy"] == True  # noqa: E712  meProp IQR 1e-5 on a 5e-5 median: 20%
    assert row["n_samples"] == 40
    fwd = frame.loc["forward"]  # case from params only; the dense side carries no k or mode
    assert (fwd["k"], fwd["mode"], fwd["speedup"]) == (41, "per_example", pytest.approx(0.4 / 0.42))
    env = loaded.of_type("env")[0]["env"]
    assert env["cpu_model"] == "AMD EPYC" and env["torch_version"] == "2.13.0"
    assert "not interleaved" in env["timing"]


@pytest.mark.slow
def test_real_pytest_benchmark_output_is_read(tmp_path):
    """Run pytest-benchmark itself on two tiny benchmarks and read its JSON."""
    pytest.importorskip("pytest_benchmark")
    (tmp_path / "test_tiny.py").write_text(textwrap.dedent("""
        import pytest
        CASE = {"workload": "linear", "measurement": "linear_backward", "hidden": 64, "k": 4,
                "batch": 2, "device": "cpu", "mode": "unified", "threads": 1}

        @pytest.mark.parametrize("variant", ["dense", "meprop"])
        def test_tiny(benchmark, variant):
            benchmark.extra_info.update(case=CASE, variant=variant)
            n = 2000 if variant == "dense" else 100
            benchmark.pedantic(lambda: sum(range(n)), rounds=5, iterations=10)
    """))
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path),
                           f"--benchmark-json={out}"], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    frame = bench_frame(load_results([out]).records)
    assert len(frame) == 1
    data = {b["extra_info"]["variant"]: b["stats"]["median"] for b in json.loads(out.read_text())["benchmarks"]}
    assert frame["speedup"].iloc[0] == pytest.approx(data["dense"] / data["meprop"])
    assert (frame["hidden"].iloc[0], frame["k"].iloc[0], frame["in_features"].iloc[0]) == (64, 4, 64)


def test_asv_results_mapped_into_the_same_table(tmp_path):
    pytest.importorskip("asv")
    results = shutil.copytree(DATA / "asv" / "results", tmp_path / "results")
    file = next((results / "vm").glob("0123abcd-*.json"))
    assert detect_format(file) == "asv"
    loaded = load_results([results])  # the results root: machine.json/benchmarks.json are not inputs
    frame = bench_frame(loaded.records)
    lb = frame[frame["measurement"] == "linear_backward"].set_index(["hidden", "k"])
    # cuda entries are NaN (n/a in asv) and left out; speedup recomputed from dense / meProp
    assert sorted(lb.index) == [(1024, 10), (1024, 102), (4096, 41), (4096, 410)]
    assert lb.loc[(4096, 41), "speedup"] == pytest.approx(32.0)
    assert lb.loc[(1024, 102), "speedup"] == pytest.approx(4.0)
    assert (lb["device"] == "cpu").all() and (lb["machine"] == "vm [asv]").all()
    mem = frame[frame["peak_dense_mb"].notna()].iloc[0]
    assert (mem["workload"], mem["peak_dense_mb"], mem["peak_meprop_mb"]) == ("mlp", 8.0, 1.0)
    assert mem["in_features"] == 784 and mem["layers"] == 2  # the engine's MLP defaults
    assert any("track_speedup" in p for p in loaded.problems)
    env = loaded.of_type("env")[0]["env"]
    assert env["git_commit"].startswith("0123abcd") and env["ram_bytes"] == 25276502016


def test_asv_results_without_benchmarks_json_say_why(tmp_path):
    pytest.importorskip("asv")
    folder = tmp_path / "vm"
    folder.mkdir()
    src = next((DATA / "asv" / "results" / "vm").glob("0123abcd-*.json"))
    shutil.copy(src, folder / src.name)
    with pytest.raises(ValueError, match="no results records.*parameter names unknown"):
        load_results([folder / src.name])


def test_formats_mixed_in_one_report(quick_jsonl):
    loaded = load_results([quick_jsonl, DATA / "pytest_benchmark.json"])
    frame = bench_frame(loaded.records)
    assert set(frame["machine"]) == {"box-a", "vm [pytest-benchmark]"}  # kept apart
    assert len(loaded.sources) == 2


def test_asv_results_of_the_fused_adam_class_are_read_and_dated_by_their_commit(tmp_path):
    pytest.importorskip("asv")
    results = shutil.copytree(DATA / "asv" / "results", tmp_path / "results")
    for path in [results / "benchmarks.json", *(results / "vm").glob("0123abcd-*.json")]:
        text = path.read_text().replace("bench_linear_backward.LinearBackward", "bench_train_step.TrainStepFusedAdam")
        path.write_text(text)
    loaded = load_results([results])
    assert not any("not a dense/meProp benchmark" in p for p in loaded.problems), loaded.problems
    frame = bench_frame(loaded.records)
    steps = frame[frame["measurement"] == "train_step"]
    assert len(steps) == 4 and set(steps["adam"]) == {"fused"} and set(steps["workload"]) == {"mlp"}
    env = loaded.of_type("env")[0]["env"]
    assert env["commit_date"].startswith("20") and "timestamp" in env  # the commit's date is not "measured"
