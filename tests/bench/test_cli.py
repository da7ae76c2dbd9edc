"""``meprop bench`` and ``meprop info`` end to end, through ``meprop.lab.cli.main``."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from meprop.lab.plan.profiles import PROFILES, profile_cases
import torch

from meprop.lab.cli.bench import select_cases
from meprop.lab.report.frames import results_frame
from meprop.lab.results.store import read_records
from meprop.lab.cli import build_parser, main

FAST = ["--no-progress", "--no-memory", "--budget", "0.01", "--min-samples", "2", "--threads", "1"]


def _args(*argv):
    return build_parser().parse_args(["bench", *argv])


@pytest.mark.slow
def test_smoke_profile_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["bench", "--profile", "smoke", "--out", str(out), "--no-progress"]) == 0
    records = read_records(out / "results.jsonl")
    assert records[0]["type"] == "env"
    env = records[0]["env"]
    assert env["profile"] == "smoke" and env["threads"] == 1
    assert "grads preallocated" in env["allocator"]
    bench = [r for r in records if r["type"] == "bench"]
    assert len(bench) == len(profile_cases("smoke")) == 16 and all(r["status"] == "ok" for r in bench)
    assert all(r["dense"]["n_samples"] >= 3 and r["meprop"]["median_s"] > 0 for r in bench)
    ddp = [r for r in bench if r["case"]["measurement"] == "ddp_step"]
    assert len(ddp) == 1 and all(side["payload_ok"] for side in ddp[0]["ddp"]["sides"].values())
    assert ddp[0]["peak_memory"] is None  # its processes are not this one
    assert all(r["peak_memory"]["kind"] == "cpu_rss_delta" for r in bench if r not in ddp)
    assert all(r["wall_s"] > 0 for r in bench)
    df = results_frame(out)
    assert set(df["measurement"]) == {"forward", "linear_backward", "overall_backward",
                                      "train_step", "ddp_step"}
    assert (df["speedup"] > 0).all()
    assert env["malloc_policy"] == "no-page-faults"
    assert {r["case"]["workload"] for r in bench} == {"linear", "mlp", "lstm", "transformer"}
    assert "16 measured" in capsys.readouterr().out


def test_refuses_to_overwrite_then_resumes(tmp_path, capsys):
    out = str(tmp_path)
    argv = ["bench", "--hidden", "32", "--k", "4", "--batch", "4,8", "--out", out, *FAST]
    assert main(argv) == 0
    before = (tmp_path / "results.jsonl").read_bytes()
    assert main(argv) == 2
    assert "already holds results; pass --resume" in capsys.readouterr().err
    assert (tmp_path / "results.jsonl").read_bytes() == before
    bigger = ["bench", "--hidden", "32", "--k", "4", "--batch", "4,8,16", "--out", out, "--resume",
              *FAST]
    assert main(bigger) == 0
    assert "1 measured, 0 skipped, 2 already done" in capsys.readouterr().out
    df = results_frame(tmp_path)
    assert sorted(df["batch"]) == [4, 8, 16] and df["key"].is_unique
    assert (tmp_path / "results.jsonl").read_bytes().startswith(before)


def test_cuda_requested_without_cuda_is_skipped_with_a_warning(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    argv = ["bench", "--hidden", "32", "--k", "4", "--batch", "4", "--device", "cpu,cuda",
            "--out", str(tmp_path), *FAST]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "cuda requested but cuda is not available" in captured.err
    df = results_frame(tmp_path).set_index("device")
    assert df.loc["cpu", "status"] == "ok"
    assert df.loc["cuda", "status"] == "skipped"
    assert df.loc["cuda", "reason"] == "cuda not available"


def test_custom_grid_and_profile_filters():
    cases, profile = select_cases(_args("--hidden", "64", "128", "--k-ratio", "0.1,0.5"))
    assert profile is None
    assert [(c.hidden, c.k) for c in cases] == [(64, 6), (64, 32), (128, 13), (128, 64)]
    assert {c.measurement for c in cases} == {"linear_backward"}
    cases, profile = select_cases(_args("--profile", "standard", "--hidden", "500", "--batch", "1",
                                        "--mode", "per_example", "--k-ratio", "0.04"))
    assert profile.name == "standard"
    assert {(c.hidden, c.batch, c.mode, c.k) for c in cases} == {(500, 1, "per_example", 20)}
    cases, _ = select_cases(_args("--profile", "smoke", "--device", "cuda", "--threads", "2"))
    assert {(c.device, c.threads) for c in cases} == {("cuda", 2)}
    default, profile = select_cases(_args())
    assert profile.name == "quick"


def test_optimizer_and_adam_options_multiply_training_steps_only():
    cases, _ = select_cases(_args("--workload", "mlp", "--measurement", "train_step,overall_backward",
                                  "--hidden", "64", "--k", "4", "--batch", "2",
                                  "--optimizer", "lazy,exact", "--adam", "default", "fused"))
    steps = [(c.optimizer, c.adam) for c in cases if c.measurement == "train_step"]
    assert steps == [("lazy", "default"), ("lazy", "fused"), ("exact", "default"), ("exact", "fused")]
    assert [(c.optimizer, c.adam) for c in cases if c.measurement != "train_step"] == [("lazy", "default")]
    assert len({c.key for c in cases}) == len(cases) == 5


def test_list_prints_keys(capsys):
    assert main(["bench", "--profile", "perf", "--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "linear/linear_backward/m8192-n8192x1-c10/k128/b1024/unified/cpu/float32/t2" in out


@pytest.mark.parametrize("argv, message", [
    (["--hidden", "abc"], "'abc' is not an int"),
    (["--k-ratio", "x"], "'x' is not a number"),
])
def test_unparsable_arguments_are_refused_by_argparse(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--mode", "topk"], "--mode must be one of ('per_example', 'unified', 'random', 'sampled', "
     "'sampled_unified'), got 'topk'"),
    (["--device", "gpu"], "--device must be 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
    (["--hidden", "0"], "--hidden must be positive integers, got 0"),
    (["--batch", "-3"], "--batch must be positive integers, got -3"),
    (["--k-ratio", "1.5"], "--k-ratio must be in (0, 1], got 1.5"),
    (["--k-ratio", "0"], "--k-ratio must be in (0, 1], got 0.0"),
    (["--k", "0"], "--k must be a positive int (>= 1), got 0"),
    (["--hidden", "64", "--k", "65"], "k must be at most out_features=64"),
    (["--measurement", "backward"], "--measurement must be one of"),
    (["--adam", "foreach"], "--adam must be one of ('default', 'fused'), got 'foreach'"),
    (["--threads", "0"], "--threads must be an int from 1 to"),
    (["--profile", "smoke", "--hidden", "12345"], "no case of profile 'smoke' matches"),
])
def test_bad_values_are_a_clear_error_and_write_nothing(tmp_path, capsys, argv, message):
    # FAST first so argv's values win; --list: had validation missed, nothing long would run
    assert main(["bench", *FAST, *argv, "--out", str(tmp_path / "o"), "--list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("meprop bench: error: ") and message in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("extra", [[], ["--list"], ["--hidden", "64"]])
def test_unknown_profile_is_refused_in_one_line_listing_the_profiles(tmp_path, capsys, extra):
    assert main(["bench", "--profile", "bogus", *extra, "--out", str(tmp_path / "o")]) == 2
    captured = capsys.readouterr()
    names = ", ".join(repr(name) for name in PROFILES)
    assert captured.err == f"meprop bench: error: --profile must be one of ({names}), got 'bogus'\n"
    assert captured.out == "" and not (tmp_path / "o").exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_report_with_an_unknown_profile_is_refused_in_one_line(tmp_path):
    # make's own setup is up to date (its stamps are newer files), so the first thing the
    # report target runs is the benchmark, which must refuse the name before measuring anything
    stamp, kernels = tmp_path / "stamp", tmp_path / "kernels"
    stamp.touch()
    kernels.touch()
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(["make", "-s", "-C", str(root), "report", "PROFILE=bogus", f"PY={sys.executable}",
                           f"STAMP={stamp}", f"KERNELS={kernels}", f"RESULTS={tmp_path / 'r'}",
                           f"REPORT={tmp_path / 'rep'}", f"CONVERGE_RESULTS={tmp_path / 'c'}"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode != 0
    ours = [line for line in done.stderr.splitlines() if line.startswith("meprop")]
    assert ours == ["meprop bench: error: --profile must be one of ('smoke', 'quick', 'standard', 'paper', "
                    "'full', 'optimizers', 'perf'), got 'bogus'"], done.stderr
    assert not (tmp_path / "r").exists() and not (tmp_path / "c").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_out_folder_permissions(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code = main(["bench", "--profile", "smoke", "--out", str(locked / "x"), *FAST])
    finally:
        locked.chmod(0o700)
    assert code == 2 and "cannot create the output folder" in capsys.readouterr().err


def test_unwritable_out_path(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["bench", "--profile", "smoke", "--out", str(blocker), *FAST]) == 2
    assert "--out must be a folder" in capsys.readouterr().err
    assert main(["bench", "--profile", "smoke", "--out", str(blocker / "sub"), *FAST]) == 2
    assert "cannot create the output folder" in capsys.readouterr().err
    assert blocker.read_text() == "not a folder"


def test_info_prints_the_snapshot(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch_version" in out and torch.__version__ in out and "allocator" in out
    assert main(["info", "--json"]) == 0
    env = json.loads(capsys.readouterr().out)
    expected = {"timestamp", "machine", "git_commit", "meprop_version", "torch_version",
                "python_version", "platform", "threads", "cpu_model", "cpu_cores_physical",
                "cpu_cores_logical", "ram_bytes", "load_average", "allocator", "cuda_version", "cudnn_version",
                "gpus", "profile", "argv"}
    assert expected <= set(env)
    assert env["threads"] == torch.get_num_threads() and isinstance(env["gpus"], list)


def test_closed_pipe_ends_quietly():
    """`meprop bench --list | head -1`: no BrokenPipeError traceback, exit 141 like SIGPIPE."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "meprop", "bench", "--profile", "full", "--list"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    first = proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert first.strip()
    assert "Traceback" not in stderr
