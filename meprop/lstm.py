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

Two implementations, the same numbers:

- the compiled path (CPU, float32/float64, ``mode="per_example"``; see
  :mod:`meprop.kernels`): the whole sequence is one op forward (``meprop::lstm_forward``)
  and one op backward (``meprop::lstm_backward``): per step, the gate gradient, its top-k,
  and ``dh_{t-1}`` from the k kept rows of ``W_hh``; then grad_input and the touched rows of
  both weight gradients (the union over all steps) in one blocked pass. Since ``gates = gx +
  gh``, the two projections share the gate gradient and so the selection.
- the PyTorch path (everything else, and ``MEPROP_KERNELS=off``): a Python loop over time
  steps with :func:`meprop.meprop_linear` on each projection, the reference in the tests.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from meprop import dispatch
from meprop._impl.masked_backward import functorch_active
from meprop.error_feedback import ErrorFeedback
from meprop.checks import check_bool, check_choice, check_positive_int, resolve_k
from meprop._impl.grad_layout import choose_layout, mark_meprop_weight, weight_grad_from_rows
from meprop.functional import meprop_linear
from meprop.options import BIAS_GRADS
from meprop.selection import MODES, RANDOM_MODES

__all__ = ["MepropLSTM"]


class MepropLSTM(nn.Module):
    """Single-layer batch-first LSTM with meProp on its gate projections.

    Args:
        input_size, hidden_size: as ``nn.LSTM``.
        k / k_ratio: at most one; k in [1, 4 * hidden_size] entries of the 4h gate
            pre-activation gradient kept per example (per sequence and step). Neither
            given (or ``k = 4 * hidden_size``): the dense gradient.
        mode, bias_grad, sparse_grad: as :func:`meprop.meprop_linear` (``sparse_grad``:
            row-sparse ``weight_ih`` / ``weight_hh`` gradients holding the rows touched at
            any step).
        generator: random source of ``mode="random"`` and the sampled modes (None: torch's
            global generator). Those modes take the PyTorch path; each projection draws its
            own selection (the two see the same gate gradient, so each stays unbiased).
        error_feedback: a decay in (0, 1] gives each projection a dropped-gradient memory
            (:mod:`meprop.error_feedback`; submodules ``error_feedback_ih`` and
            ``error_feedback_hh``, each ``(4h,)``). The recurrent projection runs once per
            time step, so what its selection drops at step t re-enters at step t-1 of the
            same backward, and at the next backward. It takes the PyTorch path.

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
        sparse_grad: bool = False,
        generator: torch.Generator | None = None,
        error_feedback: float | None = None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.input_size = check_positive_int(input_size, "input_size")
        self.hidden_size = check_positive_int(hidden_size, "hidden_size")
        gates = 4 * hidden_size
        self.k = gates if k is None and k_ratio is None else resolve_k(k, k_ratio, gates)
        self.mode = check_choice(mode, "mode", MODES)
        self.bias_grad = check_choice(bias_grad, "bias_grad", BIAS_GRADS)
        self.sparse_grad = check_bool(sparse_grad, "sparse_grad")
        if generator is not None and (not isinstance(generator, torch.Generator) or self.mode not in RANDOM_MODES):
            raise ValueError(f"generator must be a torch.Generator used by the modes {RANDOM_MODES}, got "
                             f"{type(generator).__name__} with mode={self.mode!r}")
        self.generator = generator
        factory = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(gates, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(gates, hidden_size, **factory))
        self.bias_ih = nn.Parameter(torch.empty(gates, **factory))
        self.bias_hh = nn.Parameter(torch.empty(gates, **factory))
        self.reset_parameters()
        self._mark_weights()
        self.error_feedback_ih = self.error_feedback_hh = None
        if error_feedback is not None:
            self.error_feedback_ih = ErrorFeedback(gates, error_feedback, **factory)
            self.error_feedback_hh = ErrorFeedback(gates, error_feedback, **factory)

    def _mark_weights(self) -> None:
        # meProp weights: a lazy meprop.optim optimizer updates their touched rows only
        mark_meprop_weight(self.weight_ih)
        mark_meprop_weight(self.weight_hh)

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

    def _project(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                 feedback: ErrorFeedback | None) -> torch.Tensor:
        if not self.training or not torch.is_grad_enabled():
            return F.linear(input, weight, bias)
        generator = getattr(self, "generator", None) if self.mode in RANDOM_MODES else None
        return meprop_linear(input, weight, bias, k=self.k, mode=self.mode, bias_grad=self.bias_grad,
                             sparse_grad=self.sparse_grad, generator=generator, error_feedback=feedback)

    def forward(
        self,
        input: torch.Tensor,
        lengths: torch.Tensor | None = None,
        state: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``input: (B, T, in)``, ``lengths: (B,)`` in [1, T] (None: all T) and ``state = (h_0, c_0)``
        each ``(B, h)`` (None: zeros). Returns ``output: (B, T, h)`` and ``(h_n, c_n)``, each ``(B, h)``."""
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor (batch, time, {self.input_size}), "
                            f"got {type(input).__name__}")
        if input.dim() != 3 or input.shape[-1] != self.input_size:
            raise ValueError(f"input must be a (batch, time, {self.input_size}) tensor, got {tuple(input.shape)}")
        batch, steps, _ = input.shape
        mask = None
        if lengths is not None:
            if not isinstance(lengths, (torch.Tensor, list, tuple)):
                raise TypeError(f"lengths must be an integer tensor of shape ({batch},) or None, "
                                f"got {type(lengths).__name__}")
            lengths = torch.as_tensor(lengths, device=input.device)
            if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
                raise TypeError(f"lengths must be an integer tensor of shape ({batch},), got dtype {lengths.dtype}")
            if lengths.shape != (batch,):
                raise ValueError(f"lengths must be an integer tensor of shape ({batch},), "
                                 f"got shape {tuple(lengths.shape)}")
            if batch and (int(lengths.min()) < 1 or int(lengths.max()) > steps):
                raise ValueError(f"lengths must lie in [1, {steps}] (the padded length), got {lengths.tolist()}")
            mask = torch.arange(steps, device=input.device).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
        if state is None:
            h = input.new_zeros(batch, self.hidden_size)  # (B, h)
            c = input.new_zeros(batch, self.hidden_size)
        else:
            if (not isinstance(state, (tuple, list)) or len(state) != 2
                    or not all(isinstance(t, torch.Tensor) for t in state)):
                raise TypeError(f"state must be a pair (h_0, c_0) of tensors or None, got {type(state).__name__}")
            h, c = state
            for name, tensor in (("h_0", h), ("c_0", c)):
                if tuple(tensor.shape) != (batch, self.hidden_size):
                    raise ValueError(f"state's {name} must have shape ({batch}, {self.hidden_size}), "
                                     f"got {tuple(tensor.shape)}")

        self._mark_weights()  # again: a deepcopy or a new Parameter drops the mark
        if self._use_kernels(input, h, c):
            return self._fused(input, lengths, h, c)

        feedback_ih, feedback_hh = getattr(self, "error_feedback_ih", None), getattr(self, "error_feedback_hh", None)
        gates_x = self._project(input, self.weight_ih, self.bias_ih, feedback_ih)  # (B, T, 4h)
        outputs = []
        for t in range(steps):
            gates = gates_x[:, t] + self._project(h, self.weight_hh, self.bias_hh, feedback_hh)  # (B, 4h)
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
        # No step (T = 0): an empty slice of the projection, so that the output is in the graph
        # (a backward through it gives zero gradients), as the compiled path's is.
        output = torch.stack(outputs, dim=1) if outputs else gates_x[..., :self.hidden_size]
        return output, (h, c)  # (B, T, h), ((B, h), (B, h))

    def _use_kernels(self, input, h, c) -> bool:
        if functorch_active() or getattr(self, "error_feedback_ih", None) is not None:
            return False  # torch.func, error feedback: the PyTorch path (meprop_linear)
        return dispatch.lstm_kernels(self.mode, self.training, input, h, c, *self.parameters())

    def _fused(self, input, lengths, h, c):
        lengths = None if lengths is None else lengths.to(device="cpu", dtype=torch.long)
        params = (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        if not torch.is_grad_enabled() or not any(t.requires_grad for t in (input, h, c, *params)):
            output, h_n, c_n, _, _ = torch.ops.meprop.lstm_forward(input, h, c, *params, lengths)
            return output, (h_n, c_n)
        # eval() with gradients: the dense gradient, as the PyTorch path's F.linear gives
        k = self.k if self.training else 4 * self.hidden_size
        layouts = (choose_layout(self.weight_ih, self.sparse_grad), choose_layout(self.weight_hh, self.sparse_grad))
        output, h_n, c_n = _FusedLSTMFunction.apply(
            input, h, c, *params, lengths, k, self.bias_grad == "dense", layouts
        )
        return output, (h_n, c_n)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, k={self.k}, mode={self.mode}, "
            f"bias_grad={self.bias_grad}{', sparse_grad=True' if self.sparse_grad else ''}"
        )


class _FusedLSTMFunction(torch.autograd.Function):
    """The whole sequence through the compiled ops: one forward op, one backward op."""

    @staticmethod
    def forward(ctx, input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, k, dense_bias, layouts):
        output, h_n, c_n, gates, cells = torch.ops.meprop.lstm_forward(
            input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, lengths
        )  # (B, T, h), (B, h), (B, h), (B, T, 4h) activated gates, (B, T, h) cell states
        ctx.save_for_backward(input, h0, c0, weight_ih, weight_hh, output, gates, cells)
        ctx.lengths, ctx.k, ctx.dense_bias, ctx.layouts = lengths, k, dense_bias, layouts
        return output, h_n, c_n

    @staticmethod
    def backward(ctx, grad_output, grad_h_n, grad_c_n):
        if torch.is_grad_enabled():  # create_graph=True: the kernel's gradients would be constants
            raise RuntimeError(
                "MepropLSTM: double backward (create_graph=True) is not supported by its compiled "
                "path, whose gradients are not differentiable; the PyTorch path is (set "
                "MEPROP_KERNELS=off, or use mode='unified' or 'random')"
            )
        input, h0, c0, weight_ih, weight_hh, output, gates, cells = ctx.saved_tensors
        need = ctx.needs_input_grad
        dense_weight = ctx.layouts == ("dense", "dense")
        grad_x, grad_h0, grad_c0, row_index, rows_ih, rows_hh, grad_bias = torch.ops.meprop.lstm_backward(
            grad_output, grad_h_n, grad_c_n, input, h0, c0, weight_ih, weight_hh, output, gates, cells,
            ctx.lengths, ctx.k, need[0], ctx.dense_bias, dense_weight,
        )
        if dense_weight:  # the kernel wrote the touched rows straight into dense zero tensors
            grad_ih, grad_hh = rows_ih, rows_hh
        else:  # the rows touched at any step (sorted unique), in the layout each weight asks for
            grad_ih = weight_grad_from_rows(row_index, rows_ih, weight_ih, ctx.layouts[0])
            grad_hh = weight_grad_from_rows(row_index, rows_hh, weight_hh, ctx.layouts[1])
        return (grad_x if need[0] else None, grad_h0 if need[1] else None, grad_c0 if need[2] else None,
                grad_ih if need[3] else None, grad_hh if need[4] else None,
                grad_bias if need[5] else None, grad_bias.clone() if need[6] else None,
                None, None, None, None)
