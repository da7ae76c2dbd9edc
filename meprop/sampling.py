"""Unbiased sampled selection: keep each output-gradient entry with probability p, scale it by 1/p.

Top-k keeps the largest entries and drops the rest: a biased estimate of the gradient
(Chmiel et al., ICLR 2023, arXiv 2203.10991). Here an entry with magnitude ``a_i`` is kept
with probability ``p_i = min(1, c * a_i)``, with ``c`` chosen so that ``sum_i p_i = k``, and
a kept entry is divided by ``p_i``. The kept gradient is then an *unbiased* estimate of the
dense one (``E[kept] = dy``), with k entries kept in expectation; among the estimators that
keep k entries in expectation and scale them by 1/p, this choice of p has the least variance.

Two forms:

- ``"sampled"``: per example (row of ``dy: (N, n)``), scores ``a = |dy[b]|``;
- ``"sampled_unified"``: one column set for the batch, scores ``a_j = sum_b |dy[b, j]|``
  (the unified mode's scores); column j is kept for every example or for none.

Variance. Entry i adds ``dy_i^2 (1/p_i - 1)`` to the variance of the kept gradient
(zero where ``p_i = 1``). Writing ``S`` for the sum of ``|dy|`` over the entries that are not
surely kept and ``k'`` for the number of those in the budget, ``c = k'/S`` and the variance of
a row is ``sum_i |dy_i| (S/k' - |dy_i|)``, about ``S^2 / k'`` when no entry dominates: it falls
like ``1/k`` (the squared error of a row scales as ``(n/k - 1)`` times a dense row's squared
norm for equal magnitudes), and vanishes at ``k = n`` (every ``p = 1``). Summed over a batch of
N independent rows it grows like N, against ``N^2`` for the squared norm of the batch's
summed gradient: larger batches dilute it. At small ``k/n`` (a few percent) the noise is
large; the unified form draws once per batch (correlated across examples, same expectation).

Probabilities are solved exactly ("water-filling"): with ``v`` the k largest scores of a
row in decreasing order and ``t`` the number of surely kept entries, ``c_t = (k - t) / (sum of
the scores but the t largest)``; ``t`` is the smallest with ``c_t * v[t] <= 1``. Entries with
a score of zero are never kept; non-finite scores (NaN, inf) are always kept (p = 1, not
counted in the budget), so they propagate as they do through ``nn.Linear``.

Random draws come from ``generator`` (on ``dy``'s device) when given, else from torch's
global random number generator (``torch.manual_seed`` makes runs reproducible then).
"""

from __future__ import annotations

import torch

from meprop.selection import column_abs_sum, is_sparse

__all__ = ["sampling_probabilities", "sampled_scale", "draw_kept"]

_transforms_active = getattr(torch._C, "_are_functorch_transforms_active", lambda: False)


def sampling_probabilities(scores: torch.Tensor, k: int) -> torch.Tensor:
    """``p: (R, n)`` with ``p = min(1, c * scores)`` per row and ``sum(p) = k`` per row.

    ``scores: (R, n)``, non-negative. A row with at most k positive scores keeps each of them
    with p = 1 (the sum is then their count). Non-finite scores get p = 1 outside the budget.
    Computed in float32 or wider (the row sums in float64).
    """
    work = scores if scores.dtype in (torch.float32, torch.float64) else scores.float()
    # NaN/inf (rare) are kept surely and the rest solved without them; under torch.func (no
    # data-dependent branch there) and on meta tensors always this way.
    if _transforms_active() or work.device.type == "meta" or not bool(torch.isfinite(work).all()):
        finite = torch.isfinite(work)
        p = _solve(torch.where(finite, work, torch.zeros_like(work)), k)
        return torch.where(finite, p, torch.ones_like(p))
    return _solve(work, k)


def _solve(work: torch.Tensor, k: int) -> torch.Tensor:
    """:func:`sampling_probabilities` of finite scores ``work: (R, n)``."""
    rows, n = work.shape
    if not is_sparse(k, n, rows):  # nothing to sample: every positive score kept surely
        return (work > 0).to(work.dtype)
    top, index = work.topk(k, dim=1, sorted=True)  # (R, k), decreasing
    top = top.double()
    # The n - k smallest summed apart (no cancellation against a dominant score), then the
    # sums of "all but the t largest" for t = 0..k-1 from the smallest up.
    tail = work.scatter(1, index, 0).sum(1, dtype=torch.float64, keepdim=True)  # (R, 1)
    rest = tail + top.flip(1).cumsum(1).flip(1)  # (R, k)
    budget = k - torch.arange(k, dtype=torch.float64, device=work.device)  # (k,)
    c_t = budget / rest  # (R, k); inf where nothing is left
    valid = c_t * top <= 1  # (R, k); NaN (inf * 0) is False
    t = valid.to(torch.int8).argmax(1, keepdim=True)  # first valid t (0 when none is)
    # No valid t: at most k positive scores, each kept surely (a huge c; 0 * c stays 0).
    c = torch.where(valid.any(1, keepdim=True), c_t.gather(1, t), torch.finfo(work.dtype).max)
    return (work * c.to(work.dtype)).clamp_max_(1)


def draw_kept(p: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """The bool mask of entries kept: each independently with probability ``p`` (same shape)."""
    return torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype) < p


def sampled_scale(
    dy: torch.Tensor, k: int, mode: str = "sampled", generator: torch.Generator | None = None
) -> torch.Tensor:
    """``1/p`` where an entry of ``dy: (N, n)`` is kept, 0 elsewhere: ``dy * scale`` is unbiased.

    ``mode="sampled"``: ``(N, n)``, each row keeps k entries in expectation; ``"sampled_unified"``:
    ``(n,)``, k columns in expectation for the whole batch (scores: the column sums of ``|dy|``).
    In ``dy``'s dtype. Draws from ``generator`` (on ``dy``'s device), else the global generator.
    """
    if mode == "sampled":
        p = sampling_probabilities(dy.abs(), k)  # (N, n)
    elif mode == "sampled_unified":
        p = sampling_probabilities(column_abs_sum(dy).unsqueeze(0), k)[0]  # (n,)
    else:
        raise ValueError(f"mode must be 'sampled' or 'sampled_unified', got {mode!r}")
    kept = draw_kept(p, generator)
    return torch.where(kept, p.reciprocal(), torch.zeros_like(p)).to(dy.dtype)
