"""How close the per-example meProp backward of one linear layer comes to its memory floor.

The compiled per-example backward reads ``dy`` once to select, gathers the k kept rows of
``W`` per example for ``grad_input`` (blocked over column tiles, so a touched row of ``W`` is
read once per tile, not once per example that kept it), and writes each touched weight
gradient row once per tile (the kept entries grouped by output row: a CSR transpose of the
selection). Its floor is therefore the bytes it must move at the machine's bandwidth:

    dy (B*n) + touched rows of W (U*m) + x (B*m) + grad_input (B*m) + touched gradient rows (U*m)

plus, under the suite's allocation policy (``.grad`` preallocated, the row-sparse gradient
added into it), one read and one write of the U touched rows of ``.grad``. U is the number
of distinct output rows kept by some example (at most min(n, B*k)).

The bandwidth is measured here, on this machine (a copy of 256 MB: read + write), and the
backward is timed by the suite's timer (``meprop.lab.engine.timer``) under the suite's
allocation policy (``meprop.lab.engine.allocator``), so both numbers come from the machine
the script runs on.

    python scripts/memory_floor.py [--n 4096] [--batch 1024] [--k 41] [--threads 2]
"""

from __future__ import annotations

import argparse

import torch

import meprop
from meprop.lab.engine import allocator
from meprop.lab.engine.timer import num_threads, time_one
from meprop.selection import topk_per_example


def copy_bandwidth(threads: int, megabytes: int = 256) -> float:
    """Bytes per second of a large tensor copy (bytes read + bytes written)."""
    src = torch.ones(megabytes * (1 << 20) // 4)
    dst = torch.empty_like(src)
    with num_threads(threads):
        t = time_one(lambda: dst.copy_(src), threads=threads, budget_s=2.0, min_samples=10)
    return 2 * src.numel() * 4 / t.median


def floor_bytes(batch: int, n: int, m: int, touched: int, itemsize: int = 4) -> int:
    """Bytes the backward must move (see the module docstring), ``.grad`` accumulation included."""
    return itemsize * (batch * n + touched * m + 2 * batch * m + touched * m + 2 * touched * m)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096, help="out_features")
    parser.add_argument("--m", type=int, default=None, help="in_features (default n)")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--k", type=int, default=41)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    allocator.apply()  # the suite's policy: freed blocks stay in the heap, no page faults per call
    n, m, batch, k = args.n, args.m or args.n, args.batch, args.k
    gen = torch.Generator().manual_seed(0)
    layer = meprop.MepropLinear(m, n, k=k, mode="per_example", sparse_grad=True)
    x = torch.randn(batch, m, generator=gen, requires_grad=True)
    dy = torch.randn(batch, n, generator=gen)
    y = layer(x)
    layer.weight.grad = torch.zeros_like(layer.weight)
    x.grad = torch.zeros_like(x)

    def backward():
        torch.autograd.backward(y, dy, retain_graph=True)

    touched = int(topk_per_example(dy, k).unique().numel())
    with num_threads(args.threads):
        backward()
        t = time_one(backward, threads=args.threads, budget_s=3.0, min_samples=10)
    bandwidth = copy_bandwidth(args.threads)
    need = floor_bytes(batch, n, m, touched)
    floor_s = need / bandwidth
    print(f"per-example backward n={n} m={m} batch={batch} k={k}, {args.threads} threads, "
          f"{touched} touched rows; formulations {meprop.kernels.formulation_counts()}")
    print(f"copy bandwidth   {bandwidth / 1e9:8.2f} GB/s (read + write)")
    print(f"bytes to move    {need / 1e6:8.1f} MB  -> floor {floor_s * 1e3:8.3f} ms")
    print(f"measured         {t.median * 1e3:8.3f} ms (IQR {t.iqr * 1e3:.3f} ms, {len(t.samples)} samples)"
          f"  = {t.median / floor_s:.2f}x the floor")


if __name__ == "__main__":
    main()
