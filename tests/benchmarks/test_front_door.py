"""The pytest-benchmark front door as its users drive it: ids, -k selection, the same-run
ratio in extra_info, the session summary and --benchmark-histogram (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ONE_SHAPE = "meprop-train_step-mlp or dense-train_step-mlp"


def _pytest(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "tests/benchmarks/test_bench_cases.py",
                           "-p", "no:cacheprovider", "-q", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=600)


def test_ids_lead_with_the_variant_and_select_with_k():
    proc = _pytest("--collect-only", "-k", "train_step and mlp")
    ids = [line for line in proc.stdout.splitlines() if "test_case[" in line]
    assert ids and all(line.split("[", 1)[1].startswith(("dense-", "meprop-")) for line in ids)
    assert {line.split("[", 1)[1].split("-", 1)[0] for line in ids} == {"dense", "meprop"}


@pytest.mark.slow
def test_histogram_labels_the_ratio_and_the_summary(tmp_path):
    pytest.importorskip("pygal", reason="pygal is not installed (the dev extra installs it)")
    out = tmp_path / "bench.json"
    proc = _pytest("-k", "train_step and mlp", f"--benchmark-histogram={tmp_path / 'hist'}",
                   f"--benchmark-json={out}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    svgs = list(tmp_path.glob("hist*.svg"))
    assert svgs
    labels = svgs[0].read_text()
    assert "test_case[dense-train_step" in labels and "test_case[meprop-train_step" in labels
    assert "dense and meProp interleaved in one run (95% CI)" in proc.stdout
    entries = json.loads(out.read_text())["benchmarks"]
    ratios = {json.dumps(e["extra_info"]["interleaved"], sort_keys=True) for e in entries}
    assert len(entries) == 2 and len(ratios) == 1  # both sides carry the one same-run ratio
    ratio = entries[0]["extra_info"]["interleaved"]
    assert ratio["speedup"] == pytest.approx(ratio["dense_median_s"] / ratio["meprop_median_s"])
    assert ratio["n_samples"] >= 3 and ratio["method"] in ("bootstrap", "normal")
    from meprop.lab.report.frames import bench_frame
    from meprop.lab.report.ingest import load_results

    frame = bench_frame(load_results([out]).records)  # the report reads the same-run ratio
    assert len(frame) == 1 and frame["speedup"].iloc[0] == pytest.approx(ratio["speedup"])
    assert frame["ci_method"].iloc[0] == "bootstrap"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["--benchmark-disable", "--benchmark-skip", "--benchmark-only"])
def test_the_ddp_case_agrees_with_its_partner_in_every_mode(mode):
    # --benchmark-disable runs the benchmarked step once: rank 0 runs the partner's other steps
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests/benchmarks/test_bench_ddp.py", "-p",
                           "no:cacheprovider", "-q", "-k", "dense and per_example", mode],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, out
    assert ("1 skipped" if mode == "--benchmark-skip" else "1 passed") in out, out


def test_the_ddp_timeout_is_generous_and_set_by_the_environment():
    from meprop.lab.engine.ddp_rank import DEFAULT_TIMEOUT_S, collective_timeout_s

    assert collective_timeout_s({}) == DEFAULT_TIMEOUT_S >= 300
    assert collective_timeout_s({"MEPROP_DDP_TIMEOUT_S": "900"}) == 900.0
    for bad in ("0", "-5", "nan", "inf", "soon"):
        with pytest.raises(ValueError, match=f"MEPROP_DDP_TIMEOUT_S must be a positive number of seconds, got '{bad}'"):
            collective_timeout_s({"MEPROP_DDP_TIMEOUT_S": bad})
