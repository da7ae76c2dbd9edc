"""MepropLSTM: a single-layer, batch-first LSTM whose gate projections use meProp (paper, Section 4, POS tagging).

The paper applies meProp to the LSTM's linear transformations (the tagger's output
classifier stays dense). Here both gate projections go through
:func:`meprop.meprop_linear`:

- input projection ``W_ih: (4h, in)``, applied to all time steps at once:
  ``gx = x @ W_ih^T + b_ih: (B, T, 4h)``; every (sequence, step) row is one example
  for top-k;
- recurrent projection ``W_hh: (4h, h)``, applied at each step: ``gh = h_{t-1} @ W_hh^T
  + b_hh: (B, 4h)``.

k counts among the 4h gate pre-activations (gates i, f, g, o, PyTorch's order and
layout), so ``k = 4 * hidden_size`` is the exact dense gradient, equal to ``nn.LSTM``'s
(checked in tests by copying an ``nn.LSTM``'s weights with :meth:`MepropLSTM.from_lstm`).

Variable-length sequences: pass ``lengths: (B,)``. Steps past a sequence's length do
not change its state, its outputs there are 0, and the returned ``(h_n, c_n)`` are the
states at each sequence's last step, as with a packed ``nn.LSTM``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from meprop._checks import check_choice, resolve_k
from meprop.functional import BIAS_GRADS, meprop_linear
from meprop.selection import MODES

__all__ = ["MepropLSTM"]


class MepropLSTM(nn.Module):
    """Single-layer batch-first LSTM with meProp on its gate projections.

    Args:
        input_size, hidden_size: as ``nn.LSTM``.
        k / k_ratio: at most one; k in [1, 4 * hidden_size] entries of the 4h gate
            pre-activation gradient kept per example (per sequence and step). Neither
            given (or ``k = 4 * hidden_size``): the dense gradient.
        mode, bias_grad: as :func:`meprop.meprop_linear`.

    Parameters ``weight_ih: (4h, in)``, ``weight_hh: (4h, h)``, ``bias_ih``, ``bias_hh:
    (4h,)`` are initialised like ``nn.LSTM``'s (uniform in ``±1/sqrt(h)``).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        k: int | None = None,
        k_ratio: float | None = None,
        mode: str = "per_example",
        bias_grad: str = "sparse",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.input_size, self.hidden_size = input_size, hidden_size
        gates = 4 * hidden_size
        self.k = gates if k is None and k_ratio is None else resolve_k(k, k_ratio, gates)
        self.mode = check_choice(mode, "mode", MODES)
        self.bias_grad = check_choice(bias_grad, "bias_grad", BIAS_GRADS)
        factory = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(gates, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(gates, hidden_size, **factory))
        self.bias_ih = nn.Parameter(torch.empty(gates, **factory))
        self.bias_hh = nn.Parameter(torch.empty(gates, **factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    @classmethod
    def from_lstm(cls, lstm: nn.LSTM, **kwargs) -> "MepropLSTM":
        """A MepropLSTM holding copies of a single-layer, batch-first, unidirectional ``nn.LSTM``'s weights."""
        if not isinstance(lstm, nn.LSTM):
            raise TypeError(f"lstm must be an nn.LSTM, got {type(lstm).__name__}")
        if lstm.num_layers != 1 or lstm.bidirectional or not lstm.bias or lstm.proj_size or not lstm.batch_first:
            raise ValueError(
                "lstm must be single-layer, unidirectional, batch_first, with biases and no proj_size, "
                f"got {lstm}"
            )
        module = cls(lstm.input_size, lstm.hidden_size, device=lstm.weight_ih_l0.device,
                     dtype=lstm.weight_ih_l0.dtype, **kwargs)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(module, name).copy_(getattr(lstm, f"{name}_l0"))
        return module

    def _project(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        if not self.training or not torch.is_grad_enabled():
            return F.linear(input, weight, bias)
        return meprop_linear(input, weight, bias, k=self.k, mode=self.mode, bias_grad=self.bias_grad)

    def forward(
        self,
        input: torch.Tensor,
        lengths: torch.Tensor | None = None,
        state: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``input: (B, T, in)``, ``lengths: (B,)`` in [1, T] (None: all T) and ``state = (h_0, c_0)``
        each ``(B, h)`` (None: zeros). Returns ``output: (B, T, h)`` and ``(h_n, c_n)``, each ``(B, h)``."""
        if not isinstance(input, torch.Tensor) or input.dim() != 3 or input.shape[-1] != self.input_size:
            shape = tuple(input.shape) if isinstance(input, torch.Tensor) else type(input).__name__
            raise ValueError(f"input must be a (batch, time, {self.input_size}) tensor, got {shape}")
        batch, steps, _ = input.shape
        mask = None
        if lengths is not None:
            lengths = torch.as_tensor(lengths, device=input.device)
            if lengths.shape != (batch,) or lengths.dtype.is_floating_point:
                raise ValueError(f"lengths must be an integer tensor of shape ({batch},), got {lengths}")
            if batch and (int(lengths.min()) < 1 or int(lengths.max()) > steps):
                raise ValueError(f"lengths must lie in [1, {steps}] (the padded length), got {lengths.tolist()}")
            mask = torch.arange(steps, device=input.device).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
        if state is None:
            h = input.new_zeros(batch, self.hidden_size)  # (B, h)
            c = input.new_zeros(batch, self.hidden_size)
        else:
            h, c = state

        gates_x = self._project(input, self.weight_ih, self.bias_ih)  # (B, T, 4h)
        outputs = []
        for t in range(steps):
            gates = gates_x[:, t] + self._project(h, self.weight_hh, self.bias_hh)  # (B, 4h)
            i, f, g, o = gates.chunk(4, dim=1)  # each (B, h)
            c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h_new = torch.sigmoid(o) * torch.tanh(c_new)
            if mask is None:
                h, c = h_new, c_new
                outputs.append(h_new)
            else:
                keep = mask[:, t].unsqueeze(1)  # (B, 1)
                h = torch.where(keep, h_new, h)
                c = torch.where(keep, c_new, c)
                outputs.append(h_new * keep)
        output = torch.stack(outputs, dim=1) if outputs else input.new_zeros(batch, 0, self.hidden_size)
        return output, (h, c)  # (B, T, h), ((B, h), (B, h))

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, k={self.k}, mode={self.mode}, "
            f"bias_grad={self.bias_grad}"
        )
