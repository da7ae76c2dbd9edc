"""The transformer workload: a GPT-2-style block whose four projections are really sparsified."""

import pytest
import torch

import meprop
from meprop.lab.ops import build as workloads
from meprop.lab.plan.cases import Case
from meprop.lab.ops.transformer import SEQUENCE, TransformerBlock


def _case(measurement, **kw):
    return Case("transformer", measurement, kw.pop("hidden", 128), kw.pop("k", 2), 1,
                mode="per_example", **kw)


def test_block_matches_a_hand_written_reference():
    torch.manual_seed(0)
    block = TransformerBlock(128)
    x = torch.randn(2, 5, 128)
    h = block.ln_1(x)
    q, k, v = block.qkv(h).split(128, dim=-1)
    heads = lambda t: t.view(2, 5, 2, 64).transpose(1, 2)  # noqa: E731
    scores = heads(q) @ heads(k).transpose(-1, -2) / 8.0
    scores = scores.masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), float("-inf"))
    y = (scores.softmax(-1) @ heads(v)).transpose(1, 2).reshape(2, 5, 128)
    x1 = x + block.proj(y)
    want = x1 + block.out(torch.nn.functional.gelu(block.fc(block.ln_2(x1))))
    torch.testing.assert_close(block(x), want, rtol=1e-5, atol=1e-5)


def test_all_four_projections_get_row_sparse_gradients():
    op = workloads.build(_case("overall_backward"), "meprop")
    model = op.model
    assert meprop.sparsified_layers(model) == ["qkv", "proj", "fc", "out"]
    op()
    for name in ("qkv", "proj", "fc", "out"):
        layer = getattr(model, name)
        rows = int((layer.weight.grad.abs().sum(1) != 0).sum())
        kept_per_token = layer.k
        assert kept_per_token == max(1, round(2 / 128 * layer.out_features))
        assert 0 < rows <= min(layer.out_features, SEQUENCE * kept_per_token)
        assert rows < layer.out_features, f"{name}: a dense gradient would touch every row"


def test_train_step_runs_for_both_variants_and_linear_backward_is_unsupported():
    for variant in ("dense", "meprop"):
        op = workloads.build(_case("train_step"), variant)
        before = [p.detach().clone() for p in op.model.parameters()]
        op()
        assert any(not torch.equal(a, p) for a, p in zip(before, op.model.parameters()))
    with pytest.raises(workloads.Unsupported, match="linear_backward is not defined"):
        workloads.build(_case("linear_backward"), "meprop")
    with pytest.raises(workloads.Unsupported, match="multiple of 64"):
        workloads.build(_case("forward", hidden=100), "dense")


@pytest.mark.parametrize("hidden", [32, 48])
def test_small_d_model_gets_one_head_of_its_width_and_trains(hidden):
    assert TransformerBlock(hidden).heads == 1
    op = workloads.build(_case("train_step", hidden=hidden, k=4), "meprop")
    before = [p.detach().clone() for p in op.model.parameters()]
    op()
    assert any(not torch.equal(a, p) for a, p in zip(before, op.model.parameters()))
