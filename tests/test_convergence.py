"""Time-to-accuracy runner (meprop.lab.converge.loop): same start, same data, clock, resume, faults."""

import itertools
import json
import math

import pytest
import torch

from meprop.lab.cli import main
from meprop.lab.converge import loop as convergence
from meprop.lab.converge.paper_workload import PaperWorkload
from meprop.lab.converge.loop import ConvergenceError, RunConfig, Variant, converge
from meprop.lab.paper.data import make_synthetic
from meprop.lab.converge.time_to_target import Target, outcomes, runs_of
from meprop.lab.paper.train import TrainConfig
from meprop.lab.results.store import ResultsWriter, read_records
from meprop.lab.stopwatch import Stopwatch

VARIANTS = (Variant("dense"), Variant("meProp k=4", k=4), Variant("meProp k=4 lazy", k=4, optimizer_mode="lazy"))


class Spy(PaperWorkload):
    """The synthetic task, logging per variant the first weights and the batches it trains on."""

    def __init__(self, nan_for=None, interrupt_at=None, ticks=None):
        config = TrainConfig("synthetic", hidden=16, batch=10, limit=200, seed=0)
        super().__init__("synthetic", config, lambda: make_synthetic(200, 100, seed=0))
        self.seen, self.first, self.nan_for, self.interrupt_at, self.ticks = {}, {}, nan_for, interrupt_at, ticks
        self.evaluations = 0

    def build(self, variant):
        trainee = super().build(variant)
        inner, model = trainee.loss, trainee.model

        def loss(batch):
            self.first.setdefault(variant.label, [p.detach().clone() for p in model.parameters()])
            self.seen.setdefault(variant.label, []).append(batch[1].clone())
            if self.ticks is not None:
                self.ticks[0] += 1.0  # one fake second per training step
            return inner(batch)
        trainee.loss = loss
        return trainee

    def batches(self, epoch, generator):
        for batch in super().batches(epoch, generator):
            if self.ticks is not None:
                self.ticks[0] += 1000.0  # data preparation: must not reach the training clock
            yield batch

    def evaluate(self, model):
        self.evaluations += 1
        if self.interrupt_at is not None and self.evaluations == self.interrupt_at:
            raise KeyboardInterrupt
        if self.ticks is not None:
            self.ticks[0] += 100.0  # evaluation: must not reach the training clock
        score = super().evaluate(model)
        is_target = any(isinstance(m, torch.nn.Linear) and type(m).__name__ == "MepropLinear" for m in model.modules())
        return math.nan if self.nan_for and is_target else score


class Collect:
    def __init__(self):
        self.records = []

    def write(self, record):
        json.dumps(record, allow_nan=False)
        self.records.append(record)


def _config(**changes):
    settings = {"max_steps": 40, "eval_every": 10, "target": Target(absolute=50.0), "seed": 0, "warmup": 0}
    return RunConfig(**{**settings, **changes})


def test_same_start_and_same_data_order():
    spy = Spy()
    converge(spy, VARIANTS, _config(), say=lambda *_: None)
    dense = spy.first["dense"]
    for label in ("meProp k=4", "meProp k=4 lazy"):
        assert all(torch.equal(a, b) for a, b in zip(dense, spy.first[label]))
        assert len(spy.seen[label]) == len(spy.seen["dense"]) == 40
        assert all(torch.equal(a, b) for a, b in zip(spy.seen["dense"], spy.seen[label]))
    # 200 examples / batch 10 = 20 steps per epoch: the second epoch is reshuffled
    assert not all(torch.equal(a, b) for a, b in zip(spy.seen["dense"][:20], spy.seen["dense"][20:]))


def test_clock_counts_training_steps_only(monkeypatch):
    ticks = [0.0]
    monkeypatch.setattr(convergence, "Stopwatch", lambda device: Stopwatch(device, clock=lambda: ticks[0]))
    writer = Collect()
    converge(Spy(ticks=ticks), VARIANTS[:2], _config(), writer=writer, say=lambda *_: None)
    for record in writer.records:
        assert record["train_time_s"] == pytest.approx(record["step"] * 1.0)  # no eval, no data time
        assert record["block_time_s"] == pytest.approx(10.0)
    assert [r["step"] for r in writer.records if r["label"] == "dense"] == [10, 20, 30, 40]
    assert writer.records[0]["examples"] == 100


def _file_run(path, workload, resume):
    with ResultsWriter(path, resume=resume) as writer:
        converge(workload, VARIANTS[:2], _config(), writer=writer, state_dir=path.parent / ".state",
                 resume=resume, say=lambda *_: None)


def test_resume_loses_no_evaluation_and_continues_the_same_run(tmp_path):
    reference = Collect()
    converge(Spy(), VARIANTS[:2], _config(), writer=reference, say=lambda *_: None)
    path = tmp_path / "results.jsonl"
    with pytest.raises(KeyboardInterrupt):  # the 5th evaluation is the first of round 3
        _file_run(path, Spy(interrupt_at=5), resume=False)
    finished = [r for r in read_records(path) if r["type"] == "convergence"]
    assert [(r["label"], r["step"]) for r in finished] == [("dense", 10), ("meProp k=4", 10),
                                                          ("dense", 20), ("meProp k=4", 20)]
    _file_run(path, Spy(), resume=True)
    records = [r for r in read_records(path) if r["type"] == "convergence"]
    assert [(r["label"], r["step"]) for r in records] == [(r["label"], r["step"]) for r in reference.records]
    for got, want in zip(records, reference.records):  # same weights, same data: same metrics
        assert got["dev_metric"] == want["dev_metric"]
        assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-6)
    before = len(read_records(path))
    _file_run(path, Spy(), resume=True)  # finished: nothing more is trained or written
    assert len([r for r in read_records(path) if r["type"] == "convergence"]) == len(records)
    assert len(read_records(path)) == before


def test_target_never_reached_is_an_outcome():
    writer = Collect()
    converge(Spy(), VARIANTS[:2], _config(target=Target(absolute=101.0)), writer=writer, say=lambda *_: None)
    rows = outcomes(writer.records)
    assert [o.status for o in rows] == ["not reached", "not reached"]
    assert all(o.time_s is None and o.ratio is None and o.best is not None for o in rows)
    assert "< target 101" in rows[1].reason


def test_nan_evaluation_stops_that_variant_only():
    writer, said = Collect(), []
    converge(Spy(nan_for=True), VARIANTS[:2], _config(), writer=writer, say=said.append)
    meprop_rows = [r for r in writer.records if r["label"] == "meProp k=4"]
    assert len(meprop_rows) == 1 and meprop_rows[0]["status"] == "diverged" and meprop_rows[0]["dev_metric"] is None
    assert "nan" in meprop_rows[0]["reason"]
    assert [r["step"] for r in writer.records if r["label"] == "dense"] == [10, 20, 30, 40]
    assert outcomes(writer.records)[1].status == "diverged"
    assert any("diverged" in line for line in said)


def test_variants_that_cannot_share_the_start_are_refused():
    class Other(Spy):
        def build(self, variant):
            trainee = super().build(variant)
            if variant.k is not None:
                trainee.model.extra = torch.nn.Linear(2, 2)
            return trainee
    with pytest.raises(ConvergenceError, match="cannot start from the first variant's weights"):
        converge(Other(), VARIANTS[:2], _config(), say=lambda *_: None)
    with pytest.raises(ConvergenceError, match="distinct labels"):
        converge(Spy(), (Variant("a"), Variant("a", k=2)), _config(), say=lambda *_: None)


_GOOD = """
import torch
def make():
    torch.manual_seed(0)
    x = torch.randn(64, 6); y = (x[:, 0] > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    batches = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 64, 8)]
    return model, batches, lambda m: float((m(x).argmax(-1) == y).float().mean() * 100)
def wrong_count():
    return torch.nn.Linear(2, 2), []
def not_a_model():
    return "model", [], lambda m: 0.0
def bad_batch():
    return torch.nn.Linear(2, 2), [torch.zeros(2)], lambda m: 0.0
"""


@pytest.mark.parametrize("factory, message", [
    ("wrong_count", "must return (model, train_batches, evaluate)"),
    ("not_a_model", "must be an nn.Module, got str"),
    ("bad_batch", "each training batch must be (inputs, target)"),
    ("missing", "has no callable 'missing'"),
])
def test_bad_user_factory_is_a_message_and_a_recorded_outcome(tmp_path, capsys, factory, message):
    (tmp_path / "user_conv.py").write_text(_GOOD)
    out = tmp_path / "out"
    code = main(["converge", "--model", f"{tmp_path / 'user_conv.py'}:{factory}", "--k", "4",
                 "--max-steps", "8", "--out", str(out)])
    assert code == 2
    assert message in capsys.readouterr().err
    if factory != "missing":  # import-time problems fail before the run opens its file
        failed = [r for r in read_records(out / "results.jsonl") if r["type"] == "convergence"]
        assert failed[-1]["status"] == "failed" and message in failed[-1]["reason"]


def test_user_model_runs_through_the_cli(tmp_path, capsys):
    (tmp_path / "user_conv.py").write_text(_GOOD)
    out = tmp_path / "out"
    code = main(["converge", "--model", f"{tmp_path / 'user_conv.py'}:make", "--k", "4", "--mode", "unified",
                 "--max-steps", "16", "--eval-every", "8", "--target", "60", "--warmup", "2", "--out", str(out)])
    assert code == 0
    records = [r for r in read_records(out / "results.jsonl") if r["type"] == "convergence"]
    labels = {r["label"] for r in records}
    assert labels == {"dense", "top-k k=4 (lazy)".replace("top-k", "unified"), "unified k=4 (exact)"}
    assert all(r["status"] == "ok" and 0 <= r["dev_metric"] <= 100 for r in records)
    assert len(runs_of(records)) == 1
    assert ": target 60" in capsys.readouterr().out


def test_steps_repeat_epochs_in_order():
    spy = Spy()
    converge(spy, VARIANTS[:1], _config(max_steps=45, eval_every=15), say=lambda *_: None)
    seen = spy.seen["dense"]
    assert len(seen) == 45
    assert sum(len(t) for t in itertools.islice(seen, 20)) == 200  # one epoch covers the data once
