"""Unified meProp on the default path (grads None) against the authors' algorithm, side by side.

The comparison port: lancopku/meProp's PyTorch ``linearUnified`` backward, written here
(not in the library) as its Function does it: one top-k of the column sums of |dy| for
the batch, then ``dx = dy[:, idx] @ W[idx]`` and a zero ``(n, m)`` weight gradient with the
k rows ``dy[:, idx]^T @ x`` copied in, bias ``dy.sum(0)``. meprop runs ``meprop_linear``
with ``mode="unified", bias_grad="dense"`` (the same arithmetic). Only the backward is timed
(the forward runs once, the graph is kept), both in one run against each other (ABBA
interleaving, the suite's timer), each backward starting from ``.grad = None`` as
``zero_grad()`` leaves it, under the suite's allocator policy (``--malloc``; the default does
not page-fault a fresh (n, m) gradient on every call).

    python scripts/compare_lancopku_unified.py [--n 4096] [--batch 64] [--k 410] [--threads 2]
                                               [--malloc no-page-faults|defaults]
"""

from __future__ import annotations

import argparse

import torch

from meprop import meprop_linear
from meprop.lab.engine import allocator
from meprop.lab.engine.timer import num_threads, time_pair
from meprop.lab.results.stats import bootstrap_ratio_interval


class LancopkuUnified(torch.autograd.Function):
    """The authors' unified linear (weight stored (n, m) here, as nn.Linear does)."""

    @staticmethod
    def forward(ctx, x, weight, bias, k):
        ctx.save_for_backward(x, weight)
        ctx.k = k
        return torch.addmm(bias, x, weight.t())

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        _, idx = dy.abs().sum(0).topk(ctx.k)  # (k,)
        dy_k = dy.index_select(-1, idx)  # (B, k)
        dx = dy_k.mm(weight.index_select(0, idx))  # (B, m)
        dw = weight.new_zeros(weight.shape).index_copy_(0, idx, dy_k.t().mm(x))  # (n, m)
        return dx, dw, dy.sum(0), None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--k", type=int, default=410)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, default=3.0)
    parser.add_argument("--malloc", choices=allocator.POLICIES, default=allocator.FAIR)
    args = parser.parse_args()
    allocator.apply(args.malloc)
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.n, requires_grad=True)
    w = torch.randn(args.n, args.n, requires_grad=True)
    b = torch.randn(args.n, requires_grad=True)
    dy = torch.randn(args.batch, args.n)

    def step(forward):
        out = forward()  # (B, n): one graph, its backward timed again and again

        def run():
            x.grad = w.grad = b.grad = None
            out.backward(dy, retain_graph=True)
        return run

    ours = step(lambda: meprop_linear(x, w, b, k=args.k, mode="unified", bias_grad="dense"))
    theirs = step(lambda: LancopkuUnified.apply(x, w, b, args.k))
    ours()
    got = (x.grad.clone(), w.grad.clone(), b.grad.clone())
    theirs()
    for a, c in zip(got, (x.grad, w.grad, b.grad)):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-3)  # float32: GEMMs sum in another order
    with num_threads(args.threads):
        t_theirs, t_ours = time_pair(theirs, ours, threads=args.threads, budget_s=args.budget, min_samples=10)
    for name, t in (("lancopku", t_theirs), ("meprop", t_ours)):
        print(f"{name:9s} median {t.median * 1e3:8.3f} ms  IQR {t.iqr * 1e3:.3f} ms  ({len(t.samples)} samples)")
    low, high = bootstrap_ratio_interval(t_theirs.samples, t_ours.samples)
    print(f"lancopku / meprop = {t_theirs.median / t_ours.median:.2f}x ({low:.2f}-{high:.2f})  "
          f"(backward only; n={args.n}, batch={args.batch}, k={args.k}, threads={args.threads}, "
          f"malloc {args.malloc})")


if __name__ == "__main__":
    main()
