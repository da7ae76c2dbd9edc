"""torch's CPU sqrt, bit for bit, without MKL's slow path on zeros (installed by meProp layers).

Why: on MKL builds of torch, the CPU sqrt of float32/float64 runs MKL's vector math (VML),
which sends every element that is exactly zero (or denormal) through a per-element
rare-case routine: a tensor with 17% zeros takes several times as long as one without, and
mixed zeros and values cost more still (branch misses). ``torch.optim``'s Adam, AdamW,
RMSprop and Adagrad, in their default (for-loop on CPU) and foreach implementations, take
the sqrt of their second moments every step; a meProp weight gradient leaves many of those
exactly zero (entries no example kept yet), so the step itself, not the backward, made a
converted model slower than dense with those optimizers. The fused implementations use the
hardware sqrt and were not affected; SGD takes no sqrt.

What: :func:`install` registers, in place of torch's CPU kernel of ``aten::sqrt`` (``sqrt``,
``sqrt_``, ``sqrt.out``), the compiled ``meprop::sqrt_skipping_zeros``. It first samples 64
evenly spaced elements of a contiguous float32/float64 tensor: without a zero among them the
tensor goes to torch's own kernel (``at::cpu::sqrt*``) exactly as before, so every other sqrt
of the process (a dense model's optimizer states) costs 64 loads more and nothing else. With
a zero, the tensor is processed in cache-sized chunks, each cut into runs of 64-element
blocks: a run without zeros goes straight to the very routine torch's kernel runs on
contiguous data (MKL's ``vmsSqrt``/``vmdSqrt`` with torch's mode, taken from libtorch), a run
of zeros is copied (``sqrt(+-0) = +-0``), and a run mixing both goes to that routine with its
zeros replaced by 1, the zeros put back after. The zeros meProp leaves are whole rows (units no
example kept yet), so almost all of a tensor takes the straight path. Where torch has no MKL,
a chunk with zeros goes to torch's kernel whole, staged the same way.
Everything else (strided, under 4096 elements, other dtypes) goes to torch's kernel as it is.
``torch._foreach_sqrt`` on CPU runs ``aten::sqrt`` per tensor, so it is covered; the fused
optimizers use the hardware sqrt and never call it.
Results are torch's bit for bit; :func:`install` checks this on a probe of random bit
patterns, zeros, denormals, infinities and NaNs before registering, and registers nothing if
one result differs. Every meProp layer asks for it when it is built
(:func:`meprop._impl.grad_layout.mark_meprop_weight`); ``MEPROP_FAST_SQRT=off`` (or
``MEPROP_KERNELS=off``) leaves torch's kernel in place, and :func:`uninstall` restores it
(later automatic installs do nothing; ``install(force=True)`` registers it again).

Threads: installing and uninstalling are serialised (a lock here, a mutex in the library),
but they change the dispatcher's table, which torch does not guard against a sqrt running at
the same moment in another thread: switch it before training threads start (building the
model does). ``torch.compile``: inductor generates its own sqrt code (vectorised hardware
sqrt, no MKL), so compiled graphs neither use nor need this kernel; eager fallbacks do use it,
and a compile in progress never installs it.
"""

from __future__ import annotations

import os
import threading

import torch

from meprop import kernels

__all__ = ["install", "uninstall", "installed", "status"]

_OFF = ("0", "off", "false", "no")
_state: dict = {"tried": False, "reason": "not asked for yet"}
_lock = threading.Lock()


def install(force: bool = False) -> bool:
    """Register the exact zero-skipping sqrt as aten::sqrt's CPU kernel (once); True if it is.

    ``force``: try again even after an earlier try or :func:`uninstall` (``MEPROP_FAST_SQRT=off``
    and the probe still decide)."""
    if _state["tried"] and not force:
        return installed()
    with _lock:
        if force or not _state["tried"]:
            _state["tried"] = True
            _state["reason"] = _install()
    return installed()


def _install() -> str:
    """Registers the kernel when everything allows it; what happened, in words."""
    if os.environ.get("MEPROP_FAST_SQRT", "on").strip().lower() in _OFF:
        return "off (MEPROP_FAST_SQRT)"
    if torch.compiler.is_compiling():
        return "not installed (asked while torch.compile traced)"
    if not kernels.available():
        return f"not installed (kernels unavailable: {kernels.unavailable_reason()})"
    if torch.ops.meprop.sqrt_override_active():  # checked when it was registered
        return "on"
    for dtype in (torch.float32, torch.float64):
        if not _matches_torch(dtype):
            return f"not installed (results differ from torch's sqrt in {dtype})"
    torch.ops.meprop.set_sqrt_override(True)
    return "on"


def _probe(dtype: torch.dtype) -> torch.Tensor:
    """Random bit patterns of ``dtype`` (every class of value), with runs and scatters of +-0,
    denormals and a block free of zeros: ``(3 * 32768 + 77,)``."""
    gen = torch.Generator().manual_seed(0)
    size = 3 * 32768 + 77
    if dtype == torch.float32:
        bits = torch.randint(-(2**31), 2**31, (size,), generator=gen, dtype=torch.int64).to(torch.int32)
        values = bits.view(torch.float32).clone()
    else:
        values = torch.randint(-(2**63), 2**63 - 1, (size,), generator=gen, dtype=torch.int64).view(torch.float64)
        values = values.clone()
    values[:1000] = 0.0
    values[1000:1100] = -0.0
    values[1100::7] = 0.0
    values[1101::13] = torch.finfo(dtype).tiny / 3  # denormal
    values[32768:65536] = torch.rand(32768, generator=gen, dtype=dtype) + 0.5  # a block without zeros
    values[-10:] = torch.tensor([float("inf"), float("-inf"), float("nan"), -1.0, 0.0, -0.0, 1.0, 4.0, 2.0, 1e-300],
                                dtype=dtype)
    return values


def _matches_torch(dtype: torch.dtype) -> bool:
    """meprop's sqrt equals torch's current CPU sqrt bit for bit on the probe."""
    values = _probe(dtype)
    bits = torch.int32 if dtype == torch.float32 else torch.int64
    ours = torch.ops.meprop.sqrt_skipping_zeros(values)
    return torch.equal(torch.sqrt(values).view(bits), ours.view(bits))


def uninstall() -> None:
    """Give aten::sqrt its own CPU kernel back (later :func:`install` calls do nothing)."""
    with _lock:
        _state["tried"] = True
        if kernels.available() and torch.ops.meprop.sqrt_override_active():
            torch.ops.meprop.set_sqrt_override(False)
        _state["reason"] = "uninstalled"


def installed() -> bool:
    """Whether aten::sqrt's CPU kernel is meprop's now."""
    return _state["reason"] == "on"


def status() -> str:
    """``"on"``, or why not."""
    return _state["reason"]
