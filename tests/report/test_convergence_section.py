"""The report's "Does it pay off?" section: first on the page, cards, table, figures."""

import re
import shutil
import subprocess

import pytest
import report_fixtures as fx

from meprop.lab.converge.time_to_target import Target
from meprop.lab.report import build_report
from meprop.lab.report.sections.convergence import outcome_table, section, verdict
from meprop.lab.results import schema


def rec(label, step, seconds, metric, k=None, key="converge/p/w/1", target=90.0, mode="per_example"):
    return schema.convergence_record(
        "run-c", key=f"{key}/{label}/{step}", run_key=key, preset="p", workload="w", metric="dev accuracy (%)",
        label=label, step=step, examples=step, train_time_s=seconds, dev_metric=metric,
        method="dense" if k is None else "meprop", k=k, mode=mode, optimizer_mode="lazy", status="ok",
        target=Target(absolute=target).to_dict())


def records():
    rows = [rec("dense", 100, 4.0, 85.0), rec("dense", 200, 8.0, 91.0)]
    rows += [rec("k=20", 100, 1.0, 70.0, k=20), rec("k=20", 200, 2.0, 88.0, k=20), rec("k=20", 300, 3.0, 92.0, k=20)]
    rows += [rec("k=5 <b>", 100, 0.5, 50.0, k=5), rec("k=5 <b>", 200, 1.0, 60.0, k=5)]
    other = "converge/q/w/2"  # a run where no meProp variant gets there
    rows += [rec("dense", 50, 1.0, 95.0, key=other), rec("mp", 50, 0.4, 80.0, k=10, key=other)]
    return rows


def test_table_has_the_speedup_and_the_split_per_target():
    table = outcome_table(records())
    row = table[table["arm"] == "k=20"].iloc[0]
    assert row["90: speedup"] == "2.67"  # one seed: no interval
    assert row["90: reached"] == "1 of 1"
    assert float(row["middle: step-time factor"]) * float(row["middle: steps factor"]) == pytest.approx(8 / 3, rel=0.01)
    slow = table[table["arm"] == "k=5 <b>"].iloc[0]
    assert slow["90: reached"] == "0 of 1" and slow["90: median time s"] == "never"
    assert list(table["middle: verdict"])[:3] == ["reference", "no interval (one seed)", "no interval (one seed)"]


def seeded(seed, label, step, seconds, metric, k=None, targets=(85.0, 90.0, 95.0), study="converge/p/w/s"):
    row = rec(label, step, seconds, metric, k=k, key=f"{study}/seed{seed}", target=targets[1])
    row.update(seed=seed, study=study, arm=label, lr=1e-3, targets=[Target(absolute=t).to_dict() for t in targets],
               optimizer_impl="torch.optim.Adam(fused)" if k is None else "meprop.optim.Adam(lazy=True)")
    return row


def multi_seed_records():
    rows = []
    for seed, (dense_s, fast_s) in enumerate([(8.0, 4.0), (8.0, 7.0), (8.0, 12.0), (8.0, 9.0), (6.0, None)], 1):
        rows += [seeded(seed, "dense", 100, dense_s, 91.0)]
        rows += [seeded(seed, "mp", 100, fast_s or 5.0, 91.0 if fast_s else 80.0, k=4)]
    return rows


def test_multi_seed_table_shows_intervals_censored_counts_and_no_difference(tmp_path):
    table = outcome_table(multi_seed_records())
    mp = table[table["arm"] == "mp"].iloc[0]
    assert mp["90: reached"] == "4 of 5" and mp["95: reached"] == "0 of 5"
    assert mp["90: speedup"] == "0.89 [0.00, 2.00]" and mp["95: speedup"] == "-"  # neither reached 95: no pair
    assert mp["middle: verdict"] == "no difference shown"
    assert table.iloc[0]["optimizer"] == "torch.optim.Adam(fused)"
    part = section(multi_seed_records(), tmp_path)
    card = re.findall(r'<div class="card">(.*?)</div></div>', part.html)[0]
    assert "0.89 [0.00, 2.00]x" in card and "no difference shown" in card and "reached on 4 of 5 seeds" in card
    assert "torch.optim.Adam(fused)" in card


def test_section_cards_figures_and_escaping(tmp_path):
    part = section(records(), tmp_path)
    assert part.anchor == "pays-off"
    cards = re.findall(r'<div class="card">(.*?)</div></div>', part.html)
    assert len(cards) == 2
    assert "2.67x" in cards[0] and "k=20" in cards[0]
    assert "not reached" in cards[1] and "reached on 0 of 1 seeds" in cards[1]
    names = sorted(p.name for p in part.files if p.suffix == ".png")
    assert names == ["converge-p-w-1.png", "converge-q-w-2.png"]
    assert "k=5 <b>" not in part.html and "k=5 &lt;b&gt;" in part.html


def test_width_map_figure_and_table(tmp_path):
    rows = []
    for hidden in (500, 1024):
        study = f"converge/mnist-width/h{hidden}"
        for seed in (1, 2, 3):
            k = hidden // 25
            for row in (seeded(seed, "dense", 100, 8.0, 91.0, study=study),
                        seeded(seed, f"top-k k={k} (lazy)", 100, 8.0 / (hidden / 400) * (1 + seed / 10), 91.0,
                               k=k, study=study),
                        seeded(seed, f"top-k k={k} (lazy) +EF 1", 100, 4.0, 91.0, k=k, study=study)):
                row.update(preset="mnist-width", settings={"hidden": hidden, "batch": 64})
                rows.append(row)
    part = section(rows, tmp_path)
    assert "Where does meProp pay off?" in part.html
    assert "where-it-pays-off.png" in {p.name for p in part.files}
    assert "where_it_pays_off.csv" in {p.name for p in part.files}
    # one line per arm across the widths (k differs per width): plain top-k and top-k with error feedback
    svg = next(p for p in part.files if p.name == "where-it-pays-off.svg").read_text()
    assert "batch 64, top-k (lazy) +EF 1" in svg and "batch 64, top-k (lazy) -->" in svg


def test_width_map_draws_each_target_dense_reached_and_leaves_out_cells_dense_missed(tmp_path):
    rows = []
    for hidden, dense_metric in ((1024, 91.0), (4096, 87.0)):  # at h=4096 dense misses 90 (middle)
        study = f"converge/mnist-width/h{hidden}"
        for seed in (1, 2, 3):
            for row in (seeded(seed, "dense", 100, 8.0, dense_metric, study=study),
                        seeded(seed, "top-k k=40 (lazy) +EF 1", 100, 4.0, 91.0, k=40, study=study)):
                row.update(preset="mnist-width", settings={"hidden": hidden, "batch": 10})
                rows.append(row)
    part = section(rows, tmp_path)
    names = {p.name for p in part.files}
    # targets 85, 90, 95: dense reached 85 everywhere, 90 only at h=1024, 95 nowhere (no figure)
    assert {"where-it-pays-off.svg", "where-it-pays-off-85.svg"} <= names
    assert not any(name.startswith("where-it-pays-off-95") for name in names)

    def drawn_widths(name):
        svg = next(p for p in part.files if p.name == name).read_text()
        return {w for w in ("1024", "4096") if f"<!-- {w} -->" in svg}  # the x tick labels
    assert drawn_widths("where-it-pays-off-85.svg") == {"1024", "4096"}
    assert drawn_widths("where-it-pays-off.svg") == {"1024"}


def test_empty_inputs_say_how_to_get_results(tmp_path):
    assert "meprop converge" in section([], tmp_path).html


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    folder = tmp_path_factory.mktemp("conv-report")
    rows = fx.quick_like_records() + [fx.env_record("run-c", "box")] + records()
    return build_report([fx.write_jsonl(folder / "in" / "results.jsonl", rows)], folder / "out")


def test_section_comes_first_before_the_step_speedups(page):
    text = page.index.read_text()
    ids = re.findall(r'<section id="([a-z-]+)"', text) or re.findall(r'id="([a-z-]+)"', text)
    assert ids.index("pays-off") < ids.index("headline")
    assert not page.problems or not any("time-to-accuracy" in p for p in page.problems)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (apt-get install -y chromium)")
def test_section_renders_in_headless_chromium(page, tmp_path):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={tmp_path / 'p'}",
             "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=5000", "--dump-dom"]
    dom = subprocess.run([shutil.which("chromium"), *flags, page.index.resolve().as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert "Does it pay off?" in dom and "not reached" in dom
    loaded, total = map(int, re.search(r'data-figures-loaded="(\d+)/(\d+)"', dom).groups())
    assert loaded == total and total >= 3


def test_verdict_reads_an_infinite_bound_as_a_bound():
    # dense missed the target on a seed: that seed's ratio is infinite, the interval still decides
    assert verdict({"median": 1.9, "low": 1.2, "high": float("inf")}) == "meProp sooner"
    assert verdict({"median": 1.1, "low": 0.0, "high": float("inf")}) == "no difference shown"
    assert verdict({"median": 0.5, "low": 0.0, "high": 0.8}) == "dense sooner"
    assert verdict({"median": 1.5, "low": None, "high": None, "n": 1}) == "no interval (one seed)"
    assert verdict({"median": 1.5, "low": None, "high": None, "n": 1}, seeds=1) == "no interval (one seed)"
    assert verdict(None) == "no pairs"


def test_verdict_says_when_seeds_ran_but_only_one_has_a_ratio():
    # both arms missed the middle target on seeds 2 and 3: one ratio is left, from three seeds
    rows = []
    for seed, dev in [(1, 91.0), (2, 80.0), (3, 80.0)]:
        rows += [seeded(seed, "dense", 100, 8.0, dev), seeded(seed, "mp", 100, 4.0, dev, k=4)]
    row = outcome_table(rows).set_index("arm").loc["mp"]
    assert row["90: reached"] == "1 of 3"
    assert row["middle: verdict"] == "no interval (a ratio on 1 of 3 seeds: both arms missed on the others)"


def test_a_ratio_without_bound_reads_inf_and_a_censored_time_reads_never():
    # seed 3: dense misses 90 within the budget and meProp reaches it: that pair's speedup has no
    # bound, which is a speedup ("inf"), not a censored time ("never")
    rows = []
    for seed, dense_metric in ((1, 91.0), (2, 91.0), (3, 80.0)):
        rows += [seeded(seed, "dense", 100, 8.0, dense_metric), seeded(seed, "mp", 100, 4.0, 91.0, k=4)]
    table = outcome_table(rows)
    dense, fast = table[table["arm"] == "dense"].iloc[0], table[table["arm"] == "mp"].iloc[0]
    assert dense["90: reached"] == "2 of 3"
    assert fast["90: speedup"].endswith(", inf]") and "never" not in fast["90: speedup"]
    assert table[table["arm"] == "dense"].iloc[0]["95: median time s"].startswith("never")
