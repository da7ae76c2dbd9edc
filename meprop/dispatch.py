"""Which path runs a meProp backward: one decision for the linear layer, the LSTM and the optimizer.

A meProp linear backward can run as

- the compiled op ``torch.ops.meprop.linear`` (a C++ autograd function: no Python in the
  backward), with one of the kernel's formulations ``gather``, ``masked_gemm`` or
  ``masked_dense`` (see ``meprop/kernels/csrc/linear_backward.cpp``);
- the Python autograd Function of :mod:`meprop.functional`, whose backward runs one of
  :data:`meprop.kernels.FORMULATIONS`: the same kernel formulations, the plain PyTorch path
  (``pytorch``), the dense backward on the masked gradient (``masked_dense``, PyTorch ops
  where the kernels do not apply), ``unified``, or ``dense`` (k >= n).

:func:`linear_forward_formulation` (asked in the forward) and :func:`linear_backward_formulation`
(asked in the Python Function's backward) make that choice from the device, dtype, autocast,
the weight-gradient layout and the mode. Among the per-example formulations the choice is
measured (:mod:`meprop.tuning`): at the first backward of a shape bucket every candidate is
timed and the fastest kept, here and on disk. With ``MEPROP_TUNING=off``, or before a bucket
is measured by the compiled path, the kernel's cost model decides (the cold-start guess).
``masked_dense`` is always a candidate: it costs what dense costs plus the selection, so the
measured choice is never much slower than dense.

:func:`lstm_kernels` (MepropLSTM) and :func:`row_kernel` (the lazy optimizers) answer the same
question for the other compiled ops.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from meprop import kernels, settings, tuning
from meprop.selection import is_sparse

__all__ = [
    "LinearBackward",
    "KERNEL_CODES",
    "autocast_dtype",
    "linear_forward_formulation",
    "linear_forward_code",
    "linear_backward_formulation",
    "unified_op_applies",
    "candidates",
    "PYTORCH_STAND_IN",
    "compiled_op_applies",
    "backward_implementation",
    "lstm_kernels",
    "row_kernel",
    "choice_counts",
]

#: The compiled op's formulation codes (``torch.ops.meprop.linear``'s last argument): a
#: formulation's index in :data:`meprop.kernels.FORMULATIONS`, the order of the C++ enum
#: (csrc/common.h; tests/test_formulation_codes.py checks both), -1 for the op's own choice.
KERNEL_CODES = {"auto": -1, **{name: kernels.FORMULATIONS.index(name) for name in ("gather", "masked_gemm", "masked_dense")}}
#: The PyTorch formulation that runs in place of a kernel formulation where the compiled op
#: does not take the operands (another device or dtype, kernels off or not built).
PYTORCH_STAND_IN = {"auto": "pytorch", "gather": "pytorch", "masked_gemm": "masked_dense",
                    "masked_dense": "masked_dense"}
_choices: collections.Counter = collections.Counter()
# linear_forward_code's decisions: key (_forward_key) -> (code, the choice source it counts)
_forward_memo: dict[tuple, tuple[int | None, str | None]] = {}
_FORWARD_MEMO_SIZE = 1024


@dataclass(frozen=True, eq=False)
class LinearBackward:
    """One meProp linear backward: its operands and what the forward decided.

    ``dy: (N, n)``, ``x: (N, m)``, ``weight: (n, m)`` (in the compute dtype), ``param``: the
    weight Parameter (the gradient comes back in its dtype; rows may be recorded on it).
    """

    dy: torch.Tensor
    x: torch.Tensor
    weight: torch.Tensor
    param: torch.Tensor
    k: int
    mode: str
    bias_grad: str
    layout: str
    generator: torch.Generator | None
    need_input: bool
    need_weight: bool
    need_bias: bool
    sync_selection: bool = False  # unified: one column set agreed across the ranks

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(N, n, m)``."""
        return self.dy.shape[0], self.weight.shape[0], self.weight.shape[1]


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """Autocast's dtype on ``device_type`` when autocast is on there, else None."""
    try:
        on = torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no device argument
        on = torch.is_autocast_cpu_enabled() if device_type == "cpu" else (
            device_type == "cuda" and torch.is_autocast_enabled())
    except RuntimeError:  # a device type autocast does not know (meta, ...): never on
        return None
    return torch.get_autocast_dtype(device_type) if on else None


def candidates(kernel: bool) -> tuple[str, ...]:
    """The per-example formulations timed against each other (kernel: the compiled op applies,
    :func:`compiled_op_applies`)."""
    return ("gather", "masked_gemm", "masked_dense", "pytorch") if kernel else ("pytorch", "masked_dense")


def compiled_op_applies(device: torch.device | str, dtype: torch.dtype) -> bool:
    """True when the compiled ops take operands of ``device`` and ``dtype`` (CPU float32/64)
    and are enabled and loaded; everything else takes the PyTorch path."""
    return kernels.takes(device, dtype) and kernels.available()


def backward_implementation(formulation: str, device: torch.device | str,
                            dtype: torch.dtype) -> tuple[str, bool]:
    """``(name, compiled)``: what runs ``formulation`` (a name of :data:`meprop.kernels.FORMULATIONS`
    or ``auto``) on operands of ``device`` and ``dtype``, and whether the compiled op runs it.

    A kernel formulation runs on the compiled op only where :func:`compiled_op_applies`;
    elsewhere its PyTorch stand-in (:data:`PYTORCH_STAND_IN`) runs.
    """
    if formulation not in KERNEL_CODES:
        return formulation, False
    if compiled_op_applies(device, dtype):
        return formulation, True
    return PYTORCH_STAND_IN[formulation], False


def _bucket(dy_or_x: torch.Tensor, batch: int, n: int, m: int, k: int, layout: str, need_input: bool,
            compiled: bool) -> str:
    return tuning.bucket(dy_or_x.device, dy_or_x.dtype, batch, n, m, k, layout, need_input, compiled)


def linear_forward_formulation(input: torch.Tensor, weight: torch.Tensor, k: int, mode: str,
                               layout: str, compute_dtype: torch.dtype | None,
                               probe: Callable[[], tuple[LinearBackward, Callable]] | None = None) -> int | None:
    """The formulation code to run ``torch.ops.meprop.linear`` with, or None for the Python Function.

    ``input: (..., m)``, ``weight: (n, m)``. The compiled op takes per-example mode on CPU
    float32/64 outside autocast and ``torch.compile``, with the dense or row-sparse layout.
    Under tuning, a bucket not yet measured is measured here, before the graph is recorded
    (so this very forward, and a graph retained for many backwards, gets the winner):
    ``probe()`` returns a :class:`LinearBackward` of the layer's shapes (a stand-in output
    gradient) and the function that runs one formulation of it. Without a probe, or when no
    backward will follow, an unmeasured bucket goes through the Python Function, whose
    backward measures. A bucket whose winner is the PyTorch path stays there.
    """
    code, source = _forward_decision(input, weight, k, mode, layout, compute_dtype, probe)
    _note_forward(source)
    return code


def linear_forward_code(input: torch.Tensor, weight: torch.Tensor, k: int, mode: str, layout: str,
                        compute_dtype: torch.dtype | None,
                        probe: Callable[[], tuple[LinearBackward, Callable]] | None = None) -> int | None:
    """:func:`linear_forward_formulation`, remembered: a layer's later forwards pay one dict lookup.

    The decision depends only on :func:`_forward_key`. A per-example forward left to the
    Python Function (a bucket not measured, or whose winner is the PyTorch path) is not
    remembered: it asks again (and measures) each time.
    """
    if torch.compiler.is_compiling():
        return linear_forward_formulation(input, weight, k, mode, layout, compute_dtype, probe)
    hit = _forward_memo.get(_forward_key(input, weight, k, mode, layout, compute_dtype, probe))
    if hit is None:
        hit = _forward_decision(input, weight, k, mode, layout, compute_dtype, probe)
        code = hit[0]
        if code is not None or mode != "per_example" or compute_dtype is not None or layout == "dense_tracked":
            if len(_forward_memo) >= _FORWARD_MEMO_SIZE:
                _forward_memo.clear()
            # keyed as things are now: a measurement in the call moved the tuning generation
            _forward_memo[_forward_key(input, weight, k, mode, layout, compute_dtype, probe)] = hit
    _note_forward(hit[1])
    return hit[0]


def _forward_key(input: torch.Tensor, weight: torch.Tensor, k: int, mode: str, layout: str,
                 compute_dtype: torch.dtype | None, probe) -> tuple:
    """Everything a forward's formulation decision depends on: the operands' shapes, dtypes and
    devices, the layer's k, mode and layout, autocast, whether a probe is offered, grad mode,
    the thread count, the tuning memory (its generation), the kernels' state and the settings."""
    return (input.shape, input.dtype, input.device, input.requires_grad, weight.shape, weight.dtype,
            weight.device, k, mode, layout, compute_dtype, probe is None, torch.is_grad_enabled(),
            torch.get_num_threads(), tuning.generation(), kernels.library_path(), settings.fingerprint())


def _forward_decision(input: torch.Tensor, weight: torch.Tensor, k: int, mode: str, layout: str,
                      compute_dtype: torch.dtype | None, probe) -> tuple[int | None, str | None]:
    """:func:`linear_forward_formulation`'s code and the choice source it counts (None: none)."""
    if (compute_dtype is not None or mode != "per_example" or layout == "dense_tracked"
            or torch.compiler.is_compiling() or not kernels.supports(input, weight)):
        return None, None
    n, m = weight.shape
    batch = math.prod(input.shape[:-1])
    if not is_sparse(k, n, batch):
        return KERNEL_CODES["auto"], None  # the op runs the dense backward itself
    if not tuning.enabled():
        return KERNEL_CODES["auto"], "model"
    key = _bucket(input, batch, n, m, k, layout, input.requires_grad, True)
    entry = tuning.lookup(key)
    if entry is None and probe is not None and torch.is_grad_enabled():
        call, run = probe()
        _measure(call, key, candidates(True), run)
        entry = tuning.lookup(key)
    if entry is None or entry["formulation"] not in KERNEL_CODES:
        return None, None
    return KERNEL_CODES[entry["formulation"]], entry["source"]


def unified_op_applies(input: torch.Tensor, weight: torch.Tensor, mode: str, layout: str,
                       compute_dtype: torch.dtype | None, sync_selection: bool) -> bool:
    """True when a unified-mode forward runs ``torch.ops.meprop.unified_linear`` (its backward a
    C++ autograd function, no Python): CPU float32/64 outside autocast and ``torch.compile``,
    the dense or row-sparse layout, no selection agreed across ranks. Elsewhere the Python
    Function runs the same backward in PyTorch ops (the reference)."""
    return (mode == "unified" and not sync_selection and compute_dtype is None
            and layout in ("dense", "row_sparse") and not torch.compiler.is_compiling()
            and kernels.supports(input, weight))


def linear_backward_formulation(call: LinearBackward, run: Callable[[LinearBackward, str], object]) -> str:
    """The formulation to run ``call`` with: a name of :data:`meprop.kernels.FORMULATIONS`, or
    ``auto`` (the compiled kernel applies its cost model and records what it ran).

    ``run(call, name)`` runs one formulation; it is what the tuner times when the bucket of
    ``call`` has not been measured yet. Random mode is never measured (timing would draw
    from its generator); it, ``MEPROP_TUNING=off`` and a ``torch.compile`` trace take the
    cost model.
    """
    batch, n, m = call.shape
    if not is_sparse(call.k, n, batch):
        return "dense"
    if call.mode == "unified":
        return "unified"
    kernel = kernels.supports(call.dy, call.x, call.weight)
    if call.mode != "per_example" or not tuning.enabled() or torch.compiler.is_compiling():
        if not torch.compiler.is_compiling():  # a traced backward is not timed nor counted
            _note("model")
        return "auto" if kernel else "pytorch"
    key = _bucket(call.dy, batch, n, m, call.k, call.layout, call.need_input, kernel)
    names = candidates(kernel)
    entry = tuning.lookup(key)
    if entry is not None and entry["formulation"] in names:
        _note(entry["source"])
        return entry["formulation"]
    winner = _measure(call, key, names, run)
    _note("measured")
    return winner


def _measure(call: LinearBackward, key: str, names: tuple[str, ...], run) -> str:
    """Time ``run(call, name)`` for each name, cache the winner under ``key``, return it."""
    sync = torch.cuda.synchronize if call.dy.is_cuda else None
    with kernels.unrecorded():  # the timed runs are not backwards the program asked for
        return tuning.pick(key, names, lambda name: run(call, name), sync)


def lstm_kernels(mode: str, training: bool, *tensors: torch.Tensor) -> bool:
    """True when MepropLSTM runs its whole sequence through the compiled ops.

    ``tensors``: the input, the state and the parameters. Unified and random training take
    the PyTorch path; so do autocast and ``torch.compile``.
    """
    if torch.compiler.is_compiling() or autocast_dtype(tensors[0].device.type) is not None:
        return False
    if torch.is_grad_enabled() and training and mode != "per_example":
        return False
    return kernels.supports(*tensors)


def row_kernel(state: list[torch.Tensor], rows: torch.Tensor) -> bool:
    """True when the compiled lazy-Adam row update applies: CPU float32/64, contiguous 2-D state."""
    return (state[0].dim() == 2 and all(t.is_contiguous() for t in state)
            and kernels.supports(*state, rows))


def choice_counts() -> dict[str, int]:
    """How many per-example formulation choices came from each source in this process:
    ``measured`` (timed here), ``cached`` (a measurement read from the disk cache) or
    ``model`` (the cost model: tuning off, or random mode)."""
    return dict(_choices)


def _note(source: str) -> None:
    _choices[source] += 1


def _note_forward(source: str | None) -> None:
    if source is not None and torch.is_grad_enabled():  # a forward that will have a backward
        _choices[source] += 1
