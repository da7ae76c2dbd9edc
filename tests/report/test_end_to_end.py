"""The main job end to end on the smoke profile: ``meprop bench`` then ``meprop report``."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from meprop.cli import main


def test_smoke_bench_then_report(tmp_path, capsys, monkeypatch):
    pytest.importorskip("meprop.bench.cli")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    results, report = tmp_path / "results", tmp_path / "reports" / "smoke"
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
