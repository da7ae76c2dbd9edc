"""meprop converge: bad input refused in one line naming the option, resumes that would mix runs
refused, and workload faults recorded as outcomes (not tracebacks)."""

import pytest

from meprop.lab.cli import main
from meprop.lab.results.store import ResultsWriter, read_records

_FACTORIES = """
import numpy as np
import torch
X = torch.randn(64, 6, generator=torch.Generator().manual_seed(0)); Y = (X[:, 0] > 0).long()
def _model():
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
def _score(m):
    return float((m(X).argmax(-1) == Y).float().mean() * 100)
def make():
    return _model(), [(X[i:i + 8], Y[i:i + 8]) for i in range(0, 64, 8)], _score
def raises():
    raise RuntimeError("no data here")
def eval_raises():
    model, batches, _ = make()
    def evaluate(m):
        if any(type(x).__name__ == "MepropLinear" for x in m.modules()):
            raise KeyError("labels")
        return 50.0
    return model, batches, evaluate
def numpy_eval():
    model, batches, _ = make()
    return model, batches, lambda m: np.float32(_score(m)) if len(list(m.modules())) < 5 else np.int64(40)
def negative():
    model, batches, _ = make()
    return model, batches, lambda m: -1.0 - float(torch.nn.functional.cross_entropy(m(X), Y))
"""


@pytest.fixture
def factories(tmp_path):
    path = tmp_path / "conv_models_f.py"
    path.write_text(_FACTORIES)
    return str(path)


def cli(factories, factory, out, *extra):
    return main(["converge", "--model", f"{factories}:{factory}", "--k", "4", "--optimizer-mode", "lazy",
                 "--max-steps", "16", "--eval-every", "8", "--target", "55", "--warmup", "0", "--quiet",
                 "--out", str(out), *extra])


def convergence(out):
    return [r for r in read_records(out / "results.jsonl") if r["type"] == "convergence"]




def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("extra, option", [
    (["--seeds", "0"], "--seeds"), (["--seeds", "-2"], "--seeds"), (["--seeds", "2.5"], "--seeds"),
    (["--lr-grid", "0.001,0"], "--lr-grid"), (["--lr-grid", "-1"], "--lr-grid"), (["--lr-grid", "x"], "--lr-grid"),
    (["--eval-every", "0"], "--eval-every"), (["--epochs", "0"], "--epochs"), (["--epochs", "-1"], "--epochs"),
    (["--epochs", "inf"], "--epochs"), (["--epochs", "nan"], "--epochs"), (["--max-steps", "0"], "--max-steps"),
    (["--k", "-3"], "--k"), (["--k", "1000"], "--k"), (["--target-fraction", "1.5"], "--target-fraction"),
])
def test_bad_numbers_are_refused_in_one_line(factories, tmp_path, capsys, extra, option):
    code = main(["converge", "--model", f"{factories}:make", "--max-steps", "8", "--warmup", "0", "--quiet",
                 "--out", str(tmp_path / "o"), *extra])
    assert code == 2
    assert option in one_line(capsys)


@pytest.mark.parametrize("target", ["150", "-5", "nan"])
def test_a_target_outside_the_metric_range_is_refused(tmp_path, capsys, target):
    assert main(["converge", "--preset", "mnist-adam", "--quick", "--target", target, "--out", str(tmp_path)]) == 2
    line = one_line(capsys)
    assert "--target" in line and "[0, 100]" in line


def test_a_raising_factory_is_a_failed_record(factories, tmp_path, capsys):
    assert cli(factories, "raises", tmp_path / "o") == 2
    assert "the factory raised RuntimeError: no data here" in one_line(capsys)
    assert convergence(tmp_path / "o")[-1]["status"] == "failed"


def test_a_raising_evaluate_fails_that_variant_only(factories, tmp_path):
    assert cli(factories, "eval_raises", tmp_path / "o") == 0
    records = convergence(tmp_path / "o")
    failed = [r for r in records if r["status"] == "failed"]
    assert failed and all(r["arm"] != "dense" for r in failed)
    assert "evaluate() raised KeyError" in failed[0]["reason"]
    assert [r["step"] for r in records if r["arm"] == "dense"] == [8, 16]


def test_numpy_scalars_are_numbers(factories, tmp_path):
    assert cli(factories, "numpy_eval", tmp_path / "o") == 0
    assert all(r["status"] == "ok" and isinstance(r["dev_metric"], float) for r in convergence(tmp_path / "o"))


def test_a_locked_out_folder_is_one_line(factories, tmp_path, capsys):
    out = tmp_path / "o"
    with ResultsWriter(out / "results.jsonl"):
        assert cli(factories, "make", out) == 2
    assert "another meprop converge is writing" in one_line(capsys)


@pytest.mark.parametrize("changed, named", [
    (["--seeds", "2"], "seeds"), (["--target", "60"], "targets"), (["--lr-grid", "0.01"], "lr grid"),
    (["--k", "8"], "variants"), (["--max-steps", "24"], "max steps"),
])
def test_a_resume_with_other_settings_is_refused_naming_them(factories, tmp_path, capsys, changed, named):
    out = tmp_path / "o"
    assert cli(factories, "make", out) == 0
    before = len(read_records(out / "results.jsonl"))
    capsys.readouterr()
    args = ["converge", "--model", f"{factories}:make", "--k", "4", "--optimizer-mode", "lazy", "--max-steps", "16",
            "--eval-every", "8", "--target", "55", "--warmup", "0", "--quiet", "--out", str(out), "--resume"]
    for option, value in zip(changed[::2], changed[1::2]):
        index = args.index(option) if option in args else None
        if index is None:
            args += [option, value]
        else:
            args[index + 1] = value
    assert main(args) == 2
    line = one_line(capsys)
    assert "--resume" in line and named in line
    assert len(read_records(out / "results.jsonl")) == before + 1  # only the env record of the refused call


def test_resume_into_a_new_file_trains_and_writes(factories, tmp_path, capsys):
    assert cli(factories, "make", tmp_path / "a.jsonl") == 0
    capsys.readouterr()
    assert cli(factories, "make", tmp_path / "b.jsonl", "--resume") == 0
    assert [r["step"] for r in read_records(tmp_path / "b.jsonl") if r["type"] == "convergence"
            and r["arm"] == "dense"] == [8, 16]


def test_negative_metric_dense_reaches_its_own_fraction_target(factories, tmp_path, capsys):
    code = main(["converge", "--model", f"{factories}:negative", "--k", "4", "--optimizer-mode", "lazy",
                 "--max-steps", "16", "--eval-every", "8", "--target-fraction", "0.99", "--warmup", "0",
                 "--quiet", "--out", str(tmp_path / "o")])
    assert code == 0
    dense_line = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("dense"))
    assert "reached on 1 of 1 seeds" in dense_line
