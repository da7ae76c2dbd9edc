"""Probe of meProp's MNIST accuracy gap under Adam (docs/accuracy_notes.md; paper Section 4, Table 1).

A short, single-threaded training run of the paper's MNIST MLP (784 -> 500 -> 500 -> 10)
that prints, every ``--every`` steps, the running training loss, the dev accuracy and
the quantities that show *why* a run diverges:

- ``h1``: mean first-hidden-layer activation on 1000 dev images (dense training
  stays near 0.1-0.2);
- ``rows``: fraction of W1's rows that received a non-zero gradient per step;
- ``step/lr``: mean |Adam step| per W1 element per step divided by the learning rate,
  over all elements and over the elements whose gradient was zero that step (the
  momentum "carry": Adam keeps moving a row that got no gradient);
- ``coh``: coherence of the W1 update along the input: mean over rows of
  ``|sum_i dW1[r, i] * xbar_i| / sum_i |dW1[r, i]| xbar_i`` (xbar: mean image); 1 means
  every weight of a row moved in the same direction over the active pixels, which
  shifts that unit's pre-activation for every image at once;
- ``up``: among the first hidden layer's output-gradient entries ``dy`` (before top-k),
  the fraction of the k largest ``|dy|`` per example that push the pre-activation up
  (``dy < 0``: a gradient step raises it), and the same fraction among all non-zero
  entries (``all``), which is what a dense step sees. ``sum``: the signed sum per
  example of the kept entries and of all entries.

Variants are set by options (one run per invocation)::

    python scripts/mnist_adam_probe.py --k 20 --batch 10 --steps 3000
    python scripts/mnist_adam_probe.py --k 20 --opt lazyadam      # Adam that skips zero-gradient rows
    python scripts/mnist_adam_probe.py --k 30 --batch 32 --dropout 0.1

``lazyadam`` is a diagnostic, not a faithful setting: moments and weights of an
element change only on steps where its gradient is non-zero (torch.optim.SparseAdam's
rule, applied to the dense ``.grad``).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from meprop.lab.paper.data import load_mnist
from meprop.lab.ops.models import MLP

__all__ = ["main"]


def _model(args) -> nn.Sequential:
    """The paper's MLP (784 -> h -> h -> 10), the one definition in meprop.lab.ops.models; its layers."""
    mlp = MLP(784, args.hidden, 2, 10, k=args.k, mode=args.mode, dropout=args.dropout,
              bias_grad=args.bias_grad, init=args.init)
    return mlp.net  # nn.Sequential: model[0] is the first hidden layer


@torch.no_grad()
def _lazy_adam_step(params, state, lr, b1=0.9, b2=0.999, eps=1e-8):
    for p in params:
        g = p.grad
        s = state.setdefault(p, {"m": torch.zeros_like(p), "v": torch.zeros_like(p), "t": torch.zeros_like(p)})
        mask = g != 0
        s["t"] += mask
        s["m"] = torch.where(mask, b1 * s["m"] + (1 - b1) * g, s["m"])
        s["v"] = torch.where(mask, b2 * s["v"] + (1 - b2) * g * g, s["v"])
        t = s["t"].clamp(min=1)
        step = lr * (s["m"] / (1 - b1 ** t)) / ((s["v"] / (1 - b2 ** t)).sqrt() + eps)
        p -= torch.where(mask, step, torch.zeros_like(step))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=None, help="meProp k (default: dense)")
    parser.add_argument("--mode", default="per_example")
    parser.add_argument("--bias-grad", default="dense", dest="bias_grad")
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=500)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--opt", default="adam", choices=("adam", "lazyadam", "adam-b1-0", "sgd", "adagrad"))
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--eps", type=float, default=1e-8)
    parser.add_argument("--init", default="torch", choices=("torch", "glorot", "release"))
    parser.add_argument("--csharp", action="store_true", help="loss summed over the batch, gradients clipped to +-5")
    parser.add_argument("--center", action="store_true",
                        help="diagnostic: subtract the mean training image (inputs no longer all >= 0)")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    splits = load_mnist()
    x, y = splits.train.tensors  # (50000, 784), (50000,)
    xd, yd = splits.dev.tensors
    xbar = x.mean(0)  # (784,)
    if args.center:
        x, xd = x - xbar, xd - xbar
    torch.manual_seed(args.seed)
    model = _model(args)
    params = list(model.parameters())
    lr = args.lr or {"adagrad": 1e-2, "sgd": 0.05}.get(args.opt, 1e-3)
    if args.opt == "adam":
        opt = torch.optim.Adam(params, lr=lr, eps=args.eps)
    elif args.opt == "adam-b1-0":
        opt = torch.optim.Adam(params, lr=lr, betas=(0.0, 0.999), eps=args.eps)
    elif args.opt == "sgd":
        opt = torch.optim.SGD(params, lr=lr)
    elif args.opt == "adagrad":
        opt = torch.optim.Adagrad(params, lr=lr)
    else:
        opt, lazy_state = None, {}
    w1 = model[0].weight  # (hidden, 784)
    seen = {}

    def _record_dy(module, inputs, output):
        if output.requires_grad:
            output.register_hook(lambda dy: seen.__setitem__("dy", dy.detach()))

    model[0].register_forward_hook(_record_dy)
    kept_k = args.k or 20
    kept_sum = all_sum = kept_up = all_up = 0.0
    order = torch.randperm(len(y))
    run_loss, rows, steps_all, steps_zero, coh, n = 0.0, 0.0, 0.0, 0.0, 0.0, 0
    start = time.time()
    print(vars(args), flush=True)
    for step in range(args.steps):
        at = (step * args.batch) % len(y)
        if at + args.batch > len(y):
            order = torch.randperm(len(y))
            at = 0
        index = order[at:at + args.batch]
        loss = F.cross_entropy(model(x[index]), y[index], reduction="sum" if args.csharp else "mean")
        for p in params:
            p.grad = None
        loss.backward()
        if args.csharp:
            torch.nn.utils.clip_grad_value_(params, 5.0)
        dy = seen["dy"]  # (B, hidden): gradient at the first layer's output, before top-k
        top = dy.abs().topk(kept_k, dim=1).indices  # (B, k)
        kept = dy.gather(1, top)
        kept_sum += float(kept.sum()) / len(dy)
        all_sum += float(dy.sum()) / len(dy)
        kept_up += float((kept < 0).float().mean())
        all_up += float((dy < 0).sum() / (dy != 0).sum().clamp(min=1))
        before = w1.detach().clone()
        zero = w1.grad == 0  # (hidden, 784)
        if opt is None:
            _lazy_adam_step(params, lazy_state, lr, eps=args.eps)
        else:
            opt.step()
        delta = w1.detach() - before  # (hidden, 784)
        rows += float((w1.grad != 0).any(1).float().mean())
        steps_all += float(delta.abs().mean()) / lr
        steps_zero += float(delta[zero].abs().mean()) / lr if bool(zero.any()) else 0.0
        moved = delta.abs().sum(1) > 0
        if bool(moved.any()):
            d = delta[moved]
            coh += float(((d @ xbar).abs() / (d.abs() @ xbar).clamp(min=1e-30)).mean())
        n += 1
        run_loss = 0.98 * run_loss + 0.02 * float(loss.detach()) / (args.batch if args.csharp else 1)
        if (step + 1) % args.every == 0:
            model.eval()
            with torch.no_grad():
                acc = float((model(xd).argmax(1) == yd).float().mean())
                h1 = float(torch.relu(model[0](xd[:1000])).mean())
            model.train()
            print(f"step {step + 1} loss {run_loss:.3f} dev {acc:.4f} h1 {h1:.3f} rows {rows / n:.3f} "
                  f"step/lr {steps_all / n:.3f} (zero-grad elems {steps_zero / n:.3f}) coh {coh / n:.3f} "
                  f"up {kept_up / n:.2f} (all {all_up / n:.2f}) sum {kept_sum / n:+.4f} (all {all_sum / n:+.4f}) "
                  f"{time.time() - start:.0f}s", flush=True)
            rows = steps_all = steps_zero = coh = kept_sum = all_sum = kept_up = all_up = 0.0
            n = 0


if __name__ == "__main__":
    main()
