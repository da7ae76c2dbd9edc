"""Training loop and `meprop train`: smoke runs reach an accuracy bar; records, protocol, bad input."""

import json

import pytest

from meprop import data
from meprop.cli import main
from meprop.train import TrainConfig, train
from meprop.train_cli import PRESETS, preset_runs


class _Collect:
    def __init__(self):
        self.records = []

    def write(self, record):
        json.dumps(record, allow_nan=False)  # every record is valid strict JSON
        self.records.append(record)


@pytest.mark.parametrize("k", [None, 8])
def test_synthetic_smoke_reaches_the_bar(k):
    writer = _Collect()
    result = train(TrainConfig("synthetic", k=k, hidden=64, epochs=3, limit=500, seed=0),
                   writer=writer, run_id="test-run", progress=False)
    assert result.best["dev_score"] >= 80.0
    assert [r["epoch"] for r in writer.records] == [1, 2, 3]
    last = writer.records[-1]
    assert last["type"] == "train" and last["run_id"] == "test-run" and last["samples"] == 500
    assert last["config"]["k"] == k and last["config"]["seed"] == 0 and last["config"]["lr"] == 1e-3
    assert set(last["time_s"]) == {"forward", "backward", "update", "eval"}
    assert all(v > 0 for v in last["time_s"].values())
    # paper protocol: the reported test score is the one at the best-dev epoch
    best = max(writer.records, key=lambda r: (r["dev_score"], -r["epoch"]))
    assert result.best_epoch == best["epoch"] == last["best_epoch_so_far"]
    assert result.test_score == best["test_score"] == last["test_at_best_so_far"]


def test_same_seed_same_run_and_seed_matters():
    config = TrainConfig("synthetic", k=4, hidden=16, epochs=1, limit=200, seed=3)
    a, b = (train(config, progress=False).records[0] for _ in range(2))
    assert a["train_loss"] == b["train_loss"] and a["dev_score"] == b["dev_score"]
    c = train(TrainConfig("synthetic", k=4, hidden=16, epochs=1, limit=200, seed=4), progress=False).records[0]
    assert c["train_loss"] != a["train_loss"]


def test_tagger_learns_the_synthetic_tagging_task():
    corpus = data.make_synthetic_tagging(200, 60, vocab=6, tags=3, max_len=8, seed=0)
    config = TrainConfig("pos", k=24, hidden=16, embed=8, batch=4, epochs=2, seed=0, lr=0.01)
    result = train(config, data=corpus, progress=False)
    assert result.best["dev_score"] >= 85.0  # chance is 33%: the LSTM must use the previous token


@pytest.mark.skipif(not (data.importlib.util.find_spec("mnist")), reason="MNIST not installed")
@pytest.mark.parametrize("k", [None, 100])
def test_mnist_subset_smoke(k):
    result = train(TrainConfig("mnist", k=k, hidden=200, epochs=2, batch=10, limit=2000, seed=1), progress=False)
    assert result.best["dev_score"] >= 80.0


def test_bad_config():
    with pytest.raises(ValueError, match=r"task must be one of \('mnist', 'pos', 'synthetic'\), got 'cifar'"):
        TrainConfig("cifar")
    with pytest.raises(ValueError, match=r"optimizer must be one of \('adam', 'adagrad'\), got 'sgd'"):
        TrainConfig("mnist", optimizer="sgd")
    with pytest.raises(ValueError, match="epochs must be an int >= 1, got 0"):
        TrainConfig("mnist", epochs=0)
    with pytest.raises(ValueError, match="lr must be a positive float"):
        TrainConfig("mnist", lr=-1.0)
    with pytest.raises(ValueError, match="output_k applies to the MLP tasks only"):
        TrainConfig("pos", output_k=3)
    with pytest.raises(ValueError, match="k must be at most out_features=16"):
        train(TrainConfig("synthetic", k=17, hidden=16, epochs=1, limit=50), progress=False)


def test_presets_resolve_and_quick_is_smaller():
    for name in PRESETS:
        full, quick = preset_runs(name), preset_runs(name, quick=True)
        assert full and quick
        assert quick[0][1].epochs <= full[0][1].epochs
    (_, dense), (_, sparse) = preset_runs("mnist-adam")
    assert (dense.k, sparse.k, sparse.hidden, sparse.batch, sparse.optimizer) == (None, 20, 500, 10, "adam")
    with pytest.raises(ValueError, match="preset must be one of"):
        preset_runs("nope")


def test_cli_writes_records_refuses_overwrite_and_resumes(tmp_path, capsys):
    out = tmp_path / "res"
    args = ["train", "--preset", "synthetic", "--quick", "--epochs", "1", "--limit", "100", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["type"] for r in lines] == ["env", "train", "train"]
    assert lines[0]["env"]["threads"] == 1 and lines[1]["preset"] == "synthetic-quick"
    before = (out / "results.jsonl").read_text()
    assert main(args) == 2  # never overwrites silently
    assert "--resume" in capsys.readouterr().err
    assert (out / "results.jsonl").read_text() == before
    assert main(args + ["--resume"]) == 0  # both runs finished: skipped, nothing appended
    assert "skipping" in capsys.readouterr().out
    assert (out / "results.jsonl").read_text() == before


def test_cli_bad_input(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "x")
    with pytest.raises(SystemExit):
        main(["train", "--task", "cifar", "--out", out])
    with pytest.raises(SystemExit):
        main(["train", "--task", "mnist", "--optimizer", "sgd", "--out", out])
    assert main(["train", "--task", "synthetic", "--k", "65", "--hidden", "64", "--out", out]) == 2
    assert "k must be at most out_features=64" in capsys.readouterr().err
    assert main(["train", "--preset", "mnist-adam", "--k", "3", "--out", out]) == 2
    assert "cannot be combined with --preset" in capsys.readouterr().err
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "empty"))
    assert main(["train", "--task", "pos", "--out", out]) == 2
    assert "scripts/setup_data.sh" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing written by a run that could not start
