"""The ``transformer`` workload: one GPT-2-style pre-LN block (nanoGPT's), dense vs meProp.

The block (``x: (B, T, d)``): ``x + proj(attn(qkv(ln_1(x))))`` then ``x + out(gelu(fc(ln_2(x))))``,
causal multi-head attention through ``F.scaled_dot_product_attention`` with heads of
:data:`HEAD_DIM` (:func:`head_dim_for`: a d below 64, e.g. 32 or 48, gets one head of width
d), an MLP ``d -> 4d -> d``. The four projections (``qkv: d -> 3d``,
``proj: d -> d``, ``fc: d -> 4d``, ``out: 4d -> d``) are ``nn.Linear`` layers called through
their forward, so :func:`meprop.convert` really sparsifies them (``nn.MultiheadAttention``
would not let it). The case's ``hidden`` is d, ``batch`` counts sequences of
:data:`SEQUENCE` tokens (every token is one example for top-k), and ``k`` is kept per token
of a d-wide output; the 3d and 4d layers keep the same fraction (``k_ratio = k / d``).
The loss is the mean of the squared block output. ``linear_backward`` has no meaning for a
block (attention sits between its projections) and is reported as unsupported.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from meprop.lab.ops.model_ops import SEED, Unsupported, case_dtype, model_op
from meprop.lab.workloads import REGISTRY
from meprop.nn import convert
from meprop.lab.measurements import measurement

__all__ = ["SEQUENCE", "HEAD_DIM", "head_dim_for", "TransformerBlock", "build_transformer",
           "build_transformer_case"]

#: Tokens per sequence of the ``transformer`` workload.
SEQUENCE = REGISTRY["transformer"].sequence
#: Width of one attention head (GPT-2's), for every d it divides.
HEAD_DIM = 64


def head_dim_for(d_model: int) -> int:
    """The head width of a block of width ``d_model``: ``min(HEAD_DIM, d_model)`` (32 -> one
    head of 32, 48 -> one of 48, 128 -> two of 64). ``d_model`` must be a multiple of it."""
    return min(HEAD_DIM, d_model)


class TransformerBlock(nn.Module):
    """Pre-LN block of width ``d_model`` with ``d_model // head_dim`` causal attention heads."""

    def __init__(self, d_model: int, head_dim: int | None = None) -> None:
        super().__init__()
        head_dim = head_dim_for(d_model) if head_dim is None else head_dim
        if d_model % head_dim:
            raise ValueError(f"d_model must be a multiple of head_dim={head_dim}, got {d_model}")
        self.heads = d_model // head_dim
        self.ln_1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln_2 = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.out = nn.Linear(4 * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape  # (B, T, d)
        q, k, v = self.qkv(self.ln_1(x)).split(width, dim=-1)  # (B, T, d) each
        q, k, v = (t.view(batch, tokens, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, heads, T, d / heads)
        x = x + self.proj(y.transpose(1, 2).reshape(batch, tokens, width))
        return x + self.out(F.gelu(self.fc(self.ln_2(x))))


def build_transformer_case(case, variant: str) -> Callable[[], None]:
    """The workload registry's builder: :func:`build_transformer` with the engine's seed and dtype."""
    return build_transformer(case, variant, dtype=case_dtype(case), seed=SEED, unsupported=Unsupported)


def build_transformer(case, variant: str, *, dtype: torch.dtype, seed: int,
                      unsupported: type[Exception]) -> Callable[[], None]:
    """One measured operation of a ``transformer`` case (see :func:`meprop.lab.ops.build.build`)."""
    if measurement(case.measurement).linear_layers_only:
        raise unsupported("linear_backward is not defined for the transformer workload (attention "
                          "sits between its projections): measure overall_backward or train_step")
    head_dim = head_dim_for(case.hidden)
    if case.hidden % head_dim:
        raise unsupported(f"the transformer workload needs hidden (d_model) at most {HEAD_DIM} or a "
                          f"multiple of {HEAD_DIM} (heads of min({HEAD_DIM}, d)), got {case.hidden}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model: nn.Module = TransformerBlock(case.hidden)
    model = model.to(device=case.device, dtype=dtype)
    step = measurement(case.measurement).steps_optimizer
    if variant == "meprop":  # all four projections; the block has no output layer to keep
        model = convert(model, k_ratio=case.k / case.hidden, mode=case.mode, sparse_grad=not step,
                        keep_output_layer=False, inplace=True)
    model.train()
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(case.batch, SEQUENCE, case.hidden, generator=gen).to(case.device, dtype)

    return model_op(case, variant, model, lambda: model(x), lambda: model(x).float().pow(2).mean())
