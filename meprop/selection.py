"""Which output-gradient entries survive meProp's backward (paper, Section 2).

Pure tensor functions, no autograd: given the output gradient of a linear layer,
flattened to ``dy: (N, n)`` (N examples, n output features), return the indices
of the entries that are kept.

- :func:`topk_per_example`: the k entries of largest magnitude in each row
  (the paper's meProp). Returns ``(N, k)``.
- :func:`topk_unified`: one set of k columns for the whole batch, the top-k of
  the column sums of ``|dy|`` (the paper's GPU variant). Returns ``(k,)``.
- :func:`random_per_example`: k uniformly random entries per row (the paper's
  ablation). Returns ``(N, k)``.
- ``"sampled"`` / ``"sampled_unified"``: unbiased sampling (k entries in expectation,
  kept ones scaled by 1/p), see :mod:`meprop.sampling`; their kept sets vary in size, so
  :func:`select` does not return them.
- :func:`topk_unified_synchronized`: :func:`topk_unified` over the batches of all ranks
  of the default process group (the column sums are all-reduced first), so that every
  rank keeps the same k columns. Returns ``(k,)``.
- :func:`is_sparse`: whether a backward selects at all (``k < n`` and a non-empty batch);
  every path asks it, and takes the dense backward when it says no.

Tie-breaking: selection uses :func:`torch.topk`, which does not specify which of
several equal magnitudes is kept; exactly k distinct indices are always returned.
NaN counts as the largest magnitude, so a NaN in the gradient is always kept and
propagates to the parameter gradients as it would through ``nn.Linear``.
"""

from __future__ import annotations

import torch

__all__ = [
    "MODES",
    "FIXED_K_MODES",
    "SAMPLED_MODES",
    "RANDOM_MODES",
    "topk_per_example",
    "topk_unified",
    "topk_unified_synchronized",
    "column_abs_sum",
    "random_per_example",
    "select",
    "is_sparse",
]

#: Modes that keep exactly k entries per example (or k columns), as index lists.
FIXED_K_MODES = ("per_example", "unified", "random")
#: Unbiased modes: k entries in expectation, kept ones scaled by 1/p (:mod:`meprop.sampling`).
SAMPLED_MODES = ("sampled", "sampled_unified")
#: The selection modes accepted everywhere a ``mode`` argument is taken.
MODES = FIXED_K_MODES + SAMPLED_MODES
#: Modes that draw random numbers (they take a ``generator``).
RANDOM_MODES = ("random",) + SAMPLED_MODES


def is_sparse(k: int, n: int, batch: int) -> bool:
    """Whether keeping ``k`` of the ``n`` output-gradient entries of each of ``batch`` rows
    drops anything: ``k < n`` and ``batch > 0``.

    Otherwise meProp's backward is the dense one (``k >= n`` keeps every entry; an empty batch
    has nothing to select). The one place Python decides it; the compiled ops' twin is
    ``is_sparse`` in ``meprop/kernels/csrc/common.h``. ``k`` is trusted (checked at the public
    entries: :func:`meprop.checks.check_k`, :func:`meprop.checks.resolve_k`).
    """
    return k < n and batch > 0


def topk_per_example(dy: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``(N, k)`` of the k largest-magnitude entries of each row of ``dy: (N, n)``."""
    # sorted=False: the order inside a row does not matter and sorting costs O(k log k).
    return dy.abs().topk(k, dim=1, sorted=False).indices


#: Rows of ``dy`` reduced at a time on CPU: blocks of about this many elements stay in cache
#: and avoid a full-size ``|dy|`` temporary (a fresh 32 MB buffer is page-faulted on every call).
CPU_BLOCK_ELEMENTS = 1 << 16


def column_abs_sum(dy: torch.Tensor) -> torch.Tensor:
    """``|dy|.sum(0)``: ``(n,)`` for ``dy: (N, n)``, accumulated in float32 or wider."""
    acc_dtype = torch.promote_types(dy.dtype, torch.float32)
    if dy.device.type != "cpu" or dy.numel() <= CPU_BLOCK_ELEMENTS:
        return dy.abs().sum(dim=0, dtype=acc_dtype)
    rows = max(1, CPU_BLOCK_ELEMENTS // dy.shape[1])
    total = dy.new_zeros(dy.shape[1], dtype=acc_dtype)
    for start in range(0, dy.shape[0], rows):
        total += dy[start : start + rows].abs().sum(dim=0, dtype=acc_dtype)
    return total


def topk_unified(dy: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``(k,)`` of the k columns of ``dy: (N, n)`` with the largest sum of ``|dy|``."""
    return column_abs_sum(dy).topk(k, sorted=False).indices


def topk_unified_synchronized(dy: torch.Tensor, k: int) -> torch.Tensor:
    """:func:`topk_unified` of the ranks' batches concatenated: the same ``(k,)`` on every rank.

    Costs one blocking all-reduce of the ``(n,)`` column sums (float32 or wider) on the
    default process group, inside the backward; without a group of several ranks it is
    :func:`topk_unified`.
    """
    scores = column_abs_sum(dy)  # (n,)
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(scores)
    return scores.topk(k, sorted=False).indices


def random_per_example(
    dy: torch.Tensor, k: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Indices ``(N, k)`` of k distinct entries per row of ``dy: (N, n)``, uniformly at random.

    ``generator`` must live on ``dy``'s device; the same seed gives the same indices.
    """
    keys = torch.rand(dy.shape, generator=generator, device=dy.device)  # (N, n)
    return keys.topk(k, dim=1, sorted=False).indices


def select(
    dy: torch.Tensor, k: int, mode: str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Dispatch on ``mode``: ``(N, k)`` indices for per-example modes, ``(k,)`` for unified."""
    if mode == "per_example":
        return topk_per_example(dy, k)
    if mode == "unified":
        return topk_unified(dy, k)
    if mode == "random":
        return random_per_example(dy, k, generator)
    raise ValueError(f"mode must be one of {FIXED_K_MODES} (index selections), got {mode!r}")
