"""MepropLSTM: equal to nn.LSTM (values and gradients, float64) at dense k; sparser gradients at small k."""

import pytest
import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from meprop.lstm import MepropLSTM

IN, H = 6, 5

# every test here runs through the compiled kernels and through the PyTorch fallback
pytestmark = pytest.mark.usefixtures("meprop_path")


def _pair(**kwargs):
    torch.manual_seed(0)
    reference = nn.LSTM(IN, H, batch_first=True).double()
    return reference, MepropLSTM.from_lstm(reference, **kwargs)


def _inputs(lengths=(4, 2, 3)):
    torch.manual_seed(1)
    lengths = torch.tensor(lengths)
    x = torch.randn(len(lengths), int(lengths.max()), IN, dtype=torch.float64)
    mask = torch.arange(x.shape[1]) < lengths.unsqueeze(1)
    return x * mask.unsqueeze(-1), lengths, mask


def _reference_run(reference, x, lengths):
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, (h, c) = reference(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out, h[0], c[0]


@pytest.mark.parametrize("k", [None, 4 * H])
def test_dense_k_matches_nn_lstm_values_and_gradients(k):
    reference, lstm = _pair(k=k)
    x, lengths, _ = _inputs()
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ref, h_ref, c_ref = _reference_run(reference, x_ref, lengths)
    out, (h, c) = lstm(x_ours, lengths)
    torch.testing.assert_close(out, out_ref)
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(c, c_ref)

    weights = torch.randn_like(out)  # a loss that weighs every output differently
    ((out_ref * weights).sum() + h_ref.sum() + 2 * c_ref.sum()).backward()
    ((out * weights).sum() + h.sum() + 2 * c.sum()).backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        torch.testing.assert_close(getattr(lstm, name).grad, getattr(reference, f"{name}_l0").grad, msg=name)


def test_padding_does_not_change_a_sequence():
    _, lstm = _pair()
    x, lengths, _ = _inputs()
    out, (h, _) = lstm(x, lengths)
    alone, (h_alone, _) = lstm(x[1:2, :2], None)
    torch.testing.assert_close(out[1, :2], alone[0])
    torch.testing.assert_close(h[1], h_alone[0])
    assert torch.all(out[1, 2:] == 0)  # outputs past the length are zero


def test_small_k_sparsifies_and_changes_gradients():
    reference, lstm = _pair(k=1)
    x, lengths, _ = _inputs()
    out_ref, _, _ = _reference_run(reference, x, lengths)
    out, _ = lstm(x, lengths)
    torch.testing.assert_close(out, out_ref)  # forward is unchanged
    out_ref.pow(2).sum().backward()
    out.pow(2).sum().backward()
    dense_grad, sparse_grad = reference.weight_ih_l0.grad, lstm.weight_ih.grad
    assert not torch.allclose(dense_grad, sparse_grad)
    # each (sequence, step) row keeps k=1 of the 4H=20 gate entries: at most B * T = 12 touched rows
    touched = (sparse_grad.abs().sum(1) != 0).sum().item()
    assert 0 < touched <= x.shape[0] * x.shape[1] < 4 * H
    assert (dense_grad.abs().sum(1) != 0).sum().item() == 4 * H
    # bias_grad="sparse": the bias gradient is nonzero only on touched rows
    assert (lstm.bias_ih.grad != 0).sum().item() <= touched


def test_eval_mode_is_plain_lstm_and_no_grad_works():
    reference, lstm = _pair(k=1)
    lstm.eval()
    x, lengths, _ = _inputs()
    with torch.no_grad():
        out, _ = lstm(x, lengths)
    torch.testing.assert_close(out, _reference_run(reference, x, lengths)[0].detach())


def test_bad_arguments():
    with pytest.raises(ValueError, match="k must be at most"):
        MepropLSTM(IN, H, k=4 * H + 1)
    with pytest.raises(ValueError, match="exactly one of k or k_ratio"):
        MepropLSTM(IN, H, k=2, k_ratio=0.1)
    with pytest.raises(ValueError, match="mode must be one of"):
        MepropLSTM(IN, H, k=2, mode="topk")
    with pytest.raises(ValueError, match="hidden_size"):
        MepropLSTM(IN, 0)
    lstm = MepropLSTM(IN, H)
    with pytest.raises(ValueError, match=r"\(batch, time, 6\)"):
        lstm(torch.randn(2, 3, IN + 1))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 3\]"):
        lstm(torch.randn(2, 3, IN), torch.tensor([3, 4]))
    with pytest.raises(TypeError, match="lengths must be an integer tensor"):
        lstm(torch.randn(2, 3, IN), torch.tensor([3.0, 1.0]))
    with pytest.raises(ValueError, match="single-layer"):
        MepropLSTM.from_lstm(nn.LSTM(IN, H, num_layers=2, batch_first=True))
    with pytest.raises(TypeError, match="nn.LSTM"):
        MepropLSTM.from_lstm(nn.GRU(IN, H))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("k", [1, 3, 4 * H - 1])
@pytest.mark.parametrize("sparse_grad", [False, True])
@pytest.mark.parametrize("lengths", [None, (4, 2, 3)], ids=["full", "padded"])
def test_kernels_and_pytorch_path_agree(monkeypatch, meprop_path, dtype, k, sparse_grad, lengths):
    """At small k the compiled sequence backward equals the per-step PyTorch path (values and gradients)."""
    results = []
    for setting in ("on" if meprop_path == "kernels" else "off", "off"):
        monkeypatch.setenv("MEPROP_KERNELS", setting)
        torch.manual_seed(2)
        lstm = MepropLSTM(IN, H, k=k, sparse_grad=sparse_grad).to(dtype)
        x = torch.randn(3, 4, IN, dtype=dtype, requires_grad=True)
        h0, c0 = (torch.randn(3, H, dtype=dtype, requires_grad=True) for _ in range(2))
        out, (h, c) = lstm(x, None if lengths is None else torch.tensor(lengths), (h0, c0))
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=dtype)
        ((out * weights).sum() + h.sum() + 2 * c.sum()).backward()
        if sparse_grad:
            assert lstm.weight_ih.grad.is_sparse and lstm.weight_hh.grad.is_sparse
        grads = [x.grad, h0.grad, c0.grad] + [p.grad.to_dense() for p in lstm.parameters()]
        results.append((out, h, c, *grads))
    tol = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-5}
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, **tol)


def test_sparse_grad_rows_are_the_union_over_steps():
    _, lstm = _pair(k=2, sparse_grad=True)
    x, lengths, _ = _inputs()
    out, _ = lstm(x, lengths)
    out.pow(2).sum().backward()
    grad_ih, grad_hh = lstm.weight_ih.grad, lstm.weight_hh.grad
    assert grad_ih.is_sparse and grad_ih.sparse_dim() == 1
    grad_ih, grad_hh = grad_ih.coalesce(), grad_hh.coalesce()  # the fallback sums one per step
    assert torch.equal(grad_ih.indices(), grad_hh.indices())  # one union for both projections
    touched = grad_ih.indices()[0]
    assert 0 < len(touched) <= 2 * int(lengths.sum())
    assert torch.equal(touched, touched.unique())


@pytest.mark.parametrize(
    "call, exc, words",
    [
        (lambda: MepropLSTM("6", H), TypeError, ["input_size", "'6'"]),
        (lambda: MepropLSTM(IN, 2.0), TypeError, ["hidden_size"]),
        (lambda: MepropLSTM(IN, H, sparse_grad=1), TypeError, ["sparse_grad"]),
        (lambda: MepropLSTM(IN, H, k=2.5), TypeError, ["k", "2.5"]),
        (lambda: MepropLSTM(IN, H)([[1.0] * IN]), TypeError, ["input", "list"]),
        (lambda: MepropLSTM(IN, H)(torch.randn(2, 3, IN), 3), TypeError, ["lengths", "int"]),
        (lambda: MepropLSTM(IN, H)(torch.randn(2, 3, IN), state=torch.zeros(2, H)), TypeError, ["state"]),
        (lambda: MepropLSTM(IN, H)(torch.randn(2, 3, IN), state=(torch.zeros(2, H + 1), torch.zeros(2, H))),
         ValueError, ["h_0", f"(2, {H})"]),
        (lambda: MepropLSTM(IN, H)(torch.randn(2, 3, IN), torch.tensor([3, 1, 2])), ValueError, ["lengths", "(2,)"]),
    ],
)
def test_wrong_types_raise_type_error(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    for word in words:
        assert word in str(info.value)
