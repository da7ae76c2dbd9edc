"""The headline leads with the training step per workload, then overall, then linear-only
backprop labelled as the kernel-level figure (issue 11)."""

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
        "best training step, linear", "best training step, mlp", "best overall backprop",
        "kernel-level: best linear-only backprop")]
    assert order == sorted(order)
    assert "8.0x" in cards and "2.0x" in cards  # the two training steps
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
    plain = cards[cards.index("best training step, mlp ·"):]
    fused = cards[cards.index("best training step, mlp vs fused Adam ·"):]
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
