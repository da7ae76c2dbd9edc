"""A full disk (ENOSPC) or an I/O error while `meprop bench` / `meprop train` write results:
one line naming the file and the error, a non-zero exit, a readable file, and --resume goes on."""

from __future__ import annotations

import errno
import os

import pytest

from meprop.lab.cli import main
from meprop.lab.results.store import RESULTS_FILENAME, read_records

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")

FAST = ["--no-progress", "--no-memory", "--budget", "0.01", "--min-samples", "2", "--threads", "1"]


@pytest.fixture
def disk_fills_after(monkeypatch):
    """``disk_fills_after(n, code)``: the results file takes n more writes, then a write stores a
    few bytes and fails with ``code`` (ENOSPC, EIO); ``disk_fills_after(None)`` frees the disk."""
    real_write = os.write
    state = {"left": None, "code": errno.ENOSPC}

    def write(fd, data):
        target = os.readlink(f"/proc/self/fd/{fd}").endswith(RESULTS_FILENAME)
        if target and state["left"] is not None:
            if state["left"] == 0:
                real_write(fd, bytes(data[:7]))  # part of the line made it to disk
                raise OSError(state["code"], os.strerror(state["code"]))
            state["left"] -= 1
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)

    def fill(writes, code=errno.ENOSPC):
        state.update(left=writes, code=code)

    return fill


def _one_line_error(capsys, path, text):
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and str(path) in err[0] and text in err[0], err


@pytest.mark.parametrize("code, text", [(errno.ENOSPC, "No space left on device"),
                                        (errno.EIO, "Input/output error")])
def test_bench_on_a_full_disk_stops_cleanly_and_resumes(tmp_path, capsys, disk_fills_after, code, text):
    argv = ["bench", "--hidden", "16", "--k", "2", "--batch", "1", "2", "3", "--out", str(tmp_path), *FAST]
    disk_fills_after(2, code)  # the env record and the first case fit
    assert main(argv) == 1
    _one_line_error(capsys, tmp_path / RESULTS_FILENAME, text)
    assert [r["type"] for r in read_records(tmp_path)] == ["env", "bench"]
    disk_fills_after(None)
    assert main([*argv, "--resume"]) == 0
    assert "2 measured, 0 skipped, 1 already done" in capsys.readouterr().out
    assert sum(r["type"] == "bench" for r in read_records(tmp_path)) == 3


def test_train_on_a_full_disk_stops_cleanly_and_resumes(tmp_path, capsys, disk_fills_after):
    argv = ["train", "--task", "synthetic", "--k", "4", "--hidden", "16", "--epochs", "2", "--limit", "100",
            "--no-progress", "--out", str(tmp_path)]
    disk_fills_after(2)  # the env record and epoch 1
    assert main(argv) == 1
    _one_line_error(capsys, tmp_path / RESULTS_FILENAME, "No space left on device")
    assert [r["type"] for r in read_records(tmp_path)] == ["env", "train"]
    disk_fills_after(None)
    assert main([*argv, "--resume"]) == 0
    records = read_records(tmp_path)
    assert [r["epoch"] for r in records if r["type"] == "train"][-2:] == [1, 2]
