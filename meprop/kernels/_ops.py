"""Fake (meta) implementations of the meprop ops, so ``torch.compile`` can trace them.

Shapes follow the sources in ``csrc/``. The number U of touched weight-gradient rows
depends on the data: it is an unbacked size (``new_dynamic_size``) unless the op writes the
dense ``(n, m)`` weight gradient (``dense_weight=True``), whose shape is static.
"""

from __future__ import annotations

import torch

__all__: list[str] = []


def _empty(like: torch.Tensor, *shape, dtype=None) -> torch.Tensor:
    return like.new_empty(shape, dtype=dtype or like.dtype)


@torch.library.register_fake("meprop::select_rows")
def _select_rows_fake(dy, k):
    rows, n = dy.shape
    kept = min(k, n)
    return _empty(dy, rows, kept, dtype=torch.long), _empty(dy, rows, kept)


@torch.library.register_fake("meprop::per_example_backward")
def _per_example_backward_fake(dy, x, weight, k, indices, need_input, need_weight, need_bias,
                               dense_bias, dense_weight, formulation):
    batch, n = dy.shape
    m = x.shape[1]
    grad_input = _empty(dy, batch, m) if need_input else _empty(dy, 0)
    if need_weight and dense_weight:
        row_index, rows = _empty(dy, 0, dtype=torch.long), _empty(dy, n, m)
    elif need_weight:
        touched = torch.library.get_ctx().new_dynamic_size()
        row_index, rows = _empty(dy, touched, dtype=torch.long), _empty(dy, touched, m)
    else:
        row_index, rows = _empty(dy, 0, dtype=torch.long), _empty(dy, 0)
    grad_bias = _empty(dy, n) if need_bias else _empty(dy, 0)
    return grad_input, row_index, rows, grad_bias


@torch.library.register_fake("meprop::dense_from_rows")
def _dense_from_rows_fake(row_index, rows, n, stream_above=-1):
    return _empty(rows, n, rows.shape[1])


@torch.library.register_fake("meprop::lstm_forward")
def _lstm_forward_fake(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, lengths):
    batch, steps, _ = x.shape
    hidden = weight_hh.shape[1]
    return (_empty(x, batch, steps, hidden), _empty(x, batch, hidden), _empty(x, batch, hidden),
            _empty(x, batch, steps, 4 * hidden), _empty(x, batch, steps, hidden))


@torch.library.register_fake("meprop::lstm_backward")
def _lstm_backward_fake(grad_output, grad_h_n, grad_c_n, x, h0, c0, weight_ih, weight_hh, output,
                        gates, cells, lengths, k, need_input, dense_bias, dense_weight):
    batch, steps, inputs = x.shape
    hidden = weight_hh.shape[1]
    gates_n = 4 * hidden
    grad_x = _empty(x, batch, steps, inputs) if need_input else _empty(x, 0)
    if dense_weight:
        row_index = _empty(x, 0, dtype=torch.long)
        rows_ih, rows_hh = _empty(x, gates_n, inputs), _empty(x, gates_n, hidden)
    else:
        touched = torch.library.get_ctx().new_dynamic_size()
        row_index = _empty(x, touched, dtype=torch.long)
        rows_ih, rows_hh = _empty(x, touched, inputs), _empty(x, touched, hidden)
    return (grad_x, _empty(x, batch, hidden), _empty(x, batch, hidden), row_index, rows_ih, rows_hh,
            _empty(x, gates_n))


@torch.library.register_fake("meprop::lazy_adam_rows_")
def _lazy_adam_rows_fake(param, exp_avg, exp_avg_sq, max_exp_avg_sq, row_index, rows, step_size, lr,
                         beta1, beta2, eps, weight_decay, decoupled, maximize):
    return None  # updates param and the state in place


@torch.library.register_fake("meprop::sampled_backward")
def _sampled_backward_fake(dy, x, weight, k, generator, need_input, need_weight, need_bias, dense_bias,
                           dense_weight, formulation):
    return _per_example_backward_fake(dy, x, weight, k, None, need_input, need_weight, need_bias, dense_bias,
                                      dense_weight, formulation)
