"""The training step of a converted MLP against dense, across torch optimizers (ms/step).

The paper's MNIST MLP (784 -> h -> h -> 10; hidden layers meProp, output dense), one
training step = ``zero_grad``, forward, cross-entropy, backward, ``optimizer.step()``. Every
arm (model x optimizer x implementation) owns its model (same initial weights) and
optimizer; after ``--warmup`` untimed steps per arm the arms run interleaved in blocks of
``--block`` timed steps, in a shuffled order each round, on the same batches. Data: an
MNIST-shaped synthetic set (pixels in [0, 1), about 19% non-zero, a zero border of
``--border`` pixels as in MNIST; labels from a fixed random teacher), so nothing is
downloaded.

Printed per arm: median ms/step and IQR over the timed steps; ``vs dense``: dense's median
with the same optimizer and implementation divided by the arm's (>1: faster than dense),
with the IQR of that ratio over the rounds (a ratio of per-round medians);
``vs best dense``: the fastest dense arm's median divided by the arm's.

    python scripts/optimizer_step_matrix.py                       # h=500, batch 10, k=20
    python scripts/optimizer_step_matrix.py --hidden 4096 --warmup 100 --rounds 6 --block 10
    python scripts/optimizer_step_matrix.py --mode unified --optimizers Adam,SGD
    MEPROP_FAST_SQRT=off python scripts/optimizer_step_matrix.py  # torch's own sqrt kernel
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import meprop

__all__ = ["main"]

#: name -> (torch.optim class name, keyword arguments)
OPTIMIZERS = {
    "SGD": ("SGD", {"lr": 0.01}),
    "SGDm": ("SGD", {"lr": 0.01, "momentum": 0.9}),
    "Adam": ("Adam", {"lr": 1e-3}),
    "AdamW": ("AdamW", {"lr": 1e-3}),
    "Adagrad": ("Adagrad", {"lr": 1e-2}),
    "RMSprop": ("RMSprop", {"lr": 1e-3}),
}
IMPLS = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}
EXTRA = ("meprop-lazy-Adam",)  # meprop.optim.Adam(lazy=True), on the meProp model


def _data(n: int, border: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 784, generator=gen) * (torch.rand(n, 784, generator=gen) < 0.24)  # (n, 784)
    x.view(n, 28, 28)[:, :border] = 0
    x.view(n, 28, 28)[:, 28 - border:] = 0
    teacher = torch.randn(784, 10, generator=gen)
    return x, (x @ teacher).argmax(1)


def _model(hidden: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, 10))


def _optimizer(name: str, impl: str, params):
    if name == "meprop-lazy-Adam":
        return meprop.optim.Adam(params, lr=1e-3, lazy=True)
    cls, kwargs = OPTIMIZERS[name]
    return getattr(torch.optim, cls)(params, **kwargs, **IMPLS[impl])


def _arms(args) -> tuple[list[dict], list[str]]:
    arms, skipped = [], []
    for name in args.optimizers:
        for impl in args.impls:
            for kind in ("dense", "meprop"):
                model = _model(args.hidden, args.seed)
                if kind == "meprop":
                    model = meprop.convert(model, k=args.k, mode=args.mode)
                try:
                    opt = _optimizer(name, impl, model.parameters())
                except (RuntimeError, ValueError, TypeError) as error:
                    skipped.append(f"{kind} {name} {impl}: {str(error).splitlines()[0][:80]}")
                    continue
                arms.append({"kind": kind, "opt": name, "impl": impl, "model": model, "optim": opt, "ms": [],
                             "rounds": []})
    if args.lazy:
        model = meprop.convert(_model(args.hidden, args.seed), k=args.k, mode=args.mode)
        arms.append({"kind": "meprop", "opt": EXTRA[0], "impl": "-", "model": model,
                     "optim": _optimizer(EXTRA[0], "-", model.parameters()), "ms": [], "rounds": []})
    return arms, skipped


def _run(arm: dict, x, y, at: int, steps: int, batch: int, record: bool) -> int:
    model, opt = arm["model"], arm["optim"]
    times = []
    for _ in range(steps):
        if at + batch > len(y):
            at = 0
        xb, yb = x[at:at + batch], y[at:at + batch]
        at += batch
        start = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
        times.append((time.perf_counter() - start) * 1e3)
    if record:
        arm["ms"].extend(times)
        arm["rounds"].append(statistics.median(times))
    return at


def _interleaved(arms, x, y, args, steps: int, rounds: int, record: bool) -> None:
    order = list(range(len(arms)))
    rng = random.Random(args.seed)
    for _ in range(rounds):
        rng.shuffle(order)
        for i in order:
            arms[i]["at"] = _run(arms[i], x, y, arms[i].get("at", 0), steps, args.batch, record)


def _quartiles(values):
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def _table(arms, args) -> str:
    dense = {(a["opt"], a["impl"]): a for a in arms if a["kind"] == "dense"}
    best = min((statistics.median(a["ms"]) for a in dense.values()), default=float("nan"))
    lines = [f"| model | optimizer | impl | ms/step median | IQR | vs dense (IQR over rounds) | vs best dense |",
             "|---|---|---|---|---|---|---|"]
    for a in arms:
        med = statistics.median(a["ms"])
        lo, hi = _quartiles(a["ms"])
        ref = dense.get((a["opt"], a["impl"])) or dense.get(("Adam", "default"))
        ratios = [r / m for r, m in zip(ref["rounds"], a["rounds"])] if ref else []
        rlo, rhi = _quartiles(ratios) if len(ratios) > 1 else (float("nan"),) * 2
        vs = statistics.median(ref["ms"]) / med if ref else float("nan")
        note = "" if (a["opt"], a["impl"]) in dense else " (vs dense Adam default)"
        lines.append(f"| {a['kind']} | {a['opt']} | {a['impl']} | {med:.3f} | {lo:.3f}-{hi:.3f} | "
                     f"{vs:.2f}x ({rlo:.2f}-{rhi:.2f}){note} | {best / med:.2f}x |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=500)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--mode", default="per_example", choices=("per_example", "unified"))
    parser.add_argument("--optimizers", default="Adam,AdamW,Adagrad,RMSprop,SGD,SGDm",
                        type=lambda s: s.split(","), help=f"comma-separated, of {', '.join(OPTIMIZERS)}")
    parser.add_argument("--impls", default="default,foreach,fused", type=lambda s: s.split(","),
                        help="comma-separated, of default, foreach, fused (skipped where torch has none)")
    parser.add_argument("--no-lazy", dest="lazy", action="store_false",
                        help="leave out meprop.optim.Adam(lazy=True)")
    parser.add_argument("--warmup", type=int, default=1500, help="untimed steps per arm first")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--block", type=int, default=50, help="timed steps per arm per round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--border", type=int, default=4, help="rows/columns of zero pixels at the edges")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in args.optimizers:
        if name not in OPTIMIZERS:
            parser.error(f"--optimizers: unknown {name!r}; known: {', '.join(OPTIMIZERS)}")
    for impl in args.impls:
        if impl not in IMPLS:
            parser.error(f"--impls: unknown {impl!r}; known: {', '.join(IMPLS)}")

    torch.set_num_threads(args.threads)
    x, y = _data(20000, args.border, args.seed)
    arms, skipped = _arms(args)
    warm_block = max(1, min(args.block, args.warmup))
    _interleaved(arms, x, y, args, warm_block, -(-args.warmup // warm_block), record=False)
    _interleaved(arms, x, y, args, args.block, args.rounds, record=True)
    from meprop._impl import fast_sqrt  # noqa: PLC0415 - reported, not needed to run

    print(f"784-{args.hidden}-{args.hidden}-10, batch {args.batch}, k={args.k}, {args.mode}, "
          f"{args.threads} thread(s), torch {torch.__version__}, warm-up {args.warmup} steps/arm, "
          f"{args.rounds} rounds x {args.block} steps; exact fast sqrt: {fast_sqrt.status()}")
    print(_table(arms, args))
    for line in skipped:
        print(f"skipped: {line}")


if __name__ == "__main__":
    main()
