"""The main job end to end on the smoke profile: ``meprop bench`` then ``meprop report``."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from meprop.lab.engine.timer import num_threads
from meprop.lab.cli import main


@pytest.mark.slow
def test_smoke_bench_then_report(tmp_path, capsys):
    # torch is imported already, so OMP_NUM_THREADS would come too late: set torch's count
    # itself for the run (the smoke profile's cases pin 1 thread each as well)
    results, report = tmp_path / "results", tmp_path / "reports" / "smoke"
    with num_threads(1):
        assert main(["bench", "--profile", "smoke", "--out", str(results), "--no-progress"]) == 0
    (tmp_path / "reports" / "asv").mkdir(parents=True)
    (tmp_path / "reports" / "asv" / "index.html").write_text("<html></html>")
    capsys.readouterr()
    assert main(["report", str(results), "--out", str(report)]) == 0
    out = capsys.readouterr().out.strip()
    assert out == str((report / "index.html").resolve())
    page = (report / "index.html").read_text(encoding="utf-8")
    assert "profile smoke" in page and 'href="../asv/index.html"' in page
    table = pd.read_csv(report / "tables" / "speedup_linear_backward.csv")
    measured = [r for r in map(json.loads, (results / "results.jsonl").read_text().splitlines())
                if r["type"] == "bench" and r["case"]["measurement"] == "linear_backward" and r["status"] == "ok"]
    assert len(table) == len(measured) > 0
    assert sorted(table["speedup"].round(9)) == sorted(round(r["speedup"], 9) for r in measured)
    assert any((report / "figures").glob("*.png"))
