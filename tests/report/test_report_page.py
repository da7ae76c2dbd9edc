"""The whole report: files written, page contents, accuracy hook, and a real-browser check.

The browser test opens ``index.html`` from disk in headless Chromium (Debian's ``chromium``;
skipped with a reason when absent) with every host name unresolvable, takes a screenshot
and checks that the page rendered (non-blank), that every figure decoded (the page's
inline check writes ``data-figures-loaded="N/N"`` after load) and that nothing on the
page points at an http(s) resource. The layout test measures the rendered page: no table
column narrower than its header, no row squeezed tall by a wrapped prose column, prose
columns wide enough to read, and the paper's tables on screen (not collapsed).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import report_fixtures as fx

from meprop.lab.report import build_report


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    records = fx.quick_like_records(noisy_case=("unified", 1024, 64, 0.04))
    records += fx.quick_like_records("run-b", "box-b")[1:3] + [fx.env_record("run-b", "box-b")]
    records.append(fx.bench_record("run-a", hidden=4096, batch=1, k=41, mode="per_example", dense_s=33.5e-3,
                                   meprop_s=0.18e-3))  # above the ideal: a long note
    for k in (5, 20):  # the LSTM tagger's training step, named as such in its figure
        records.append(fx.bench_record("run-a", hidden=500, batch=1, k=k, mode="per_example", workload="lstm",
                                       measurement="train_step", in_features=100, classes=45,
                                       dense_s=4e-3, meprop_s=2.5e-3, threads=1))
    path = fx.write_jsonl(folder / "in" / "results.jsonl", records)
    return build_report([path], folder / "out", title="Report <test>")


def test_files_beside_the_page(report):
    out = report.index.parent
    pngs = sorted(p.stem for p in (out / "figures").glob("*.png"))
    svgs = sorted(p.stem for p in (out / "figures").glob("*.svg"))
    assert pngs == svgs and len(pngs) >= 6
    for name in ("speedup_linear_backward", "speedup_forward", "headline", "break_even", "targets", "environment"):
        assert (out / "tables" / f"{name}.csv").exists() and (out / "tables" / f"{name}.md").exists()
    linear = pd.read_csv(out / "tables" / "speedup_linear_backward.csv")
    assert len(linear) == 32 + 1 + 1  # box-a: 8 curves x 4 ratios and one above the ideal; box-b: one row
    assert set(report.files) >= {out / "index.html", *(out / "figures").glob("*.png")}


def test_page_contents(report):
    page = report.index.read_text(encoding="utf-8")
    assert "<title>Report &lt;test&gt;</title>" in page  # escaped
    assert "45.0x" in page  # headline: best unified linear-only speedup
    for anchor in ("environment", "headline", "tables", "figures", "paper", "memory", "accuracy", "files"):
        assert f'id="{anchor}"' in page
    assert "box-a / run-a" in page and "box-b / run-b" in page  # both machines' environments
    assert "median of 7 samples" in page
    assert "⚠ noisy" in page
    assert "No training results in the inputs" in page
    assert "Performance targets: " in page
    assert page.count('src="data:image/png;base64,') == len(list((report.index.parent / "figures").glob("*.png")))
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page)
    assert "@import" not in page and "<link" not in page


def test_accuracy_section_gets_train_records(tmp_path, monkeypatch):
    from meprop.lab.report.sections import Section, accuracy

    seen = {}

    def section(train_records: pd.DataFrame, out_dir: Path) -> Section:
        seen["rows"], seen["out"] = len(train_records), out_dir
        return Section("accuracy", "Accuracy", "<p>ACCURACY-FRAGMENT</p>")

    monkeypatch.setattr(accuracy, "section", section)
    records = fx.tiny_records() + [fx.train_record("run-t", e) for e in (1, 2)]
    report = build_report([fx.write_jsonl(tmp_path / "r.jsonl", records)], tmp_path / "out")
    assert seen == {"rows": 2, "out": tmp_path / "out"}
    assert "ACCURACY-FRAGMENT" in report.index.read_text()


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


def _run_browser(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             "--host-resolver-rules=MAP * ~NOTFOUND", "--hide-scrollbars"]
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="chromium not installed (apt-get install -y chromium)")
def test_page_renders_offline_in_headless_chromium(report, tmp_path):
    from PIL import Image

    binary, url = _chromium(), report.index.resolve().as_uri()
    shot = tmp_path / "shot.png"
    proc = _run_browser(binary, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2000", url)
    assert shot.exists(), proc.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2000)
    small = image.resize((128, 200))
    colours = small.getcolors(maxcolors=128 * 200)
    non_white = sum(count for count, rgb in colours if sum(rgb) < 720)
    assert len(colours) > 50 and non_white > 0.05 * 128 * 200, "screenshot looks blank"

    dom = _run_browser(binary, tmp_path / "profile2", "--virtual-time-budget=5000", "--dump-dom", url)
    match = re.search(r'data-figures-loaded="(\d+)/(\d+)"', dom.stdout)
    assert match, dom.stderr[-2000:]
    loaded, total = map(int, match.groups())
    assert total >= 6 and loaded == total
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", dom.stdout)


@pytest.mark.slow
def test_import_stays_cheap():
    """matplotlib and seaborn are imported only by the functions that draw."""
    code = ("import sys, meprop.lab.report, meprop.lab.cli.report; "
            "print(sorted(m for m in ('matplotlib', 'seaborn') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_names_from_the_results_are_escaped(tmp_path):
    records = fx.tiny_records(machine="<script>alert(1)</script>")
    page = build_report([fx.write_jsonl(tmp_path / "r.jsonl", records)], tmp_path / "out").index.read_text()
    assert page.count("<script>") == 1  # only the page's own figure check
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


_LAYOUT_PROBE = """<script>
window.addEventListener("load", function () {
  var out = {squeezed: [], tall: [], narrowProse: [], tables: 0, paperVisible: false};
  document.querySelectorAll("table").forEach(function (table) {
    if (!table.getClientRects().length) { return; }  // inside a closed <details>
    out.tables += 1;
    table.querySelectorAll("thead th").forEach(function (th) {
      var range = document.createRange(); range.selectNodeContents(th);
      if (th.getBoundingClientRect().width + 0.5 < range.getBoundingClientRect().width) {
        out.squeezed.push(th.textContent);
      }
    });
    table.querySelectorAll("tbody tr").forEach(function (tr) {
      if (tr.getBoundingClientRect().height > 100) { out.tall.push(tr.textContent.slice(0, 80)); }
    });
    table.querySelectorAll("td.long").forEach(function (td) {
      if (td.getBoundingClientRect().width < 200) { out.narrowProse.push(td.textContent.slice(0, 60)); }
    });
  });
  var paper = document.querySelector("#paper table");
  out.paperVisible = !!(paper && paper.getClientRects().length);
  document.body.setAttribute("data-layout", JSON.stringify(out));
});
</script>"""


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="chromium not installed (apt-get install -y chromium)")
def test_layout_rules_hold_in_headless_chromium(report, tmp_path):
    import html as html_lib
    import json

    probe = report.index.parent / "layout_probe.html"  # beside the page: same relative links
    probe.write_text(report.index.read_text().replace("</body>", _LAYOUT_PROBE + "</body>"))
    dom = _run_browser(_chromium(), tmp_path / "profile", "--window-size=1280,2000",
                       "--virtual-time-budget=5000", "--dump-dom", probe.resolve().as_uri())
    match = re.search(r'data-layout="([^"]*)"', dom.stdout)
    assert match, dom.stderr[-2000:]
    layout = json.loads(html_lib.unescape(match.group(1)))
    assert layout["tables"] >= 8
    assert layout["squeezed"] == [], "columns narrower than their header"
    assert layout["tall"] == [], "rows squeezed tall by a wrapped column"
    assert layout["narrowProse"] == [], "prose columns too narrow to read"
    assert layout["paperVisible"], "the paper's tables are collapsed"


def test_page_names_figures_by_workload_and_labels_dates(report):
    page = report.index.read_text(encoding="utf-8")
    titles = re.findall(r'<img [^>]*alt="([^"]*)"', page)
    lstm = [t for t in titles if "LSTM" in t]
    assert lstm and not any("single layer" in t for t in lstm)
    assert "measured 2026-11-21" in page and "commit dates" not in page  # our runs: measured times
    assert "<details><summary>The paper" not in page
