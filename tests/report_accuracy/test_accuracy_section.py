"""Accuracy section of the report: tables next to the paper's, figures, protocol, bad input."""

import pandas as pd
import pytest

from meprop.lab.paper.train import TrainConfig, train
from meprop.lab.report.sections.accuracy import build_accuracy_section, runs_frame, summary_table

pytestmark = pytest.mark.slow  # the module's fixture trains models


@pytest.fixture(scope="module")
def records():
    out = []
    runs = [("dense", None, "per_example"), ("top-k k=4", 4, "per_example"), ("random k=4", 4, "random"),
            ("top-k k=8", 8, "per_example")]
    for label, k, mode in runs:
        config = TrainConfig("synthetic", k=k, mode=mode, hidden=16, epochs=2, limit=100, seed=0)
        out += train(config, preset="synthetic-k-sweep", label=label, run_id="r1", progress=False).records
    return out


def test_section_from_flattened_records(records, tmp_path):
    frame = pd.json_normalize(records)
    fragment = build_accuracy_section(frame, tmp_path)
    assert "Accuracy (our Table 1/3/4" in fragment and "random k=4" in fragment
    for name in ("accuracy_vs_k_synthetic-k-sweep", "dev_curves_synthetic-k-sweep", "time_per_epoch"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 0
        assert (tmp_path / "figures" / f"{name}.svg").is_file()
    table = pd.read_csv(tmp_path / "tables" / "accuracy.csv")
    assert sorted(table["run"]) == sorted(["dense", "top-k k=4", "random k=4", "top-k k=8"])
    for _, row in table.iterrows():  # test score at the best-dev epoch of that run
        run = [r for r in records if r["label"] == row["run"]]
        best = max(run, key=lambda r: (r["dev_score"], -r["epoch"]))
        assert row["best epoch"] == best["epoch"]
        assert row["test at best"] == pytest.approx(round(best["test_score"], 2))
    assert (tmp_path / "tables" / "train_time.md").read_text().startswith("| preset")


def test_paper_numbers_beside_ours_and_latest_run_wins(records):
    frame = pd.json_normalize(records)
    mnist = frame[frame["label"] == "dense"].assign(preset="mnist-adam")
    older = mnist.assign(run_id="r0", dev_score=0.0)
    runs = runs_frame(pd.concat([older, mnist]))
    assert set(runs["run_id"]) == {"r1"}  # the re-run replaces the earlier one
    row = summary_table(runs).iloc[0]
    assert (row["paper test"], row["paper iterations"]) == (97.82, 17)


def test_lazy_and_exact_optimizer_modes_are_rows_side_by_side(records):
    frame = pd.json_normalize([r for r in records if r["label"] == "top-k k=4"])
    assert set(frame["config.optimizer_mode"]) == {"exact"}
    lazy = frame.assign(**{"config.optimizer_mode": "lazy", "label": "top-k k=4 (lazy)",
                           "run_key": frame["run_key"] + "-lazy", "test_score": 33.0})
    older = frame.drop(columns=["config.optimizer_mode"]).assign(  # a record from before the option
        label="top-k k=4 (old)", run_key=frame["run_key"] + "-old")
    table = summary_table(runs_frame(pd.concat([frame, lazy, older]))).set_index("run")
    assert table.loc["top-k k=4", "optimizer mode"] == "exact"
    assert table.loc["top-k k=4 (lazy)", "optimizer mode"] == "lazy"
    assert table.loc["top-k k=4 (lazy)", "test at best"] == 33.0
    assert table.loc["top-k k=4 (old)", "optimizer mode"] == "exact"


def test_two_seeds_are_two_rows(records):
    frame = pd.json_normalize([r for r in records if r["label"] == "dense"])
    seed2 = frame.assign(**{"config.seed": 2, "run_key": frame["run_key"] + "-seed2",
                            "dev_score": frame["dev_score"] - 5.0, "test_score": 12.5})
    table = summary_table(runs_frame(pd.concat([frame, seed2])))
    assert list(zip(table["run"], table["seed"])) == [("dense", 0), ("dense", 2)]
    seed0 = table[table["seed"] == 0].iloc[0]  # each seed keeps its own best-dev epoch and test score
    best = max((r for r in records if r["label"] == "dense"), key=lambda r: (r["dev_score"], -r["epoch"]))
    assert seed0["test at best"] == pytest.approx(round(best["test_score"], 2))
    assert table[table["seed"] == 2].iloc[0]["test at best"] == 12.5


def test_bad_input(tmp_path):
    with pytest.raises(TypeError, match="pandas.DataFrame"):
        build_accuracy_section([{"epoch": 1}], tmp_path)
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['dev_score', 'test_score'\]"):
        build_accuracy_section(pd.DataFrame({"epoch": [1]}), tmp_path)
