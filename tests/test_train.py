"""Training loop and `meprop train`: smoke runs reach an accuracy bar; records, protocol, bad input."""

import json

import pytest

from meprop.lab.paper import data
from meprop.lab.cli import main
from meprop.lab.paper.presets import PRESETS, preset_runs
from meprop.lab.paper.train import TrainConfig, run_key, train


class _Collect:
    def __init__(self):
        self.records = []

    def write(self, record):
        json.dumps(record, allow_nan=False)  # every record is valid strict JSON
        self.records.append(record)


@pytest.mark.slow
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


@pytest.mark.slow
def test_same_seed_same_run_and_seed_matters():
    config = TrainConfig("synthetic", k=4, hidden=16, epochs=1, limit=200, seed=3)
    a, b = (train(config, progress=False).records[0] for _ in range(2))
    assert a["train_loss"] == b["train_loss"] and a["dev_score"] == b["dev_score"]
    c = train(TrainConfig("synthetic", k=4, hidden=16, epochs=1, limit=200, seed=4), progress=False).records[0]
    assert c["train_loss"] != a["train_loss"]


@pytest.mark.slow
def test_tagger_learns_the_synthetic_tagging_task():
    corpus = data.make_synthetic_tagging(200, 60, vocab=6, tags=3, max_len=8, seed=0)
    config = TrainConfig("pos", k=24, hidden=16, embed=8, batch=4, epochs=2, seed=0, lr=0.01)
    result = train(config, data=corpus, progress=False)
    assert result.best["dev_score"] >= 85.0  # chance is 33%: the LSTM must use the previous token


@pytest.mark.slow
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
    (_, dense), (_, sparse) = preset_runs("mnist-adam")[:2]  # the third: the same with lazy Adam
    assert (dense.k, sparse.k, sparse.hidden, sparse.batch, sparse.optimizer) == (None, 20, 500, 10, "adam")
    with pytest.raises(ValueError, match="preset must be one of"):
        preset_runs("nope")
    # the authors' PyTorch release: dropout 0.1, dense bias gradient, its own initialisation
    (_, dense), (_, unified) = preset_runs("mnist-release-unified")
    assert (unified.k, unified.mode, unified.batch, unified.dropout) == (30, "unified", 50, 0.1)
    assert (unified.bias_grad, unified.init, dense.k, dense.init) == ("dense", "release", None, "release")
    (_, per_example), = preset_runs("mnist-release")[1:]
    (_, table1), = preset_runs("mnist-adam-release")[1:2]
    assert (table1.k, table1.batch, table1.hidden, table1.dropout, table1.init) == (20, 10, 500, 0.1, "release")
    assert (per_example.k, per_example.mode, per_example.batch, per_example.hidden) == (30, "per_example", 32, 512)


def test_run_key_stable_for_default_bias_grad_and_init():
    base = TrainConfig("mnist", k=20)
    assert run_key(base) == run_key(TrainConfig("mnist", k=20, bias_grad="sparse", init="torch"))
    # keys of records written before bias_grad/init existed stay valid (--resume skips them)
    assert run_key(base, "mnist-adam") == "train/mnist-adam/mnist/h500/k20-per_example/e42bb7b507"
    assert run_key(base) != run_key(TrainConfig("mnist", k=20, init="release"))
    assert run_key(base) != run_key(TrainConfig("mnist", k=20, bias_grad="dense"))
    with pytest.raises(ValueError, match="init applies to the MLP tasks only"):
        TrainConfig("pos", init="glorot")
    with pytest.raises(ValueError, match="bias_grad must be one of"):
        TrainConfig("mnist", bias_grad="none")


@pytest.mark.slow
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
    # --only: one run of the preset (e.g. dense and meProp in two processes, two files)
    only = tmp_path / "only.jsonl"
    assert main(args[:-3] + ["--out", str(only), "--no-progress", "--only", "meProp k=8"]) == 0
    records = [json.loads(line) for line in only.read_text().splitlines()]
    assert [(r["type"], r.get("label")) for r in records] == [("env", None), ("train", "meProp k=8")]
    assert records[1]["run_key"] == lines[2]["run_key"]  # the same run as in the whole preset


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
    assert main(["train", "--preset", "mnist-adam", "--only", "meProp k=21", "--out", out]) == 2
    assert "--only 'meProp k=21' is not a run of preset 'mnist-adam'" in capsys.readouterr().err
    assert main(["train", "--task", "synthetic", "--only", "dense", "--out", out]) == 2
    assert "--only applies to a --preset only" in capsys.readouterr().err
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "empty"))
    assert main(["train", "--task", "pos", "--out", out]) == 2
    assert "scripts/setup_data.sh" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing written by a run that could not start


def test_lazy_optimizer_mode_trains_and_keeps_exact_run_keys():
    exact = TrainConfig("synthetic", k=8, hidden=64, epochs=3, limit=500, seed=0)
    lazy = TrainConfig("synthetic", k=8, hidden=64, epochs=3, limit=500, seed=0, optimizer_mode="lazy")
    assert run_key(exact) == run_key(TrainConfig("synthetic", k=8, hidden=64, epochs=3, limit=500, seed=0,
                                                 optimizer_mode="exact"))
    assert run_key(lazy) != run_key(exact)
    writer = _Collect()
    result = train(lazy, writer=writer, progress=False)
    assert result.best["dev_score"] >= 80.0
    assert writer.records[-1]["config"]["optimizer_mode"] == "lazy"
    first = train(exact, progress=False).records[0]["train_loss"]
    assert result.records[0]["train_loss"] != first  # a different optimizer really ran


@pytest.mark.parametrize("kwargs, words", [
    (dict(k=8, optimizer_mode="fast"), "optimizer_mode must be one of"),
    (dict(k=None, optimizer_mode="lazy"), "meProp run"),
    (dict(k=8, optimizer="adagrad", optimizer_mode="lazy"), "optimizer='adam'"),
])
def test_bad_optimizer_mode(kwargs, words):
    with pytest.raises(ValueError, match=words):
        TrainConfig("synthetic", **kwargs)


def test_mnist_adam_presets_run_lazy_next_to_exact():
    for name in ("mnist-adam", "mnist-adam-release"):
        runs = dict(preset_runs(name))
        assert runs["meProp k=20 (lazy Adam)"].optimizer_mode == "lazy"
        assert runs["meProp k=20"].optimizer_mode == "exact"
    overridden = dict(preset_runs("mnist-adam", overrides={"optimizer_mode": "lazy"}))
    assert overridden["dense"].optimizer_mode == "exact" and overridden["meProp k=20"].optimizer_mode == "lazy"
