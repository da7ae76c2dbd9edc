"""The headline leads with the training step per workload, then overall, then linear-only
backprop labelled as the kernel-level figure; each card quotes one representative cell with
its interval and sample count, and never a flagged one."""

from meprop.lab.report.build import build_report

from report_fixtures import bench_record, env_record, write_jsonl


def test_headline_cards_lead_with_the_training_step_per_workload(tmp_path):
    path = write_jsonl(tmp_path / "results.jsonl", [
        env_record("r1"),
        bench_record("r1", hidden=4096, batch=1, k=41, mode="per_example", dense_s=80e-3,
                     meprop_s=100e-3),  # linear-only backprop: 0.8x
        bench_record("r1", hidden=4096, batch=1, k=41, mode="per_example", workload="mlp",
                     measurement="overall_backward", dense_s=30e-3, meprop_s=3e-3, layers=2,
                     in_features=784),
        bench_record("r1", hidden=4096, batch=1, k=41, mode="per_example", workload="mlp",
                     measurement="train_step", dense_s=60e-3, meprop_s=7.5e-3, layers=2,
                     in_features=784),
        bench_record("r1", hidden=4096, batch=64, k=41, mode="per_example", workload="linear",
                     measurement="train_step", dense_s=20e-3, meprop_s=10e-3),
    ])
    report = build_report([path], tmp_path / "out")
    page = report.index.read_text()
    cards = page[page.index('class="headline"'):]
    order = [cards.index(text) for text in (
        "training step, linear", "training step, mlp", "overall backprop, mlp",
        "kernel-level: linear-only backprop, linear")]
    assert order == sorted(order)
    assert "8.0x" in cards and "2.0x" in cards  # the two training steps
    assert cards.count("7 samples") >= 4 and "95% CI" in cards
    linear_only = cards[cards.index("kernel-level: linear-only backprop, linear"):]
    assert linear_only.index("not quotable") < linear_only.index("</div></div>")  # 0.8x is no win
    row = report.headline.iloc[0]
    assert row["best train step speedup"] == 8.0 and "mlp n=4096" in row["train step at"]


def test_fused_adam_steps_get_their_own_card(tmp_path):
    step = dict(hidden=4096, batch=1, k=41, mode="per_example", workload="mlp",
                measurement="train_step", layers=2, in_features=784)
    path = write_jsonl(tmp_path / "results.jsonl", [
        env_record("r1"),
        bench_record("r1", **step, dense_s=60e-3, meprop_s=6e-3),
        bench_record("r1", **step, dense_s=30e-3, meprop_s=6e-3, adam="fused"),
    ])
    report = build_report([path], tmp_path / "out")
    cards = report.index.read_text()
    cards = cards[cards.index('class="headline"'):]
    plain = cards[cards.index("training step, mlp</b>"):]
    fused = cards[cards.index("training step, mlp vs fused Adam</b>"):]
    assert plain.index("10.0x") < plain.index("</div></div>")  # the default loop's 10x card
    assert fused.index("5.0x") < fused.index("</div></div>")  # the strongest baseline's 5x card
    table = (tmp_path / "out" / "tables" / "speedup_train_step.csv").read_text()
    assert "meProp optimizer,Adam" in table and ",fused," in table


def test_speedups_above_the_ideal_are_flagged_with_the_reason(tmp_path):
    from meprop.lab.report.frames import bench_frame
    from meprop.lab.report.tables import speedup_table

    records = [
        bench_record("r1", hidden=4096, batch=1, k=41, mode="per_example", dense_s=33.5e-3,
                     meprop_s=0.18e-3),  # 186x against an ideal of 99.9x
        bench_record("r1", hidden=4096, batch=64, k=41, mode="per_example", dense_s=10e-3,
                     meprop_s=1e-3),
    ]
    frame = bench_frame(records)
    assert frame["above_ideal"].tolist() == [True, False]
    table = speedup_table(frame, "linear_backward").set_index("batch")
    assert "above the ideal n/k" in table.loc[1, "note"] and "broken" in table.loc[1, "note"]
    assert table.loc[64, "note"] == ""
    path = write_jsonl(tmp_path / "results.jsonl", [env_record("r1"), *records])
    page = build_report([path], tmp_path / "out").index.read_text()
    assert "above the ideal n/k" in page


def test_step_tables_show_the_optimizer_the_phase_split_and_the_amdahl_limit(tmp_path):
    from meprop.lab.report.frames import bench_frame
    from meprop.lab.report.tables import speedup_table, step_phases_table

    records = []
    for optimizer, meprop_s in (("lazy", 7e-3), ("exact", 40e-3)):
        record = bench_record("r1", hidden=4096, batch=1, k=41, mode="per_example", workload="mlp",
                              measurement="train_step", dense_s=60e-3, meprop_s=meprop_s, layers=2,
                              in_features=784)
        record["case"]["optimizer"] = optimizer
        record["phases"] = {"dense": {"forward_s": 5e-3, "backward_s": 20e-3, "optimizer_s": 35e-3},
                            "meprop": {"forward_s": 5e-3, "backward_s": 1e-3, "optimizer_s": 1e-3}}
        record["amdahl_limit"] = 60e-3 / 6e-3
        records.append(record)
    frame = bench_frame(records)
    table = speedup_table(frame, "train_step")
    assert sorted(table["meProp optimizer"]) == ["exact", "lazy"]
    assert list(table["Amdahl limit"]) == [10.0, 10.0] and "ideal n/k" not in table
    phases = step_phases_table(frame)
    assert list(phases["meProp backward ms"]) == [1.0, 1.0] and list(phases["dense optimizer ms"]) == [35.0, 35.0]
    path = write_jsonl(tmp_path / "results.jsonl", [env_record("r1"), *records])
    page = build_report([path], tmp_path / "out").index.read_text()
    assert "Training step: where the time goes" in page and "Amdahl limit" in page


def _mlp_step(**fields):
    step = dict(mode="per_example", workload="mlp", measurement="train_step", layers=2, in_features=784)
    return bench_record("r1", **{**step, **fields})


def test_cards_quote_the_representative_cell_not_the_luckiest_one(tmp_path):
    from meprop.lab.report.frames import bench_frame
    from meprop.lab.report.headline import representative_table

    records = [
        env_record("r1"),
        _mlp_step(hidden=500, batch=10, k=20, dense_s=3e-3, meprop_s=2e-3),  # the paper's shape: 1.5x
        _mlp_step(hidden=4096, batch=1, k=41, dense_s=20e-3, meprop_s=1e-3, iqr_frac=0.2),  # noisy 20x
        _mlp_step(hidden=4096, batch=64, k=41, dense_s=40e-3, meprop_s=8e-3),  # a clean 5x
    ]
    reps = representative_table(bench_frame(records))
    row = reps.iloc[0]
    assert row["at"].startswith("mlp n=500 x2, batch 10, k=20") and row["speedup"] == 1.5 and row["quotable"]
    assert row["speedup low"] < 1.5 < row["speedup high"] and row["samples"] == 7
    assert row["best quotable speedup"] == 5.0  # the noisy 20x cell is never quoted
    cards = build_report([write_jsonl(tmp_path / "r.jsonl", records)], tmp_path / "out").index.read_text()
    cards = cards[cards.index('class="headline"'):]
    cards = cards[:cards.index('<p class="note">')]
    assert "1.5x" in cards and "best quotable cell: 5.0x" in cards and "20.0" not in cards


def test_a_flagged_representative_cell_is_shown_as_not_quotable_with_its_reason(tmp_path):
    from meprop.lab.report.frames import bench_frame
    from meprop.lab.report.headline import representative_table

    records = [  # the typical shape itself is noisy; 1.01x with a 2% IQR (7 samples) straddles 1.0
        _mlp_step(hidden=500, batch=10, k=20, dense_s=20e-3, meprop_s=1e-3, iqr_frac=0.3),
        bench_record("r1", hidden=4096, batch=64, k=41, mode="unified", dense_s=1.01e-3, meprop_s=1e-3),
    ]
    reps = representative_table(bench_frame(records)).set_index("measurement")
    step, linear = reps.loc["train_step"], reps.loc["linear_backward"]
    assert not step["quotable"] and "noisy" in step["flag"]
    assert not linear["quotable"] and linear["flag"] == "interval contains 1"
    assert linear["speedup low"] < 1 < linear["speedup high"]
    cards = build_report([write_jsonl(tmp_path / "r.jsonl", [env_record("r1"), *records])],
                         tmp_path / "out").index.read_text()
    cards = cards[cards.index('class="headline"'):]
    cards = cards[:cards.index('<p class="note">')]
    assert cards.count("not quotable") == 2 and "20.0" not in cards  # the noisy 20x is never quoted
    assert "interval contains 1, 95% CI 0." in cards


def test_the_workload_registry_says_which_cell_is_typical(monkeypatch):
    from meprop.lab.report.frames import bench_frame
    from meprop.lab.report.headline import representative_table
    from meprop.lab.workloads import REGISTRY

    frame = bench_frame([
        _mlp_step(hidden=500, batch=10, k=20, dense_s=3e-3, meprop_s=2e-3),
        _mlp_step(hidden=4096, batch=64, k=41, dense_s=40e-3, meprop_s=8e-3),
        bench_record("r1", hidden=4096, batch=64, k=41, mode="per_example", workload="my.pkg:model",
                     measurement="train_step", dense_s=4e-3, meprop_s=2e-3),
        bench_record("r1", hidden=4096, batch=1, k=41, mode="per_example", workload="my.pkg:model",
                     measurement="train_step", dense_s=4e-3, meprop_s=1e-3),
    ])
    picked = representative_table(frame).set_index("workload")
    assert picked.loc["mlp", "at"].startswith("mlp n=500 x2, batch 10")
    assert picked.loc["mlp", "typical"] == REGISTRY["mlp"].typical_shape["source"]
    # a name the registry does not know gets the default shape (batch 64, k/n 4%)
    assert picked.loc["my.pkg:model", "at"].startswith("my.pkg:model n=4096, batch 64")
    assert picked.loc["my.pkg:model", "typical"] == "batch 64, k/n 4%"
    monkeypatch.setattr(REGISTRY["mlp"], "typical_shape",
                        dict(hidden=4096, batch=64, k_ratio=0.01, source="a wide MLP"))
    picked = representative_table(frame).set_index("workload")
    assert picked.loc["mlp", "at"].startswith("mlp n=4096 x2, batch 64")
    assert picked.loc["mlp", "typical"] == "a wide MLP"
