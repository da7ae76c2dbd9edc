"""meprop converge over seeds: paired seeds, statistics with censoring, the lr grid, the fastest dense
optimizer, resume checks, and the one-line refusals and recorded outcomes of bad input and faults."""

import gzip
import math

import pytest
import torch

from meprop.lab.cli import main
from meprop.lab.converge.loop import ConvergenceError, RunConfig, Variant, converge
from meprop.lab.converge.optimizers import implementation, make_optimizer
from meprop.lab.converge.paper_workload import PaperWorkload
from meprop.lab.converge.study import summarize
from meprop.lab.converge.time_to_target import Target, outcomes
from meprop.lab.paper.data import make_synthetic
from meprop.lab.paper.train import TrainConfig
from meprop.lab.results import schema, stats

from test_converge_faults import _FACTORIES, cli, convergence

@pytest.fixture
def factories(tmp_path):
    path = tmp_path / "conv_models.py"
    path.write_text(_FACTORIES)
    return str(path)


# ----------------------------------------------------------------------------- statistics
def test_censored_median_interval_and_paired_ratio():
    inf = math.inf
    assert stats.median_censored([3.0, 1.0, inf]) == 3.0
    assert stats.median_censored([1.0, 2.0, inf, inf]) == 2.0  # reached on half: the lower middle
    assert stats.median_censored([1.0, inf, inf]) == inf
    assert stats.median_censored([1.0, 3.0]) == 2.0
    assert (stats.paired_ratio(8.0, 4.0), stats.paired_ratio(8.0, inf), stats.paired_ratio(inf, 2.0)) == (2.0, 0.0, inf)
    assert math.isnan(stats.paired_ratio(inf, inf))
    low, high = stats.median_interval([1.0, 2.0, 3.0, 4.0, inf])
    assert low <= stats.median_censored([1.0, 2.0, 3.0, 4.0, inf]) <= high and math.isfinite(low)
    assert stats.median_interval([1.0]) is None
    summary = stats.over_seeds([1.0, inf, math.nan, 2.0])
    assert (summary["n"], summary["finite"]) == (3, 2)  # NaN (no pair) left out; the censored one kept


def seed_rec(seed, label, seconds, metric, k=None, lr=1e-3, status="ok", step=100):
    return schema.convergence_record(
        "r", key=f"s/seed{seed}/{label}{lr}/{step}", run_key=f"s/seed{seed}", study="s", seed=seed, label=f"{label} {lr}",
        arm=label, lr=lr, step=step, train_time_s=seconds, dev_metric=metric, method="dense" if k is None else "meprop",
        k=k, status=status, target=Target(absolute=90.0).to_dict(), optimizer_impl="x")


def test_summary_pairs_seeds_counts_diverged_as_censored_and_tunes_each_arm():
    records = []
    for seed in (1, 2, 3):
        records += [seed_rec(seed, "dense", 8.0, 95.0), seed_rec(seed, "dense", 4.0, 95.0, lr=3e-3)]
        records += [seed_rec(seed, "mp", 2.0 * seed, 92.0, k=4), seed_rec(seed, "mp", 1.0, 50.0, k=4, lr=3e-3)]
    records[-2] = seed_rec(3, "mp", 2.0, None, k=4, status="diverged")
    summary, = summarize(records)
    dense, mp = summary.arms[0]
    assert (dense.lr, mp.lr) == (3e-3, 1e-3)  # each arm tuned separately
    assert (mp.reached, mp.diverged, mp.seeds) == (2, 1, 3)
    assert mp.reached_text() == "reached on 2 of 3 seeds, 1 diverged"
    assert mp.speedup["median"] == pytest.approx(1.0)  # per seed 4/2, 4/4, 0 (diverged: censored)
    assert mp.speedup["n"] == 3 and mp.speedup["finite"] == 3


def test_fraction_target_of_a_negative_metric_is_below_the_best():
    assert Target(fraction=0.99).threshold(-2.0) == pytest.approx(-2.02)
    assert Target(fraction=0.99).threshold(50.0) == pytest.approx(49.5)
    rec = [schema.convergence_record("r", key=f"a/{i}", run_key="a", label="dense", step=i, train_time_s=i,
                                     dev_metric=-3.0 + i, method="dense", status="ok",
                                     target=Target(fraction=0.99).to_dict()) for i in (1, 2)]
    assert outcomes(rec)[0].status == "reached"


# ----------------------------------------------------------------------------- seeds, optimizers
class Spy(PaperWorkload):
    def __init__(self):
        super().__init__("synthetic", TrainConfig("synthetic", hidden=16, batch=10, limit=200, seed=0),
                         lambda: make_synthetic(200, 100, seed=0))
        self.first, self.seen = {}, {}

    def build(self, variant):
        trainee = super().build(variant)
        inner, model, key = trainee.loss, trainee.model, variant.label

        def loss(batch):
            self.first.setdefault(key, [p.detach().clone() for p in model.parameters()])
            self.seen.setdefault(key, []).append(batch[1].clone())
            return inner(batch)
        trainee.loss = loss
        return trainee


def test_each_seed_changes_init_and_order_and_arms_share_them_within_a_seed():
    runs = {}
    for seed in (1, 2):
        spy = Spy()
        config = RunConfig(max_steps=10, eval_every=10, target=Target(absolute=50.0), seed=seed, warmup=0)
        converge(spy, (Variant("dense"), Variant("mp", k=4)), config, say=lambda *_: None)
        assert all(torch.equal(a, b) for a, b in zip(spy.first["dense"], spy.first["mp"]))
        assert all(torch.equal(a, b) for a, b in zip(spy.seen["dense"], spy.seen["mp"]))
        runs[seed] = spy
    assert not torch.equal(runs[1].first["dense"][0], runs[2].first["dense"][0])
    assert not all(torch.equal(a, b) for a, b in zip(runs[1].seen["dense"], runs[2].seen["dense"]))


def test_dense_gets_the_fused_adam_and_meprop_exact_steps_the_same_with_it():
    assert implementation("adam") == "fused"  # torch >= 2.4 on CPU
    from meprop.lab.ops.models import MLP

    models = []
    for how in ("fused", "foreach"):
        torch.manual_seed(0)
        model = MLP(12, 32, 2, 3, k=4)
        optimizer, name = make_optimizer("adam", model.parameters(), 1e-2, how=how)
        assert name == f"torch.optim.Adam({how})"
        gen = torch.Generator().manual_seed(1)
        for _ in range(5):
            x, y = torch.randn(8, 12, generator=gen), torch.randint(0, 3, (8,), generator=gen)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            optimizer.zero_grad()
        models.append(model)
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_records_carry_seed_lr_arm_and_implementation(factories, tmp_path):
    out = tmp_path / "o"
    assert cli(factories, "make", out, "--seeds", "2", "--lr-grid", "0.001,0.01") == 0
    records = convergence(out)
    assert {r["seed"] for r in records} == {1, 2}
    assert {(r["arm"], r["lr"]) for r in records} == {(a, lr) for a in ("dense", "top-k k=4 (lazy)")
                                                      for lr in (0.001, 0.01)}
    impl = {r["arm"]: r["optimizer_impl"] for r in records}
    assert impl == {"dense": "torch.optim.Adam(fused)", "top-k k=4 (lazy)": "meprop.optim.Adam(lazy=True)"}
    assert len({r["study"] for r in records}) == 1 and len({r["run_key"] for r in records}) == 2


def test_runs_of_other_variants_pair_by_seed_in_one_study(factories, tmp_path):
    """A study split over processes (other variants, e.g. ``--only`` runs, each to its own
    --out): read together, its runs share the study, every arm pairs with dense by seed, and
    dense, in both runs, counts once per seed."""
    assert cli(factories, "make", tmp_path / "a", "--seeds", "2") == 0
    assert cli(factories, "make", tmp_path / "b", "--seeds", "2", "--mode", "unified") == 0
    records = convergence(tmp_path / "a") + convergence(tmp_path / "b")
    assert len({r["study"] for r in records}) == 1 and len({r["run_key"] for r in records}) == 4
    summary, = summarize(records)
    dense, *arms = summary.arms[0]
    assert [a.arm for a in arms] == ["top-k k=4 (lazy)", "unified k=4 (lazy)"]
    assert (dense.seeds, [a.seeds for a in arms]) == (2, [2, 2])
    assert [o.seed for o in dense.per_seed] == [1, 2]
    in_b = {r["run_key"] for r in convergence(tmp_path / "b")}
    older = [dict(r, study=r["study"] + "-variants") if r["run_key"] in in_b else r for r in records]
    assert len(summarize(older)) == 1  # a file written when the key named the variants joins too


def test_summarize_prints_the_table_of_runs_on_disk_and_trains_nothing(factories, tmp_path, capsys):
    """``--summarize`` reads several runs (one of them archived, as studies/ keeps them) into
    the table the run printed, pairing by seed; no records, or no file, is one line."""
    assert cli(factories, "make", tmp_path / "a", "--seeds", "2") == 0
    assert cli(factories, "make", tmp_path / "b", "--seeds", "2", "--mode", "unified") == 0
    plain = tmp_path / "a" / "results.jsonl"
    plain.with_name("results.jsonl.gz").write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()
    sizes = sorted((p, p.stat().st_size) for p in tmp_path.rglob("*") if p.is_file())
    capsys.readouterr()
    assert main(["converge", "--summarize", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    table = capsys.readouterr().out
    assert "(2 seeds," in table and "top-k k=4 (lazy)" in table and "unified k=4 (lazy)" in table
    assert "reached on" in table
    assert sorted((p, p.stat().st_size) for p in tmp_path.rglob("*") if p.is_file()) == sizes  # nothing written
    assert main(["converge", "--summarize", str(tmp_path / "nothing")]) == 2
    assert "results file not found" in capsys.readouterr().err
    (tmp_path / "empty.jsonl").write_text("")
    assert main(["converge", "--summarize", str(tmp_path / "empty.jsonl")]) == 2
    assert "no time-to-accuracy records" in capsys.readouterr().err


def test_remedy_variants_are_refused_by_a_workload_without_them():
    class Plain(Spy):
        supports = frozenset()
    with pytest.raises(ConvergenceError, match="does not support"):
        converge(Plain(), (Variant("dense"), Variant("mp", k=4, schedule="warmup:2")),
                 RunConfig(max_steps=2, eval_every=2, target=Target(absolute=1.0), warmup=0), say=lambda *_: None)


def test_list_presets_names_the_width_map(capsys):
    assert main(["converge", "--list-presets"]) == 0
    text = capsys.readouterr().out
    assert "mnist-width:" in text and "h4096-b64" in text


def test_an_unknown_cell_is_refused_naming_the_cells(tmp_path, capsys):
    assert main(["converge", "--preset", "mnist-width", "--quick", "--cell", "h9-b1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--cell ['h9-b1']" in err and "h128-b64" in err
