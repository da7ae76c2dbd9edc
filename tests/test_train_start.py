"""A failed ``meprop train`` start: bad devices are clear errors that write no file,
and a results file holding nothing but an env record does not block the corrected rerun."""

import json

import pytest
import torch

from meprop.lab.results.schema import env_record
from meprop.lab.results.store import ResultsWriter
from meprop.lab.cli import main
from meprop.lab.paper.train import TrainConfig, train

QUICK = ["--preset", "synthetic", "--quick", "--only", "dense", "--epochs", "1", "--limit", "100",
         "--no-progress"]


def _types(path):
    return [json.loads(line)["type"] for line in path.read_text().splitlines()]


def test_missing_cuda_device_writes_nothing_and_the_rerun_works(tmp_path, capsys):
    out = tmp_path / "res"
    # cuda:99: no CUDA on this machine, or no 100th device on one with CUDA
    assert main(["train", *QUICK, "--device", "cuda:99", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("meprop train: error: --device 'cuda:99' requested but")
    assert "Traceback" not in err
    assert not (out / "results.jsonl").exists()
    assert main(["train", *QUICK, "--device", "cpu", "--out", str(out)]) == 0  # no --resume needed
    assert _types(out / "results.jsonl") == ["env", "train"]


@pytest.mark.parametrize("device, why", [
    ("tpu", ""),
    ("meta", "the meta device holds shapes but no data"),
    ("cuda:x", ""),
])
def test_unsupported_devices_are_a_clear_error(tmp_path, capsys, device, why):
    out = tmp_path / "res"
    assert main(["train", *QUICK, "--device", device, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"meprop train: error: --device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    assert why in err and "Traceback" not in err
    assert not out.exists()


def test_meta_device_is_refused_by_the_config_too():
    with pytest.raises(ValueError, match=r"device must be 'cpu', 'cuda' or 'cuda:N', got 'meta' \(the meta"):
        TrainConfig("synthetic", device="meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_train_on_missing_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="device 'cuda' requested but CUDA is not available"):
        train(TrainConfig("synthetic", device="cuda", epochs=1, limit=50), progress=False)


def test_env_only_file_counts_as_empty(tmp_path):
    path = tmp_path / "results.jsonl"
    with ResultsWriter(path) as writer:  # a run that died before its first result
        writer.write(env_record("run1", {"machine": "m"}))
    with ResultsWriter(path) as writer:  # no --resume needed
        assert writer.done == set()
        writer.write(env_record("run2", {"machine": "m"}))
    assert _types(path) == ["env", "env"]


def test_env_only_file_does_not_block_meprop_train(tmp_path, capsys):
    out = tmp_path / "res"
    with ResultsWriter(out / "results.jsonl") as writer:
        writer.write(env_record("dead", {"machine": "m"}))
    assert main(["train", *QUICK, "--out", str(out)]) == 0
    assert _types(out / "results.jsonl") == ["env", "env", "train"]
