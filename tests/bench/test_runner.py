"""The loop's fault handling: out of memory is recorded and skipped, an interrupt keeps
finished records, and the peak-memory probe sees a large allocation."""

import pytest
import torch

import meprop.lab.engine.runner as runner
from meprop.lab.report.frames import results_frame
from meprop.lab.results.store import read_records
from meprop.lab.cli import main

ARGS = ["bench", "--hidden", "32", "--k", "4", "--batch", "2,4,8", "--no-progress", "--no-memory",
        "--budget", "0.01", "--min-samples", "2", "--threads", "1"]


def test_out_of_memory_is_recorded_as_skipped_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    real_build = runner.build

    def build(case, variant):
        if case.batch == 4 and variant == "meprop":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB")
        return real_build(case, variant)

    monkeypatch.setattr(runner, "build", build)
    assert main([*ARGS, "--out", str(tmp_path)]) == 0
    df = results_frame(tmp_path).set_index("batch")
    assert df.loc[2, "status"] == "ok" and df.loc[8, "status"] == "ok"
    assert df.loc[4, "status"] == "skipped"
    assert df.loc[4, "reason"].startswith("out of memory: CUDA out of memory")
    assert "skipped 1: out of memory" in capsys.readouterr().out


def test_other_errors_propagate_but_keep_finished_records(tmp_path, monkeypatch):
    real_build = runner.build

    def build(case, variant):
        if case.batch == 4:
            raise RuntimeError("a bug")
        return real_build(case, variant)

    monkeypatch.setattr(runner, "build", build)
    with pytest.raises(RuntimeError, match="a bug"):
        main([*ARGS, "--out", str(tmp_path)])
    assert list(results_frame(tmp_path)["batch"]) == [2]


def test_interrupted_run_keeps_what_it_finished_and_resumes(tmp_path, monkeypatch, capsys):
    real_run_case = runner.run_case
    calls = []

    def run_case(case, *args, **kwargs):
        calls.append(case.batch)
        if case.batch == 4:
            raise KeyboardInterrupt
        return real_run_case(case, *args, **kwargs)

    monkeypatch.setattr(runner, "run_case", run_case)
    assert main([*ARGS, "--out", str(tmp_path)]) == 130  # Ctrl-C
    records = read_records(tmp_path)
    assert [r["type"] for r in records] == ["env", "bench"]
    monkeypatch.setattr(runner, "run_case", real_run_case)
    assert main([*ARGS, "--out", str(tmp_path), "--resume"]) == 0
    assert "2 measured, 0 skipped, 1 already done" in capsys.readouterr().out
    df = results_frame(tmp_path)
    assert sorted(df["batch"]) == [2, 4, 8] and df["run_id"].nunique() == 2


def test_peak_memory_sees_a_large_transient_allocation():
    size = 256 * 2**20  # 256 MiB, far above glibc's mmap threshold: fresh pages

    def allocate():
        buffer = torch.ones(size // 4)  # touches every page
        buffer.sum()

    extra, kind = runner.peak_memory(allocate, "cpu")
    assert kind == "cpu_rss_delta"
    assert 0.5 * size <= extra <= 2 * size
    small, _ = runner.peak_memory(lambda: None, "cpu")
    assert small < 0.1 * size


def test_run_case_measures_both_variants():
    from meprop.lab.plan.cases import Case

    case = Case("linear", "linear_backward", 64, 4, 8, threads=1)
    fields = runner.run_case(case, runner.TimingOptions(budget_s=0.01, warmup_s=0, min_samples=2))
    assert fields["dense"].n_samples >= 2 and fields["meprop"].n_samples >= 2
    assert fields["peak_memory"]["kind"] == "cpu_rss_delta"


def test_resumed_progress_bar_counts_only_the_cases_left(tmp_path, monkeypatch):
    import tqdm.auto

    assert main([*ARGS[:6], "2", *ARGS[7:], "--out", str(tmp_path)]) == 0  # batch 2 only
    bars = []
    real_tqdm = tqdm.auto.tqdm

    def tqdm_spy(iterable, **kwargs):
        bars.append(list(iterable))
        return real_tqdm(bars[-1], **kwargs)

    monkeypatch.setattr(tqdm.auto, "tqdm", tqdm_spy)
    assert main([*ARGS, "--out", str(tmp_path), "--resume"]) == 0
    assert [[case.batch for case in bar] for bar in bars] == [[4, 8]]  # the ETA's rate is theirs alone
