"""A report of 20,000 records keeps a small page; the full tables are in CSV.

Times are never asserted (docs/design.md); ``make`` users see the build time when they run it.
"""

from __future__ import annotations

import pandas as pd
import pytest
import report_fixtures as fx

from meprop.lab.report import build_report

pytestmark = pytest.mark.slow


def test_twenty_thousand_records_give_a_small_page_and_complete_csv(tmp_path):
    records = fx.many_records(20_000)
    bench = [r for r in records if r["type"] == "bench"]
    assert len(bench) >= 20_000
    report = build_report([fx.write_jsonl(tmp_path / "in" / "results.jsonl", records)], tmp_path / "out")
    out = report.index.parent
    assert report.index.stat().st_size < 10 * 2**20
    pngs = list((out / "figures").glob("*.png"))
    assert pngs and all(p.stat().st_size < 2 * 2**20 for p in pngs)
    rows = sum(len(pd.read_csv(out / "tables" / f"speedup_{m}.csv"))
               for m in ("forward", "linear_backward", "overall_backward", "train_step"))
    assert rows == len(bench)  # every record is in the tables' files
    page = report.index.read_text(encoding="utf-8")
    assert "the full table is" in page and 'href="tables/speedup_linear_backward.csv"' in page
    assert 'id="headline"' in page and 'class="card"' in page and "<figure>" in page
