"""The measured operations: ``build(case, variant)`` returns one zero-argument callable.

One definition of each measurement, shared by ``meprop bench``, the asv suite and the
pytest-benchmark cases (docs/design.md, "What the numbers mean"):

- ``forward``: the training-mode forward of the layer / model with autograd recording
  (what a training step pays; the graph is dropped after each call). Under
  ``torch.no_grad()`` a MepropLinear *is* F.linear, so that would compare a thing with
  itself.
- ``linear_backward``: the backward of the linear layer(s) alone for a fixed output
  gradient (grad_input, grad_weight, grad_bias): the paper's "backprop time" (Tables 1
  and 7). Each linear layer gets its own leaf input and fixed random ``dy``; the graph
  is built once and retained, every call runs ``torch.autograd.backward(ys, dys)``.
  For the MLP: every layer (hidden and output), activations and loss excluded.
- ``overall_backward``: the whole ``loss.backward()`` (loss, activations, every layer)
  of the model on a retained graph: the paper's "Ov. BP" (Tables 2 and 8). The linear
  workload's loss is MSE against a fixed target; the MLP's is cross-entropy. The model
  input is data (no grad_input for the first layer).
- ``train_step``: the step as users write it, with every default: ``opt.zero_grad()``
  (``set_to_none=True``), forward, loss, ``backward()``,
  ``torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)``, ``opt.step()``. Dense:
  ``torch.optim.Adam``; meProp: :func:`meprop.convert` with default arguments and
  ``meprop.optim.Adam(lazy=True)`` (:mod:`meprop.lab.ops.train_step`; ``optimizer="exact"``: ``lazy=False``).

The ``lstm`` workload (the paper's POS tagger, batch-first, :data:`~meprop.lab.plan.cases.LSTM_STEPS`
steps): ``forward`` is the LSTM's; ``linear_backward`` the LSTM's whole backward for a fixed
output gradient (gate projections and recurrence; the paper's "backprop" of Table 1's POS row);
``overall_backward`` the tagger's ``loss.backward()`` (LSTM + dense head + cross-entropy);
``train_step`` the tagger's step (``zero_grad()``, forward, loss, backward, ``step()``, no
clipping) with :mod:`meprop.lab.ops.train_step`'s optimizers: dense ``nn.LSTM`` + ``torch.optim.Adam``;
meProp ``MepropLSTM`` + ``meprop.optim.Adam(lazy=True)`` (row-sparse gradients for
``weight_ih`` / ``weight_hh``, the rows touched at any step; exact Adam on the biases and
the head).

Variants: ``dense`` uses ``nn.Linear``; ``meprop`` the same layers converted with
:func:`meprop.convert` (k, mode from the case; hidden layers only for the MLP, the output
layer stays dense, as in the paper).

Allocation policy (:data:`ALLOCATION_POLICY`, recorded in every run's environment):
for the backward measurements, parameter ``.grad`` buffers are preallocated and
accumulated into in place, for both variants (they are never reset, so no n x m memset
is timed); meProp layers use ``sparse_grad=True``, so autograd adds only the k touched
rows into the dense ``.grad``. The training step keeps nothing preallocated: it is the
user's loop, and its optimizer decides the gradient layout.
The dense baseline pays its real cost: a fresh (n, m) weight-gradient GEMM output added
into ``.grad``. glibc malloc runs with its defaults unless the environment says
otherwise (the snapshot records ``MALLOC_*`` variables).

Everything is built once, seeded, on the case's device and dtype.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from meprop.lab.ops.model_ops import (
    SEED, Unsupported, case_dtype, case_randn, model_op, named_op, preallocate_grads,
)
from meprop.lab.workloads import workload
from meprop.nn import convert
from meprop.lab.measurements import measurement

__all__ = [
    "VARIANTS", "ALLOCATION_POLICY", "Unsupported", "build", "build_model", "build_linear_model",
    "estimate_bytes",
]

VARIANTS = ("dense", "meprop")

ALLOCATION_POLICY = (
    "backward measurements: grads preallocated, accumulated in place for dense and meProp, "
    "meProp layers sparse_grad=True (k touched rows added into the dense .grad); "
    "train_step: the user's loop with defaults (zero_grad() sets grads to None, "
    "clip_grad_norm_ 1.0), dense torch.optim.Adam, meProp meprop.optim.Adam(lazy=True)"
)


#: Fraction of the free memory a case may plan to use.
_MEMORY_HEADROOM = 0.6


def estimate_bytes(case) -> int:
    """A generous estimate of the memory one variant of the case needs (both variants: x2)."""
    itemsize = torch.empty((), dtype=case_dtype(case)).element_size()
    spec = workload(case.workload)
    shapes = spec.layer_shapes(case)
    params = sum(n * m + n for n, m in shapes)
    acts = sum(case.batch * (n + m) for n, m in shapes) * spec.activation_factor()
    # weights, .grad, a fresh dense weight gradient, optimizer-free; activations x4
    # (outputs, relu masks, dy, grad_input).
    return itemsize * (3 * params + 4 * acts)


def _check_supported(case) -> None:
    device = torch.device(case.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise Unsupported("cuda not available")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise Unsupported(
                f"cuda device {index} not available ({torch.cuda.device_count()} device(s))"
            )
        free, _total = torch.cuda.mem_get_info(index)
    else:
        import psutil

        free = psutil.virtual_memory().available
    need = 2 * estimate_bytes(case)
    if need > _MEMORY_HEADROOM * free:
        raise Unsupported(
            f"out of memory: needs about {need / 2**30:.1f} GiB, "
            f"{free / 2**30:.1f} GiB free on {case.device}"
        )


def build_model(case, variant: str) -> nn.Module:
    """The case's model (seeded; float32 on CPU before moving) for ``variant``.

    ``linear``: one ``nn.Linear``; ``mlp``: the paper's MLP (:class:`meprop.lab.ops.models.MLP`,
    the one definition of it), dense. The ``meprop`` variant is the same model passed
    through :func:`meprop.convert` (the hidden layers; the MLP's output layer stays dense).
    """
    from meprop.lab.ops.models import MLP

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    stacked = workload(case.workload).stacks_layers
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        if not stacked:
            model: nn.Module = nn.Linear(case.in_features, case.hidden)
        else:
            # its layers (an nn.Sequential): the inputs are already (B, in_features)
            model = MLP(case.in_features, case.hidden, case.layers, case.classes).net
    model = model.to(device=case.device, dtype=case_dtype(case))
    if variant == "meprop":
        # linear: the one layer is meProp; mlp: hidden layers, the output layer dense.
        # The training step converts as a user would (default arguments); the backward
        # measurements ask for row-sparse gradients into preallocated .grad buffers.
        model = convert(model, k=case.k, mode=case.mode,
                        sparse_grad=not measurement(case.measurement).steps_optimizer,
                        keep_output_layer=stacked, inplace=True)
    return model.train()


def build(case, variant: str) -> Callable[[], None]:
    """A zero-argument callable doing exactly one measured operation of ``case``.

    The callable also carries what it works on, for probes and tests: ``.model`` (the
    nn.Module) and ``.inputs`` (the leaf tensors whose ``.grad`` the operation fills:
    the layer inputs of ``linear_backward``, else empty). Raises :class:`Unsupported`
    when the case cannot run here.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if case.world_size > 1:
        raise Unsupported(f"ddp_step runs on {case.world_size} processes of its own "
                          f"(meprop.lab.engine.ddp.run_ddp_case), not as one callable")
    _check_supported(case)
    return workload(case.workload).build(case, variant)


def build_linear_model(case, variant: str) -> Callable[[], None]:
    """The operation of a ``linear`` (one layer, MSE loss) or ``mlp`` (cross-entropy) case."""
    model = build_model(case, variant)
    gen = torch.Generator().manual_seed(SEED + 1)
    x = case_randn(case.batch, case.in_features, case=case, generator=gen)  # (B, m)
    if not workload(case.workload).stacks_layers:
        target = case_randn(case.batch, case.hidden, case=case, generator=gen)  # (B, n)

        def loss_of(out):
            return F.mse_loss(out, target)
    else:
        labels = torch.randint(case.classes, (case.batch,), generator=gen).to(case.device)

        def loss_of(out):
            return F.cross_entropy(out, labels)

    if measurement(case.measurement).linear_layers_only:
        preallocate_grads(model)
        op, inputs = _linear_backward(model, x, case, gen)
        return named_op(op, case, model, inputs)
    return model_op(case, variant, model, lambda: model(x), lambda: loss_of(model(x)))


def _linear_backward(model: nn.Module, x: torch.Tensor, case, gen):
    """Backward of every linear layer alone, each on its own retained graph."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    ys, dys = [], []
    inputs = []
    with torch.no_grad():  # the layer inputs the model would see: (B, in) each
        h = x
        for module in model.modules():
            if isinstance(module, nn.Linear):
                inputs.append(h)
                h = F.linear(h, module.weight, module.bias)
            elif isinstance(module, nn.ReLU):
                h = torch.relu(h)
    leaves = []
    for layer, inp in zip(linears, inputs):
        leaf = inp.detach().clone().requires_grad_(True)  # grad_input is part of the work
        leaf.grad = torch.zeros_like(leaf)
        leaves.append(leaf)
        y = layer(leaf)  # (B, out)
        ys.append(y)
        dys.append(case_randn(*y.shape, case=case, generator=gen))  # fixed output gradient

    def linear_backward() -> None:
        torch.autograd.backward(ys, dys, retain_graph=True)
    return linear_backward, leaves
