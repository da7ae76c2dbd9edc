"""MepropLSTM: equal to nn.LSTM (values and gradients, float64) at dense k; sparser gradients at small k."""

import pytest
import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from meprop.lstm import MepropLSTM

IN, H = 6, 5


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
    with pytest.raises(ValueError, match="lengths must be an integer tensor"):
        lstm(torch.randn(2, 3, IN), torch.tensor([3.0, 1.0]))
    with pytest.raises(ValueError, match="single-layer"):
        MepropLSTM.from_lstm(nn.LSTM(IN, H, num_layers=2, batch_first=True))
    with pytest.raises(TypeError, match="nn.LSTM"):
        MepropLSTM.from_lstm(nn.GRU(IN, H))
