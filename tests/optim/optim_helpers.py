"""Twin models and row-wise float64 references shared by the meprop.optim tests."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn

import meprop

IN, HIDDEN, OUT = 12, 24, 5


def mlp(seed: int = 0, dtype=torch.float64) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(IN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, OUT)
    ).to(dtype)


def converted_twins(count: int, *, k: int = 4, mode: str = "per_example", **convert_kwargs):
    """``count`` converted copies of one MLP with independent parameters."""
    base = mlp()
    return [meprop.convert(copy.deepcopy(base), k=k, mode=mode, **convert_kwargs) for _ in range(count)]


def meprop_weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, meprop.MepropLinear)]


def other_params(model: nn.Module) -> list[torch.Tensor]:
    weights = {id(w) for w in meprop_weights(model)}
    return [p for p in model.parameters() if id(p) not in weights]


def batches(steps: int, batch: int = 6, seed: int = 1, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, IN, generator=gen, dtype=dtype), torch.randint(0, OUT, (batch,), generator=gen))
        for _ in range(steps)
    ]


def loss_of(model, x, y):
    return nn.functional.cross_entropy(model(x), y)


def train(model, optimizers, data, *, clip: float | None = None):
    """The standard loop; ``optimizers`` is one optimizer or a list stepped together."""
    optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
    for x, y in data:
        for opt in optimizers:
            opt.zero_grad()
        loss_of(model, x, y).backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        for opt in optimizers:
            opt.step()


def assert_same_params(a: nn.Module, b: nn.Module, **tolerances) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, msg=lambda m: f"{name}: {m}", **tolerances)


class RowReference:
    """Float64 row-by-row lazy updates, written out loop by loop (the semantics, not the code)."""

    def __init__(self, param: torch.Tensor):
        self.m = torch.zeros_like(param)
        self.v = torch.zeros_like(param)
        self.vmax = torch.zeros_like(param)
        self.buf = torch.zeros_like(param)
        self.step = 0

    def adam(self, param, grad, rows, *, lr, betas, eps, weight_decay=0.0, decoupled=False,
             amsgrad=False, maximize=False):
        self.step += 1
        b1, b2 = betas
        step_size = lr * math.sqrt(1 - b2**self.step) / (1 - b1**self.step)
        for r in rows:
            g = -grad[r] if maximize else grad[r].clone()
            if weight_decay and decoupled:
                param[r] *= 1 - lr * weight_decay
            elif weight_decay:
                g = g + weight_decay * param[r]
            self.m[r] = b1 * self.m[r] + (1 - b1) * g
            self.v[r] = b2 * self.v[r] + (1 - b2) * g * g
            second = self.v[r]
            if amsgrad:
                self.vmax[r] = torch.maximum(self.vmax[r], self.v[r])
                second = self.vmax[r]
            param[r] -= step_size * self.m[r] / (second.sqrt() + eps)

    def sgd(self, param, grad, rows, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
            nesterov=False, maximize=False):
        self.step += 1
        for r in rows:
            g = -grad[r] if maximize else grad[r].clone()
            if weight_decay:
                g = g + weight_decay * param[r]
            if momentum:
                if self.step == 1:
                    self.buf[r] = g
                else:
                    self.buf[r] = momentum * self.buf[r] + (1 - dampening) * g
                g = g + momentum * self.buf[r] if nesterov else self.buf[r]
            param[r] -= lr * g


def touched_rows(grad: torch.Tensor) -> list[int]:
    dense = grad.to_dense() if grad.is_sparse else grad
    if grad.is_sparse:
        return sorted(set(grad.coalesce()._indices()[0].tolist()))
    return (dense.abs().sum(1) != 0).nonzero().squeeze(1).tolist()
