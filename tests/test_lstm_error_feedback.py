"""Error feedback on MepropLSTM: one dropped-gradient memory per projection, in float64."""

from __future__ import annotations

import pytest
import torch

import meprop
from meprop.lab.converge.loop import Variant
from meprop.lab.converge.remedies import apply

IN, HIDDEN, BATCH, STEPS, K = 5, 6, 3, 4, 3


def _lstm(**kwargs) -> meprop.MepropLSTM:
    torch.manual_seed(0)
    return meprop.MepropLSTM(IN, HIDDEN, k=K, dtype=torch.float64, **kwargs)


def _backward(lstm, seed: int = 1) -> None:
    x = torch.randn(BATCH, STEPS, IN, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    output, _ = lstm(x)
    output.pow(2).sum().backward()


@pytest.mark.parametrize("mode", ["per_example", "unified"])
def test_both_memories_account_for_the_same_gate_gradient(mode):
    """With decay 1 a projection's memory is what it dropped: sum of its output gradient minus the
    kept sum (its sparse bias gradient). Both projections see the same gate gradients, so
    memory_ih + bias_ih.grad == memory_hh + bias_hh.grad (= the summed gate gradient)."""
    lstm = _lstm(mode=mode, error_feedback=1.0)
    _backward(lstm)
    ih, hh = lstm.error_feedback_ih.memory, lstm.error_feedback_hh.memory
    assert ih.abs().sum() > 0 and hh.abs().sum() > 0
    assert not torch.allclose(ih, hh)  # the recurrent selections saw their own memory
    torch.testing.assert_close(ih + lstm.bias_ih.grad, hh + lstm.bias_hh.grad, rtol=1e-10, atol=1e-12)


def test_the_memory_changes_the_next_backward_and_is_state():
    """The same batch twice: the plain LSTM's gradient repeats; with feedback the memory of the
    first backward enters the second."""
    grads = {}
    for name, module in (("plain", _lstm()), ("fed", _lstm(error_feedback=1.0))):
        first = []
        for _ in range(2):
            module.zero_grad()
            _backward(module)
            first.append(module.weight_ih.grad.clone())
        grads[name] = first
        fed = module
    torch.testing.assert_close(grads["plain"][0], grads["plain"][1])
    assert not torch.allclose(grads["fed"][0], grads["fed"][1])
    state = fed.state_dict()
    assert {"error_feedback_ih.memory", "error_feedback_hh.memory"} <= set(state)
    restored = _lstm(error_feedback=1.0)
    restored.load_state_dict(state)
    torch.testing.assert_close(restored.error_feedback_hh.memory, fed.error_feedback_hh.memory)


def test_error_feedback_takes_the_pytorch_path(monkeypatch):
    lstm = meprop.MepropLSTM(IN, HIDDEN, k=K, error_feedback=0.5)
    assert not lstm._use_kernels(torch.zeros(1, 1, IN), torch.zeros(1, HIDDEN), torch.zeros(1, HIDDEN))
    with pytest.raises(ValueError, match="error_feedback must be a float in \\(0, 1\\]"):
        meprop.MepropLSTM(IN, HIDDEN, k=K, error_feedback=1.5)


def test_converge_puts_a_memory_on_each_lstm_projection():
    model = torch.nn.Sequential(meprop.MepropLSTM(IN, HIDDEN, k=K))
    apply(model, Variant("ef", k=K, error_feedback=0.9), seed=1)
    assert model[0].error_feedback_ih.decay == 0.9 and model[0].error_feedback_hh.memory.shape == (4 * HIDDEN,)
