"""torch.sqrt on CPU with meprop's aten::sqrt kernel against torch's own, interleaved in one process.

For each dtype, thread count and fraction of exact zeros (at random positions), the two
kernels run in alternating blocks (``fast_sqrt.uninstall()`` / ``install(force=True)``), in a
shuffled order each round; printed: median us per call over the rounds (each round's value is
the median of ``--block`` calls), its IQR, and torch / meprop (>1: meprop faster) with the IQR
of the per-round ratios.

    python scripts/sqrt_override_bench.py                        # 392,000 elements
    python scripts/sqrt_override_bench.py --numel 250000 --rounds 30
    python scripts/sqrt_override_bench.py --row 784       # zeros in whole rows, as meProp leaves them
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

import meprop  # noqa: F401  (loads the kernels)
from meprop._impl import fast_sqrt

__all__ = ["main"]


def _values(numel: int, zeros: float, dtype: torch.dtype, row: int = 1) -> torch.Tensor:
    """(numel,) values with about ``zeros`` of them exactly zero, in whole rows of ``row``
    elements (an optimizer's moments under meProp: units no example kept) or, row 1, scattered."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(numel, generator=gen, dtype=dtype) + 1e-3  # (numel,), no zero
    rows = -(-numel // row)
    zero_rows = (torch.rand(rows, generator=gen) < zeros).repeat_interleave(row)[:numel]  # (numel,)
    x[zero_rows] = 0.0
    return x


def _block(x: torch.Tensor, calls: int) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        torch.sqrt(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def _quartiles(values):
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def _measure(x: torch.Tensor, rounds: int, calls: int, rng: random.Random) -> dict:
    per = {"torch": [], "meprop": []}
    arms = list(per)
    for arm in arms:  # warm-up
        fast_sqrt.install(force=True) if arm == "meprop" else fast_sqrt.uninstall()
        _block(x, calls)
    for _ in range(rounds):
        rng.shuffle(arms)
        for arm in arms:
            fast_sqrt.install(force=True) if arm == "meprop" else fast_sqrt.uninstall()
            per[arm].append(_block(x, calls))
    return per


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--numel", type=int, default=392_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--block", type=int, default=20, help="calls per arm per round")
    parser.add_argument("--row", type=int, default=1,
                        help="zeros come in whole rows of this many elements (784: a 784-input layer's weight)")
    parser.add_argument("--zeros", default="0,0.01,0.25,0.5,1", type=lambda s: [float(v) for v in s.split(",")])
    args = parser.parse_args(argv)
    if not fast_sqrt.install(force=True):
        raise SystemExit(f"meprop's sqrt kernel is not installed: {fast_sqrt.status()}")
    rng = random.Random(0)
    all_threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {args.numel} elements, zeros in rows of {args.row}, "
          f"{args.rounds} rounds x {args.block} calls")
    print("| dtype | threads | zeros | torch us (IQR) | meprop us (IQR) | torch / meprop (IQR) |")
    print("|---|---|---|---|---|---|")
    for dtype in (torch.float32, torch.float64):
        for threads in sorted({1, all_threads}):
            torch.set_num_threads(threads)
            for zeros in args.zeros:
                per = _measure(_values(args.numel, zeros, dtype, args.row), args.rounds, args.block, rng)
                ratios = [t / m for t, m in zip(per["torch"], per["meprop"])]
                cells = []
                for values in (per["torch"], per["meprop"], ratios):
                    lo, hi = _quartiles(values)
                    cells.append(f"{statistics.median(values):.3g} ({lo:.3g}-{hi:.3g})")
                print(f"| {str(dtype)[6:]} | {threads} | {zeros:.0%} | " + " | ".join(cells) + " |")
    torch.set_num_threads(all_threads)
    fast_sqrt.install(force=True)


if __name__ == "__main__":
    main()
