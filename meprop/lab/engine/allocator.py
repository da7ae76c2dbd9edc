"""The allocator setting the suite measures under: a fair dense baseline (docs/design.md, measurement rules).

glibc's malloc serves blocks above its mmap threshold (dynamic, at most 32 MB on 64-bit)
with fresh ``mmap`` calls and unmaps them on free, so a fresh 64 MB tensor (a dense
weight gradient, an optimizer temporary) is page-faulted on every call: ~3 GB/s, which
can cost the dense baseline more than its arithmetic. The suite therefore measures, by
default, with the setting that keeps freed blocks in the heap, for dense and meProp alike:

- ``M_MMAP_MAX = 0``: never serve a block with its own mmap;
- ``M_TRIM_THRESHOLD = 2 GiB - 1`` (its largest value): keep the heap's top instead of
  returning it to the kernel.

These are the ``MALLOC_MMAP_MAX_`` / ``MALLOC_TRIM_THRESHOLD_`` environment settings,
applied at run time with ``mallopt(3)`` so they hold for the whole process without a
re-exec. :func:`apply` sets them (or leaves malloc's defaults with ``policy="defaults"``)
and returns what holds, for the environment snapshot. On a C library without
``mallopt`` (not glibc), nothing is changed and the record says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import warnings

__all__ = ["POLICIES", "FAIR", "DEFAULTS", "apply", "release_large_blocks"]

FAIR = "no-page-faults"
DEFAULTS = "defaults"
#: ``no-page-faults``: the fair baseline (the default); ``defaults``: malloc as it comes.
POLICIES = (FAIR, DEFAULTS)

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_MAX = -4
_M_MMAP_THRESHOLD = -3
_TRIM_THRESHOLD_BYTES = 2**31 - 1

_applied: dict | None = None


def _libc():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        return libc if hasattr(libc, "mallopt") else None
    except OSError:
        return None


def apply(policy: str = FAIR) -> dict:
    """Put the process under ``policy`` (see :data:`POLICIES`); returns the record of what holds.

    The fair setting, once applied, stays for the process (malloc has no way back to its
    dynamic threshold): asking for ``defaults`` afterwards warns, and the record says that
    the fair setting holds (what the timings really ran under).
    """
    global _applied
    if policy not in POLICIES:
        raise ValueError(f"allocator policy must be one of {POLICIES}, got {policy!r}")
    env = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
    if policy == DEFAULTS:
        if _applied is not None and _applied["policy"] == FAIR and _applied["applied"]:
            warnings.warn(
                "malloc 'defaults' asked for after 'no-page-faults' was applied in this process; "
                "malloc cannot go back, so the fair setting holds (use a fresh process)",
                UserWarning, stacklevel=2,
            )
            return dict(_applied)
        record = {"policy": DEFAULTS, "applied": False, "environment": env,
                  "note": "malloc as it comes (MALLOC_* environment variables, if any, apply)"}
    else:
        libc = _libc()
        ok = False
        if libc is not None:
            ok = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(
                libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(_TRIM_THRESHOLD_BYTES))
            )
        record = {
            "policy": FAIR,
            "applied": ok,
            "environment": env,
            "note": "mallopt(M_MMAP_MAX=0, M_TRIM_THRESHOLD=2 GiB - 1): freed blocks stay in the heap"
            if ok else "mallopt unavailable (not glibc): malloc's defaults hold",
        }
    _applied = record
    return dict(record)


def release_large_blocks(threshold_bytes: int = 128 << 10) -> bool:
    """For memory probes: serve every block of ``threshold_bytes`` or more with its own mmap and
    unmap it on free (a fixed threshold; glibc's dynamic one is switched off), so the resident
    set grows by what a call really allocates. The opposite of the fair timing setting; used by
    the asv ``PeakMemory`` benchmarks, which run in processes of their own. False without glibc.
    """
    libc = _libc()
    return libc is not None and bool(libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(threshold_bytes)))
