"""Remedy variants of ``meprop converge``: the layers they build, the k per step under a schedule,
resume, bad specs, the ranking over seeds, and one tiny run with each remedy."""

import pytest
import torch

import meprop
from meprop.error_feedback import ErrorFeedback
from meprop.lab.cli import main
from meprop.lab.converge import remedies
from meprop.lab.converge.loop import ConvergenceError, RunConfig, Variant, converge
from meprop.lab.converge.paper_workload import PaperWorkload
from meprop.lab.converge.presets import CONVERGENCE_PRESETS, VariantChoice, sweep_variants, with_remedies
from meprop.lab.converge.run import format_summary
from meprop.lab.converge.study import ArmSummary, StudySummary, held_back, ranked, summarize
from meprop.lab.converge.time_to_target import Target
from meprop.lab.ops.models import PosTagger
from meprop.lab.paper.data import make_synthetic
from meprop.lab.paper.train import TrainConfig
from meprop.lab.report.sections.convergence import ranking_table
from meprop.lab.results.store import ResultsWriter, read_records

K, HIDDEN = 4, 16


class Synthetic(PaperWorkload):
    """The synthetic task; logs the hidden layers' k seen by every training step, per variant."""

    def __init__(self, interrupt_at=None):
        config = TrainConfig("synthetic", hidden=HIDDEN, batch=10, limit=200, seed=0)
        super().__init__("synthetic", config, lambda: make_synthetic(200, 100, seed=0))
        self.ks, self.interrupt_at, self.evaluations = {}, interrupt_at, 0

    def build(self, variant):
        trainee = super().build(variant)
        inner, model = trainee.loss, trainee.model

        def loss(batch):
            layers = [m for m in model.modules() if isinstance(m, meprop.MepropLinear)]
            self.ks.setdefault(variant.label, []).append(layers[0].k if layers else None)
            return inner(batch)
        trainee.loss = loss
        return trainee

    def evaluate(self, model):
        self.evaluations += 1
        if self.interrupt_at is not None and self.evaluations == self.interrupt_at:
            raise KeyboardInterrupt
        return super().evaluate(model)


def _config(**changes):
    settings = {"max_steps": 20, "eval_every": 5, "target": Target(absolute=50.0), "seed": 3, "warmup": 0}
    return RunConfig(**{**settings, **changes})


EACH = (Variant("dense"), Variant("top-k", k=K, optimizer_mode="lazy"),
        Variant("sampled", k=K, mode="sampled"), Variant("sampled_unified", k=K, mode="sampled_unified"),
        Variant("random", k=K, mode="random"), Variant("unified", k=K, mode="unified"),
        Variant("warm-up", k=K, schedule="warmup:6"), Variant("ramp", k=K, schedule="linear:12:8:3"),
        Variant("EF", k=K, error_feedback=0.9, optimizer_mode="lazy"),
        Variant("combined", k=K, mode="sampled", schedule="warmup:4", error_feedback=1.0))


def test_variants_build_their_layers_and_follow_the_schedule_step_by_step():
    workload = Synthetic()
    runs = converge(workload, EACH, _config(), say=lambda *_: None)
    for label, run in runs.items():
        variant, model = run.variant, run.trainee.model
        layers = [m for m in model.modules() if isinstance(m, meprop.MepropLinear)]
        assert len(layers) == (0 if variant.k is None else 2) and run.step == 20 and run.status == "ok"
        assert all(m.mode == variant.mode for m in layers)
        feedback = [m for m in model.modules() if isinstance(m, ErrorFeedback)]
        assert len(feedback) == (2 if variant.error_feedback is not None else 0)
        assert all(f.decay == variant.error_feedback and f.memory.abs().sum() > 0 for f in feedback)
        drawn = variant.mode in ("sampled", "sampled_unified", "random")
        generators = {id(m.generator) for m in layers if m.generator is not None}
        assert len(generators) == (1 if drawn else 0), label
    assert workload.ks["top-k"] == [K] * 20
    assert workload.ks["warm-up"] == [HIDDEN] * 6 + [K] * 14  # dense steps: k = the width
    assert workload.ks["ramp"] == [12] * 4 + [8] * 4 + [4] * 12  # 3 levels over 8 steps
    assert workload.ks["combined"] == [HIDDEN] * 4 + [K] * 16


def test_sampled_runs_draw_from_a_generator_of_the_seed_and_reproduce():
    def final(seed):
        runs = converge(Synthetic(), (Variant("dense"), Variant("s", k=K, mode="sampled")),
                        _config(max_steps=10, seed=seed), say=lambda *_: None)
        assert runs["s"].trainee.remedies.generator.initial_seed() == seed + remedies.GENERATOR_OFFSET
        return runs["s"].trainee.model.state_dict()["net.0.weight"].clone()
    assert torch.equal(final(3), final(3))


def _file_run(path, workload, variants, resume):
    with ResultsWriter(path, resume=resume) as writer:
        return converge(workload, variants, _config(), writer=writer, state_dir=path.parent / ".state",
                        resume=resume, say=lambda *_: None)


def test_a_resumed_run_continues_its_schedule_and_sampling_at_its_step(tmp_path):
    variants = (Variant("dense"), Variant("ramp", k=K, mode="sampled", schedule="warmup:3,linear:12:10",
                                          error_feedback=0.5))
    straight = Synthetic()
    reference = converge(straight, variants, _config(), say=lambda *_: None)
    path = tmp_path / "results.jsonl"
    with pytest.raises(KeyboardInterrupt):  # the 3rd evaluation: the first of round 2 (state saved at step 5)
        _file_run(path, Synthetic(interrupt_at=3), variants, resume=False)
    resumed = Synthetic()
    runs = _file_run(path, resumed, variants, resume=True)
    assert resumed.ks["ramp"] == straight.ks["ramp"][5:]  # continues at step 5 of its schedule
    assert runs["ramp"].trainee.remedies.state_dict()["schedule"] == {"step": 20}
    for name, value in reference["ramp"].trainee.model.state_dict().items():
        torch.testing.assert_close(runs["ramp"].trainee.model.state_dict()[name], value, rtol=0, atol=0)


@pytest.mark.parametrize("option, value, message", [
    ("--schedule", "ramp:5", "--schedule 'ramp:5': schedule spec 'ramp:5' not understood; accepted:"),
    ("--schedule", "linear:x:3", "--schedule 'linear:x:3': schedule spec"),
    ("--error-feedback", "0", "--error-feedback must be a decay in (0, 1]"),
    ("--error-feedback", "1.5", "--error-feedback must be a decay in (0, 1]"),
    ("--error-feedback", "nan", "--error-feedback must be a decay in (0, 1]"),
])
def test_bad_remedy_options_are_refused_in_one_line(tmp_path, capsys, option, value, message):
    code = main(["converge", "--preset", "mnist-adam", "--quick", option, value, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


def test_error_feedback_on_the_tagger_fills_each_lstm_projection_and_sampling_gets_a_generator():
    tagger = PosTagger(20, 5, embed=8, hidden=4, k=2, mode="sampled")
    remedies.apply(tagger, Variant("ef", k=2, mode="sampled", error_feedback=0.5), seed=1)
    assert tagger.lstm.error_feedback_ih.decay == 0.5 and tagger.lstm.error_feedback_hh.memory.shape == (16,)
    applied = remedies.apply(tagger, Variant("s", k=2, mode="sampled", schedule="warmup:2"), seed=1)
    assert tagger.lstm.generator is applied.generator and applied.k == [None]
    applied.step(), applied.step()
    assert applied.k == [2] and tagger.lstm.k == 2


def test_a_schedule_past_the_width_fails_naming_the_option():
    with pytest.raises(ConvergenceError, match="--schedule 'linear:99:4'.*k=99"):
        converge(Synthetic(), (Variant("dense"), Variant("r", k=K, schedule="linear:99:4")), _config(),
                 say=lambda *_: None)


def test_cli_combines_modes_schedules_and_error_feedback():
    variants = with_remedies((Variant("dense"), Variant("s", k=4, mode="sampled")), ("warmup:9",), (0.5,))
    assert [(v.label, v.schedule, v.error_feedback) for v in variants] == [
        ("dense", None, None), ("s", None, None), ("s +EF 0.5", None, 0.5),
        ("s +schedule warmup:9", "warmup:9", None), ("s +schedule warmup:9 +EF 0.5", "warmup:9", 0.5)]
    arms = CONVERGENCE_PRESETS["mnist-remedies"].variant_list(False)
    assert arms[0].k is None and {v.mode for v in arms} == {"per_example", "sampled", "unified"}
    assert {v.schedule for v in arms} == {None, "warmup:3000"} and {v.error_feedback for v in arms} == {None, 1.0}
    assert all(v.k == 20 and v.optimizer_mode == "lazy" for v in arms[1:])


def _arm(name, reached, seeds=5, speedup=None, step=None, steps=None, method="meprop"):
    def stats(median, low=None, high=None):
        return {"median": median, "low": low, "high": high, "n": seeds, "finite": reached}
    time = stats(1.0 if reached * 2 >= seeds else float("inf"))
    return ArmSummary(name, method, None if method == "dense" else 20, "per_example", "lazy", "x", 1e-3, seeds,
                      reached, 0, 0, time, stats(1.0), 97.0, None if speedup is None else stats(*speedup),
                      None if step is None else stats(step), None if steps is None else stats(steps))


def test_ranking_orders_by_speedup_censored_last_and_names_what_holds_back():
    arms = [_arm("dense", 5, method="dense"), _arm("missed", 1, speedup=(0.0, 0.0, 0.5), step=0.9, steps=0.0),
            _arm("slow steps", 5, speedup=(0.6, 0.5, 0.7), step=1.2, steps=0.5),
            _arm("fast", 5, speedup=(1.8, 1.6, 2.0), step=1.9, steps=0.95),
            _arm("even", 4, speedup=(1.0, 0.9, 1.1), step=1.0, steps=1.0),
            _arm("slow step", 5, speedup=(0.8, 0.7, 0.9), step=0.8, steps=1.0)]
    summary = StudySummary("s", "mnist-remedies", "w", "m", {}, [1, 2, 3, 4, 5], [Target(absolute=97.5)],
                           [97.5], [arms], {}, 1000)
    assert [a.arm for a in ranked(summary)] == ["fast", "even", "slow step", "slow steps", "missed"]
    assert held_back(arms[0]) == "" and held_back(arms[3]) == ""
    assert held_back(arms[1]) == "steps (target missed on 4 of 5 seeds) and step time (x0.90)"
    assert held_back(arms[2]) == "steps (x0.50)" and held_back(arms[5]) == "step time (x0.80)"
    assert held_back(arms[3], bar=2.0) == "steps (x0.95)"
    table = ranking_table([summary])
    assert list(table["arm"]) == ["fast", "even", "slow step", "slow steps", "missed"]
    assert list(table["verdict"])[:2] == ["meProp sooner", "no difference shown"]
    assert list(table["censored"]) == [0, 1, 0, 0, 4]


def test_each_remedy_runs_end_to_end_into_the_summary(tmp_path):
    path = tmp_path / "results.jsonl"
    with ResultsWriter(path) as writer:
        converge(Synthetic(), EACH, _config(max_steps=10, study="remedies"), writer=writer, say=lambda *_: None)
    records = [r for r in read_records(path) if r["type"] == "convergence"]
    assert {r["label"] for r in records} == {v.label for v in EACH} and all(r["status"] == "ok" for r in records)
    assert {(r["label"], r["schedule"], r["error_feedback"]) for r in records if r["label"] == "combined"} == {
        ("combined", "warmup:4", 1.0)}
    text = format_summary(summarize(records))
    assert all(v.label in text for v in EACH) and "held back by" in text


def test_remedies_and_only_apply_to_every_cell_of_a_width_map():
    preset = CONVERGENCE_PRESETS["mnist-width"]
    choice = VariantChoice(decays=(1.0,), only=("top-k k=5 (lazy) +EF 1", "top-k k=20 (lazy) +EF 1"))
    cells = preset.cells(True, choice)
    assert [c.name for c in cells] == ["h128-b64", "h512-b64"]
    assert [[(v.label, v.k, v.error_feedback) for v in c.variants] for c in cells] == [
        [("dense", None, None), ("top-k k=5 (lazy) +EF 1", 5, 1.0)],
        [("dense", None, None), ("top-k k=20 (lazy) +EF 1", 20, 1.0)]]
    with pytest.raises(ValueError, match=r"--only \['top-k k=7'\]: no such variant; accepted: \['dense', "):
        preset.cells(True, VariantChoice(only=("top-k k=7",)))
    swept = preset.cells(True, VariantChoice(sweep=sweep_variants((3,), ("per_example",), ("lazy",))))
    assert all([v.label for v in c.variants] == ["dense", "top-k k=3 (lazy)"] for c in swept)


def test_the_report_s_quick_mnist_plan_sets_the_remedy_beside_plain_top_k_with_one_optimizer():
    """make report's "Does it pay off?" shows the steps penalty and its remedy side by side:
    the quick mnist-adam plan holds top-k with and without error feedback, on the same
    optimizer and k, so the two arms differ in the remedy alone."""
    quick = CONVERGENCE_PRESETS["mnist-adam"].variant_list(True)
    plain = [v for v in quick if v.k is not None and v.error_feedback is None]
    fed = [v for v in quick if v.error_feedback is not None]
    assert quick[0].k is None and len(plain) == 1 and len(fed) == 1
    assert (fed[0].k, fed[0].mode, fed[0].optimizer_mode) == (plain[0].k, plain[0].mode, plain[0].optimizer_mode)
    full = CONVERGENCE_PRESETS["mnist-adam"].variant_list(False)
    assert all(v.error_feedback is None for v in full)  # the full preset is the paper's Table 1 pair
