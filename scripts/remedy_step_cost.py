"""Step cost of the remedies against plain top-k: one training step, interleaved, one process.

The paper's MLP (784 -> hidden x 2 -> 10), convert(k) + meprop.optim.Adam(lazy=True), per
variant: zero_grad, forward, cross-entropy, backward, step. Each round times a block of
steps of every variant in turn (order rotated per round); prints the median and IQR of the
per-step time and each variant's ratio to top-k (median of per-round ratios, with IQR).

    python scripts/remedy_step_cost.py --batch 10 --hidden 500 --k 20 --rounds 30
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import meprop

VARIANTS = {
    "topk": dict(mode="per_example"),
    "sampled": dict(mode="sampled"),
    "topk+ef": dict(mode="per_example", error_feedback=0.9),
    "unified": dict(mode="unified"),
    "sampled_unified": dict(mode="sampled_unified"),
    "dense_warmup_sched": dict(mode="per_example", schedule=True),
}


def build(hidden, k, options):
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, 10))
    options = dict(options)
    schedule = options.pop("schedule", False)
    model = meprop.convert(base, k=k, **options)
    opt = meprop.optim.Adam(model.parameters(), lr=1e-3, lazy=True)
    sched = meprop.schedule.KScheduler(model, meprop.schedule.dense_warmup(0, k)) if schedule else None
    return model, opt, sched


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=500)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--block", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.variants.split(",")
    setups = {name: build(args.hidden, args.k, VARIANTS[name]) for name in names}
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 784, generator=gen)
    y = torch.randint(0, 10, (args.batch,), generator=gen)

    def block(name):
        model, opt, sched = setups[name]
        start = time.perf_counter()
        for _ in range(args.block):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            if sched is not None:
                sched.step()
        return (time.perf_counter() - start) / args.block

    for name in names:  # warm-up (kernels loaded, tuner measured)
        for _ in range(3):
            block(name)
    times = {name: [] for name in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            times[name].append(block(name))
    base = times[names[0]]
    print(f"B={args.batch} hidden={args.hidden} k={args.k} threads={args.threads} rounds={args.rounds} "
          f"block={args.block}  torch {torch.__version__}")
    for name in names:
        t = sorted(times[name])
        q = statistics.quantiles(t, n=4)
        ratios = statistics.quantiles([a / b for a, b in zip(times[name], base)], n=4)
        print(f"{name:20s} step {1e6 * statistics.median(t):8.1f} us (IQR {1e6 * q[0]:.1f}-{1e6 * q[2]:.1f})"
              f"  vs {names[0]}: {ratios[1]:.3f}x (IQR {ratios[0]:.3f}-{ratios[2]:.3f})")


if __name__ == "__main__":
    main()
