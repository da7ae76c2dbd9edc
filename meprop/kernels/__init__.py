"""Compiled meProp kernels (torch.library custom ops) and the switch to the PyTorch fallback.

The ops (C++, one source per op in ``csrc/``; fake implementations for ``torch.compile`` in
:mod:`meprop.kernels._ops`):

- ``torch.ops.meprop.per_example_backward``: the paper's per-example meProp backward of a
  linear layer (Section 2) fused into two passes: top-k of ``|dy|`` per row, then
  grad_input, the touched weight-gradient rows (sorted unique) and the bias gradient.
- ``torch.ops.meprop.lstm_forward`` / ``lstm_backward``: MepropLSTM's whole sequence
  (Section 4's POS tagger), top-k on the gate gradients, no Python per time step.
- ``torch.ops.meprop.dense_from_rows``: the dense weight gradient from its kept rows (the
  default layout of a row-sparse backward, e.g. unified mode), each row written once.

They run on CPU for float32 and float64. Everything else (CUDA, half precision, unified
mode) takes the pure PyTorch path of :mod:`meprop.functional`, which is also the reference
of the tests and the fallback:

- ``MEPROP_KERNELS=off`` forces the fallback (no warning);
- ``MEPROP_KERNELS=on`` makes a kernel that cannot be loaded an error;
- unset (or ``auto``): the kernels are loaded at first use, built first if the library for
  this source and torch is missing; if that fails meprop warns once, naming the reason,
  and carries on with the fallback.

``make setup`` builds the library (``python -m meprop.kernels build``).

The per-example backward has two formulations, chosen per shape by
:func:`choose_formulation`; the one that ran last is :func:`last_formulation` and every
call is counted (:func:`formulation_counts`; the benchmark records them).
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import warnings

import torch

from meprop import settings

__all__ = [
    "FORMULATIONS",
    "vector_selection",
    "threshold_search",
    "available",
    "enabled",
    "unavailable_reason",
    "takes",
    "supports",
    "build_key",
    "load",
    "choose_formulation",
    "last_formulation",
    "formulation_counts",
    "record_formulation",
    "unrecorded",
    "KernelsUnavailableWarning",
]

#: What can run a per-example meProp backward. ``gather`` and ``masked_gemm`` are the
#: compiled kernel's formulations; ``dense`` is k >= n (F.linear's own backward);
#: ``pytorch`` the fallback's gather path; ``unified`` the unified mode's two GEMMs;
#: ``masked_dense`` the dense backward on the masked gradient (at most dense + selection).
FORMULATIONS = ("gather", "masked_gemm", "dense", "pytorch", "unified", "masked_dense")

_lock = threading.Lock()
_state: dict = {"loaded": False, "tried": False, "error": None, "warned": False, "path": None}


class KernelsUnavailableWarning(RuntimeWarning):
    """The compiled kernels could not be built or loaded; meprop uses the PyTorch path."""


def _setting() -> str:
    """``off``, ``on`` or ``auto`` (:class:`meprop.settings.SettingError` for anything else)."""
    return settings.kernels()


def enabled() -> bool:
    """False when ``MEPROP_KERNELS=off`` forces the PyTorch path."""
    return _setting() != "off"


def load() -> bool:
    """Load (building first if needed) the kernels once per process; True if they are usable."""
    if _state["loaded"] or torch.compiler.is_compiling():
        return _state["loaded"]  # never load or build while torch.compile traces
    with _lock:
        if not _state["tried"]:
            _state["tried"] = True
            try:
                from meprop.kernels import _build  # noqa: PLC0415

                path = _build.library_path()
                if path.exists():
                    torch.ops.load_library(str(path))
                else:
                    path = _build_at_first_use(_build)
                from meprop.kernels import _ops  # noqa: F401, PLC0415 - registers the fake impls

                _state["path"] = str(path)
                _state["loaded"] = True
            except Exception as error:  # noqa: BLE001 - any failure means: use the fallback
                _state["error"] = _describe(error)
    return _state["loaded"]


def _build_at_first_use(build_module) -> str:
    # One line on stderr: a first backward that stops for half a minute says why.
    import sys  # noqa: PLC0415
    import time  # noqa: PLC0415

    print(f"meprop: compiling the CPU kernels at first use into {build_module.build_dir()} "
          f"(once per machine; `python -m meprop.kernels build` does it ahead) ...",
          end="", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        path = build_module.build()
    except BaseException:
        print(" failed", file=sys.stderr, flush=True)
        raise
    print(f" done in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    return path


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(error).__name__}: {first}"[:300]


def available() -> bool:
    """True if the kernels are enabled and loaded (loading them on the first call).

    When they cannot be loaded, warns once (:class:`KernelsUnavailableWarning`, naming the
    reason) and returns False, or raises ``RuntimeError`` under ``MEPROP_KERNELS=on``.
    """
    setting = _setting()
    if setting == "off":
        return False
    if load():
        return True
    if torch.compiler.is_compiling():
        return False
    reason = _state["error"]
    if setting == "on":
        raise RuntimeError(f"MEPROP_KERNELS=on but the meprop kernels are unavailable: {reason}")
    if not _state["warned"]:
        _state["warned"] = True
        warnings.warn(
            f"meprop: compiled kernels unavailable ({reason}); using the PyTorch path "
            f"(run `python -m meprop.kernels build` to see the build log, or set "
            f"MEPROP_KERNELS=off to silence this)",
            KernelsUnavailableWarning,
            stacklevel=3,
        )
    return False


def unavailable_reason() -> str | None:
    """Why the kernels are not in use (None when they are, or were never asked for)."""
    if _setting() == "off":
        return "MEPROP_KERNELS=off"
    return _state["error"]


def library_path() -> str | None:
    """The loaded library's path, or None."""
    return _state["path"]


def build_key() -> str:
    """A hash of what the compiled library depends on (sources, torch, flags, platform)."""
    from meprop.kernels import _build  # noqa: PLC0415

    return _build.build_key()


def takes(device: torch.device | str, dtype: torch.dtype) -> bool:
    """True when the compiled ops are built for operands on ``device`` of ``dtype``: CPU,
    float32 or float64. Says nothing of whether they are loaded (see :func:`supports`)."""
    return torch.device(device).type == "cpu" and dtype in (torch.float32, torch.float64)


def supports(*tensors: torch.Tensor) -> bool:
    """True when the kernels can take these operands now: one device and dtype that they are
    built for (:func:`takes`), and the kernels enabled and loaded (:func:`available`)."""
    first = tensors[0]
    if not takes(first.device, first.dtype):
        return False
    if any(t.device != first.device or t.dtype != first.dtype for t in tensors[1:]):
        return False
    return available()


def choose_formulation(batch: int, n: int, m: int, k: int) -> str:
    """``"gather"`` or ``"masked_gemm"``: what the kernel runs for a per-example backward of
    ``dy: (batch, n)``, ``W: (n, m)`` with k kept per row (the rule lives in the C++ source).

    Gathers do 2·B·k·m multiply-adds, each about 4x the cost of a GEMM's (measured); the
    masked formulation does B·n·m for grad_input plus B·U·m for the U <= min(n, B·k) touched
    rows at GEMM speed. Below 16 rows a GEMM is a memory-bound GEMV: gathers at any k.
    Needs the kernels (:func:`available`).
    """
    return FORMULATIONS[torch.ops.meprop.choose_formulation(batch, n, m, k)]


@contextlib.contextmanager
def unrecorded():
    """Runs inside are left out of :func:`formulation_counts` (the tuner's timed candidates)."""
    before = formulation_counts()
    _py_stats[2] += 1
    try:
        yield
    finally:
        _py_stats[2] -= 1
        after = formulation_counts()
        for name in after:
            _py_stats[3][name] += after[name] - before.get(name, 0)


def record_formulation(name: str) -> None:
    """Note that ``name`` (one of :data:`FORMULATIONS`) ran a meProp linear backward.

    The compiled kernel records its own choice; the Python paths call this. Not recorded
    while ``torch.compile`` traces (it would only count the trace).
    """
    if torch.compiler.is_compiling() or _py_stats[2]:
        return
    if _state["loaded"]:
        torch.ops.meprop.note_formulation(FORMULATIONS.index(name))
    else:
        _py_stats[0] = name
        _py_stats[1][name] += 1


# [last Python-path formulation, its counts, depth of unrecorded(), counts to leave out]
_py_stats: list = [None, collections.Counter(), 0, collections.Counter()]


def formulation_counts() -> dict[str, int]:
    """How many meProp linear backwards each formulation ran in this process."""
    counts = collections.Counter(_py_stats[1])
    if _state["loaded"]:
        for name, count in zip(FORMULATIONS, torch.ops.meprop.formulation_stats()[1:]):
            counts[name] += count
    counts.subtract(_py_stats[3])
    return {name: counts[name] for name in FORMULATIONS if counts[name] > 0}


def vector_selection(enable: bool | None = None) -> bool:
    """Whether the float32 top-k threshold runs the AVX-512 quickselect (else the portable radix select).

    ``enable=True`` / ``False`` switches it for the process (True takes only where the CPU
    has AVX-512); both give the same kept entries. False when the kernels are not in use.
    """
    if not available():
        return False
    return bool(torch.ops.meprop.vector_select(-1 if enable is None else int(enable)))


def threshold_search() -> str:
    """The float32 top-k threshold search in use, in words (for records and ``status``)."""
    return "AVX-512 quickselect" if vector_selection() else "portable radix select"


def last_formulation() -> str | None:
    """The formulation of the most recent meProp linear backward in this process (None: none yet)."""
    if _state["loaded"]:
        last = torch.ops.meprop.formulation_stats()[0]
        if last >= 0:
            return FORMULATIONS[last]
    return _py_stats[0]


def _preload() -> None:
    # Load an already-built library at import (a dlopen, milliseconds), so that code compiled
    # with torch.compile before any eager meProp call still finds the kernels. Building, and
    # any warning, wait for the first use.
    try:
        if _setting() == "off":
            return
        from meprop.kernels import _build  # noqa: PLC0415

        if _build.library_path().exists():
            load()
    except Exception:  # noqa: BLE001 - recorded by load(); a bad MEPROP_KERNELS is reported at first use
        pass


_preload()
