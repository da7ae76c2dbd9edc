"""The report's "Does it pay off?" section: first on the page, cards, table, figures."""

import re
import shutil
import subprocess

import pytest
import report_fixtures as fx

from meprop.lab.converge.time_to_target import Target
from meprop.lab.report import build_report
from meprop.lab.report.sections.convergence import outcome_table, section
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


def test_table_has_the_split_and_names_the_factor():
    table = outcome_table(records())
    row = table[table["variant"] == "k=20"].iloc[0]
    assert row["time-to-target speedup"] == pytest.approx(8 / 3)
    assert row["step-time speedup"] * row["steps speedup"] == pytest.approx(8 / 3)
    assert row["limited by"] == "meets the 1.5x bar"
    slow = table[table["variant"] == "k=5 <b>"].iloc[0]
    assert slow["status"] == "not reached"
    assert slow["limited by"] == "steps (convergence): not reached in 200 steps, dense needed 200 (steps speedup < 1.00)"
    assert list(table["status"]) == ["reached", "reached", "not reached", "reached", "not reached"]


def test_section_cards_figures_and_escaping(tmp_path):
    part = section(records(), tmp_path)
    assert part.anchor == "pays-off"
    cards = re.findall(r'<div class="card">(.*?)</div></div>', part.html)
    assert len(cards) == 2
    assert "2.67x" in cards[0] and "k=20" in cards[0]
    assert "not reached" in cards[1] and "mp at 80.00 vs 90" in cards[1]
    names = sorted(p.name for p in part.files if p.suffix == ".png")
    assert names == ["converge-p-w-1.png", "converge-q-w-2.png", "pareto-p-w-1.png"]  # Pareto: >1 k only
    assert "k=5 <b>" not in part.html and "k=5 &lt;b&gt;" in part.html


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
