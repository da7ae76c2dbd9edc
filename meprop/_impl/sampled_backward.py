"""The linear backward of the sampled modes (``"sampled"``, ``"sampled_unified"``).

``sampled`` where the compiled ops apply (CPU float32/64, kernels loaded): one op,
``torch.ops.meprop.sampled_backward`` (``meprop/kernels/csrc/sample.cpp``), solves each row's
probabilities, draws the keeps (seeded from the generator) and runs the per-example backward
on the kept, rescaled entries (gathers over variable-length lists, or the masked GEMMs).

Elsewhere (and as the reference) the selection (:func:`meprop.sampling.sampled_scale`) runs in
PyTorch; the kept, rescaled output gradient ``kept = dy * scale`` then goes through O(k) backwards:

- ``sampled_unified``: the K kept columns ``cols: (K,)``; ``dy_k = dy[:, cols] * scale: (N, K)``;
  ``grad_input = dy_k @ W[cols]``, weight-gradient rows ``dy_k.T @ x`` (unified's two GEMMs).
- ``sampled``: a row keeps a varying number of entries; the kept ``(example, column)`` pairs
  (``nonzero``, row-major) feed ``embedding_bag`` with one bag per example (``grad_input``)
  and one per touched output row (the weight gradient).

The weight gradient comes back in the layer's layout (:mod:`meprop._impl.grad_layout`): the
touched rows are the output rows some example kept, as for top-k, so :mod:`meprop.optim`'s
lazy updates and :mod:`meprop.distributed`'s row-sparse hook apply unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from meprop import kernels
from meprop._impl.grad_layout import weight_grad_from_rows
from meprop.sampling import sampled_scale

__all__ = ["sampled_linear_backward"]


def sampled_linear_backward(call):
    """``(grad_input, grad_weight, grad_bias)`` of a :class:`meprop.dispatch.LinearBackward`
    whose mode is a sampled one (k < n, N > 0)."""
    if call.mode == "sampled" and kernels.supports(call.dy, call.x, call.weight):
        return _compiled(call)  # selection, draw and backward in one op (it records its formulation)
    scale = sampled_scale(call.dy, call.k, call.mode, call.generator)  # (N, n) or (n,)
    if call.mode == "sampled_unified":
        kernels.record_formulation("unified")
        grads = _unified(call, scale)
    else:
        kernels.record_formulation("pytorch")
        grads = _gather(call, call.dy * scale, scale != 0)
    grad_input, grad_weight, grad_bias = grads
    if call.need_bias and call.bias_grad == "dense":
        grad_bias = call.dy.sum(0)  # (n,)
    return grad_input, grad_weight, grad_bias


def _unified(call, scale):
    """dy: (N, n), x: (N, m), weight: (n, m); scale: (n,)."""
    dy, n = call.dy, call.weight.shape[0]
    cols = scale.nonzero().squeeze(1)  # (K,) sorted
    dy_k = dy.index_select(1, cols) * scale.index_select(0, cols)  # (N, K)
    grad_input = dy_k @ call.weight.index_select(0, cols) if call.need_input else None  # (N, m)
    grad_weight = None
    if call.need_weight:
        grad_weight = weight_grad_from_rows(cols, dy_k.t() @ call.x, call.param, call.layout)
    grad_bias = dy.new_zeros(n).index_copy_(0, cols, dy_k.sum(0)) if call.need_bias else None
    return grad_input, grad_weight, grad_bias


def _gather(call, kept, mask):
    """The PyTorch path. kept, mask: (N, n); x: (N, m); weight: (n, m)."""
    x, weight = call.x, call.weight
    n, m = weight.shape
    pairs = mask.nonzero()  # (E, 2) row-major: (example, column)
    examples, columns = pairs[:, 0], pairs[:, 1]
    vals = kept[examples, columns]  # (E,)
    grad_input = None
    if call.need_input:
        counts = mask.sum(1)  # (N,)
        offsets = counts.cumsum(0) - counts
        grad_input = (x.new_zeros(x.shape) if m == 0 else
                      F.embedding_bag(columns, weight, offsets, mode="sum", per_sample_weights=vals))  # (N, m)
    grad_weight = None
    if call.need_weight:
        order = columns.argsort(stable=True)
        touched, per_row = torch.unique_consecutive(columns[order], return_counts=True)  # (U,)
        if m == 0:
            rows = x.new_zeros(touched.shape[0], 0)
        else:
            rows = F.embedding_bag(examples[order], x, per_row.cumsum(0) - per_row, mode="sum",
                                   per_sample_weights=vals[order])  # (U, m)
        grad_weight = weight_grad_from_rows(touched, rows, call.param, call.layout)
    grad_bias = kept.sum(0) if call.need_bias else None  # (n,)
    return grad_input, grad_weight, grad_bias


def _compiled(call):
    """``torch.ops.meprop.sampled_backward``: the probabilities, the draw (seeded from
    ``call.generator``, else the default CPU generator) and the backward in one op."""
    dense_weight = call.layout == "dense"
    grad_input, row_index, rows, grad_bias = torch.ops.meprop.sampled_backward(
        call.dy, call.x, call.weight, call.k, call.generator, call.need_input, call.need_weight, call.need_bias,
        call.bias_grad == "dense", dense_weight, "auto",
    )
    grad_weight = None
    if call.need_weight:
        grad_weight = rows if dense_weight else weight_grad_from_rows(row_index, rows, call.param, call.layout)
    return (grad_input if call.need_input else None, grad_weight, grad_bias if call.need_bias else None)
