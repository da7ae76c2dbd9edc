"""meprop bench --model module:factory: a user's own model through the suite."""

import textwrap

import pytest

import meprop
from meprop.lab.ops import build as workloads
from meprop.lab.plan.cases import Case
from meprop.lab.ops.user_model import UserModelError, build_user_model, widest_linear
from meprop.lab.cli import main
from meprop.lab.report.build import build_report
from meprop.lab.results.store import read_records

FAST = ["--budget", "0.05", "--min-samples", "3", "--threads", "1", "--no-progress", "--no-memory"]


@pytest.fixture
def user_module(tmp_path):
    path = tmp_path / "mymodels.py"
    path.write_text(textwrap.dedent("""
        import torch

        class HeadFirst(torch.nn.Module):  # the head is registered before the body
            def __init__(self):
                super().__init__()
                self.head = torch.nn.Linear(64, 4)
                self.body = torch.nn.Linear(16, 64)

            def forward(self, x):
                return self.head(torch.relu(self.body(x)))

        def make():
            return HeadFirst(), torch.randn(8, 16)

        def scalar():
            model = torch.nn.Linear(16, 32)
            class Wrapped(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.inner = model
                def forward(self, x):
                    return self.inner(x).sum()
            return Wrapped(), (torch.randn(4, 16),)

        def broken():
            return 42
    """))
    return path


def test_model_runs_through_the_cli_and_the_report_names_it(user_module, tmp_path):
    spec = f"{user_module}:make"
    out = tmp_path / "run"
    assert main(["bench", "--model", spec, "--k", "8", "--out", str(out), *FAST]) == 0
    bench = [r for r in read_records(out / "results.jsonl") if r["type"] == "bench"]
    assert {r["case"]["measurement"] for r in bench} == {"train_step", "overall_backward"}
    assert all(r["status"] == "ok" and r["case"]["model"] == spec and r["case"]["hidden"] == 64
               for r in bench)
    page = build_report([out], tmp_path / "report").index.read_text()
    assert "mymodels.py:make" in page


def test_meprop_variant_converts_the_body_and_keeps_the_real_head_dense(user_module):
    case = Case("model", "train_step", widest_linear(f"{user_module}:make"), 8, 1,
                mode="per_example", model=f"{user_module}:make")
    op = workloads.build(case, "meprop")
    assert meprop.sparsified_layers(op.model) == ["body"]  # found by forward order
    before = op.model.body.weight.detach().clone()
    op()
    changed = set((op.model.body.weight.detach() != before).any(dim=1).nonzero().flatten().tolist())
    grad = op.model.body.weight.grad
    assert grad.is_sparse, "the lazy optimizer asked for row-sparse gradients"
    touched = set(grad.coalesce().indices()[0].tolist())
    assert changed and changed <= touched  # lazy Adam moved only rows that got a gradient


def test_scalar_output_is_the_loss(user_module):
    model, inputs = build_user_model(f"{user_module}:scalar")
    case = Case("model", "overall_backward", 32, 4, 1, model=f"{user_module}:scalar")
    op = workloads.build(case, "dense")
    op()
    assert op.model.inner.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("spec, words", [
    ("no_colon", "must be 'module:factory'"),
    ("surely_not_a_module_here:make", "cannot import"),
])
def test_bad_specs_are_clear_errors(spec, words):
    with pytest.raises(UserModelError, match=words):
        build_user_model(spec)


def test_bad_factories_are_clear_errors(user_module, tmp_path, capsys):
    with pytest.raises(UserModelError, match="has no callable 'nope'"):
        build_user_model(f"{user_module}:nope")
    with pytest.raises(UserModelError, match=r"must return \(model, inputs\)"):
        build_user_model(f"{user_module}:broken")
    assert main(["bench", "--model", f"{user_module}:broken", "--out", str(tmp_path / "x"), *FAST]) == 2
    assert "must return (model, inputs)" in capsys.readouterr().err
    assert main(["bench", "--model", f"{user_module}:make", "--hidden", "64", "--out", str(tmp_path / "y"),
                 *FAST]) == 2
