"""Targets as data: the file format (docs/targets.md), its errors, and the two commands that read it."""

from __future__ import annotations

from pathlib import Path

import pytest

from meprop.lab.plan.profiles import profile_cases
from meprop.lab.plan.target_file import TargetsFileError, load_targets
from meprop.lab.cli import main

ROOT = Path(__file__).resolve().parents[2]

_SMALL = """
[case_defaults]
threads = 1

[[target]]
label = "tiny unified"
minimum = 1.5
mode = "unified"
hidden = 64
batch = 8
k = 4

[[target]]
label = "tiny grid"
kind = "break_even"
minimum = 0.1
mode = "per_example"
min_hidden = 64
[target.grid]
hidden = [64, 128]
batch = [8]
mode = "per_example"
k_ratio = [0.05, 0.3]
k_rounding = "ceil"

[[target]]
label = "tiny steps"
minimum = 1.2
measurement = "train_step"
workload = "mlp"
mode = "per_example"
hidden = 32
in_features = 16
batch = 4
k = 4
also_adam = ["fused"]

[[target]]
label = "looked at by a person"
kind = "review"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "targets.toml"
    path.write_text(text)
    return path


def test_the_project_file_loads_and_names_every_kind():
    targets = load_targets(ROOT / "benchmarks" / "targets.toml")
    assert {t.kind for t in targets} == {"speedup", "break_even", "worst", "review"}
    assert all(t.cases() for t in targets if t.kind != "review")


def test_the_project_perf_profile_runs_both_never_slower_grids():
    targets = load_targets(ROOT / "benchmarks" / "targets.toml")
    perf = {(c.workload, c.measurement, c.hidden, c.batch, c.k, c.mode, c.threads, c.dtype)
            for c in profile_cases("perf", targets)}
    mlp = {("mlp", "overall_backward", n, b, round(r * n), "per_example", 2, "float32")
           for n in (500, 1024, 4096) for r in (0.01, 0.04, 0.1, 0.5) for b in (64, 1024)}
    linear = {("linear", "linear_backward", n, b, round(r * n), "per_example", 2, "float32")
              for n in (1024, 4096) for r in (0.01, 0.1, 0.25, 0.5) for b in (64, 1024)}
    assert len(mlp) == 24 and len(linear) == 16
    assert mlp <= perf and linear <= perf
    grids = [t for t in targets if t.kind == "worst" and t.measurement != "forward"]
    assert [(t.minimum, len(t.cases())) for t in grids] == [(0.95, 24), (0.95, 16)]
    assert all(c.in_features == 784 and c.layers == 2 for c in grids[0].cases())


@pytest.mark.parametrize("kind", ["worst", "forward"])
def test_worst_loads_and_forward_is_its_synonym(tmp_path, kind):
    (target,) = load_targets(_write(tmp_path, f"""
[[target]]
label = "never slower"
kind = "{kind}"
minimum = 0.95
mode = "per_example"
[target.grid]
hidden = [64]
batch = [8, 16]
k_ratio = [0.5]
"""))
    assert target.kind == "worst"
    assert [(c.batch, c.k, c.mode) for c in target.cases()] == [(8, 32, "per_example"), (16, 32, "per_example")]


def test_grid_cases_and_adam_variants_expand(tmp_path):
    unified, grid, steps, review = load_targets(_write(tmp_path, _SMALL))
    (case,) = unified.cases()
    assert (case.hidden, case.batch, case.k, case.mode, case.threads) == (64, 8, 4, "unified", 1)
    assert sorted((c.hidden, c.k) for c in grid.cases()) == [(64, 4), (64, 20), (128, 7), (128, 39)]
    assert [(c.measurement, c.adam) for c in steps.cases()] == [("train_step", "default"), ("train_step", "fused")]
    assert review.cases() == () and review.minimum is None


@pytest.mark.parametrize("text, match", [
    ("[[target]]\nlabel = 'a'\nminimum = 2\nspeed = 3\n", "unknown key.*'speed'"),
    ("[[target]]\nlabel = 'a'\nminimum = 2\nkind = 'fastest'\n", "kind must be one of"),
    ("[[target]]\nlabel = 'a'\n", "minimum must be None exactly for kind='review'"),
    ("[targets]\nx = 1\n", "unknown table"),
    ("[[target]\n", "not valid TOML"),
    ("[case_defaults]\nthreads = 1\n", "no \\[\\[target\\]\\] rows"),
    ("[[target]]\nlabel = 'g'\nminimum = 1\n[target.grid]\nhidden = [8]\nbatch = [1]\nmode = 'unified'\n"
     "k = [2]\nwidth = [3]\n", "unknown case field"),
])
def test_bad_files_are_refused_naming_the_file_and_row(tmp_path, text, match):
    path = _write(tmp_path, text)
    with pytest.raises(TargetsFileError, match=match) as error:
        load_targets(path)
    assert str(path) in str(error.value)


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(TargetsFileError, match="cannot be read"):
        load_targets(tmp_path / "nope.toml")


def test_bench_runs_the_cases_of_the_given_file(tmp_path, capsys):
    path = _write(tmp_path, _SMALL)
    assert main(["bench", "--profile", "perf", "--targets", str(path), "--list"]) == 0
    listed = capsys.readouterr().out.split()
    assert listed == [c.key for c in profile_cases("perf", load_targets(path))]
    assert len(listed) == 1 + 4 + 2


def test_bench_refuses_a_bad_targets_file_in_one_line(tmp_path, capsys):
    path = _write(tmp_path, "[[target]]\nlabel = 'a'\nminimum = 2\nspeed = 3\n")
    assert main(["bench", "--profile", "perf", "--targets", str(path), "--list"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_report_judges_by_the_given_file(tmp_path):
    import sys

    sys.path.insert(0, str(ROOT / "tests" / "report"))
    import report_fixtures as fx  # tests/report's synthetic records

    records = [fx.env_record("r"), fx.bench_record("r", hidden=64, batch=8, k=4, dense_s=3e-3, meprop_s=1e-3)]
    results = fx.write_jsonl(tmp_path / "r.jsonl", records)
    assert main(["report", str(results), "--out", str(tmp_path / "out"),
                 "--targets", str(_write(tmp_path, _SMALL))]) == 0
    page = (tmp_path / "out" / "index.html").read_text()
    assert "tiny unified" in page and "Performance targets: 1 of 1 measured targets met" in page


_ROW = "[[target]]\nlabel = 'a'\nminimum = 2\nmode = 'unified'\nhidden = 64\nbatch = 8\nk = 4\n"
#: (file text, what the one line must say besides the file): each names the row or table and the field
_MISTYPED = [
    ("case_defaults = 5\n" + _ROW, "case_defaults = 5 is not a table; accepted: a [case_defaults] table"),
    ("[case_defaults]\nthreads = 'two'\n" + _ROW, "[case_defaults]: field 'threads' = 'two': accepted: a positive integer"),
    ("[case_defaults]\ncolour = 1\n" + _ROW, "[case_defaults]: unknown key(s) ['colour']; accepted"),
    ("target = 5\n", "target = 5 is not a row; accepted: [[target]] tables"),
    ("target = [1]\n", "row 1: a row must be a table of fields, got 1"),
    ("[target]\nlabel = 'a'\nminimum = 2\n", "[target] is one table; write each row as [[target]]"),
    (_ROW.replace("minimum = 2", 'minimum = "six"'), "target 'a' (row 1): field 'minimum' = 'six': accepted: a finite number > 0"),
    (_ROW.replace("minimum = 2", "minimum = nan"), "target 'a' (row 1): field 'minimum' = nan: accepted: a finite number > 0"),
    (_ROW.replace("minimum = 2", "minimum = -1"), "field 'minimum' = -1: accepted: a finite number > 0"),
    (_ROW.replace("hidden = 64", 'hidden = "64"'), "target 'a' (row 1): field 'hidden' = '64': accepted: a positive integer"),
    (_ROW.replace("k = 4", "k = true"), "field 'k' = True: accepted: a positive integer"),
    (_ROW.replace("k = 4", "k_ratio = 2.0"), "field 'k_ratio' = 2.0: accepted: a number in (0, 1]"),
    (_ROW.replace("label = 'a'", "label = 3"), "row 1: field 'label' = 3: accepted: a string"),
    (_ROW + "also_adam = 'fused'\n", "field 'also_adam' = 'fused': accepted: a list of strings"),
    (_ROW + "[target.grid]\nhidden = ['64']\n", "field 'grid.hidden' = '64': accepted: a positive integer"),
    (_ROW + "[[target.cases]]\nbatch = 0\n", "field 'batch' = 0: accepted: a positive integer"),
]


@pytest.mark.parametrize("text, message", _MISTYPED)
def test_mistyped_fields_are_refused_in_one_line_naming_file_row_and_field(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(TargetsFileError) as error:
        load_targets(path)
    assert str(error.value).startswith(f"targets file {str(path)!r}") and message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("command", [["bench", "--list"], ["bench", "--profile", "perf", "--list"], ["report"]])
@pytest.mark.parametrize("text, message", _MISTYPED[:10:3] + _MISTYPED[5:10])
def test_bench_and_report_refuse_the_same_files_in_one_line(tmp_path, capsys, command, text, message):
    path = _write(tmp_path, text)
    argv = [command[0], str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "out")] if command == ["report"] \
        else command
    assert main([*argv, "--targets", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
