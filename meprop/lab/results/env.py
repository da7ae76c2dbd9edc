"""The environment snapshot stored with every run (the ``env`` record's ``env`` object).

``meprop bench`` and ``meprop train`` write it as the first record of a run;
``meprop info`` prints it.

Fields are those of docs/results_schema.md. Every probe is best effort: a failing probe
leaves its field None (or an empty list) and never stops a benchmark. CPU facts come
from psutil and /proc/cpuinfo (py-cpuinfo as a fallback: it is slow), GPU facts from
pynvml when a CUDA device is present (torch's device properties otherwise). CUDA is
only queried when this function is called, never at import.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

__all__ = ["snapshot", "cpu_model", "gpus", "git_commit", "malloc_settings"]


def _try(fn, default=None):
    try:
        return fn()
    except Exception:  # a probe must never break a run
        return default


def cpu_model() -> str | None:
    """The CPU's model name (/proc/cpuinfo, then py-cpuinfo, then platform)."""
    def from_proc():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
        return None

    def from_cpuinfo():
        import cpuinfo

        return cpuinfo.get_cpu_info().get("brand_raw")

    return _try(from_proc) or _try(from_cpuinfo) or platform.processor() or None


def gpus() -> list[dict]:
    """``[{name, memory_bytes, driver}]`` for every visible CUDA device; empty when none."""
    if not _try(torch.cuda.is_available, False):
        return []

    def from_nvml():
        import pynvml

        pynvml.nvmlInit()
        try:
            driver = pynvml.nvmlSystemGetDriverVersion()
            driver = driver.decode() if isinstance(driver, bytes) else driver
            out = []
            for i in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                name = pynvml.nvmlDeviceGetName(handle)
                out.append({
                    "name": name.decode() if isinstance(name, bytes) else name,
                    "memory_bytes": int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
                    "driver": driver,
                })
            return out
        finally:
            pynvml.nvmlShutdown()

    def from_torch():
        return [
            {"name": props.name, "memory_bytes": int(props.total_memory), "driver": None}
            for props in (torch.cuda.get_device_properties(i)
                          for i in range(torch.cuda.device_count()))
        ]

    return _try(from_nvml) or _try(from_torch, [])


def git_commit() -> str | None:
    """HEAD of the git checkout meprop is imported from, ``+dirty`` if it has changes."""
    root = Path(__file__).resolve().parents[3]

    def run(*args):
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    commit = _try(lambda: run("rev-parse", "HEAD"))
    if not commit:
        return None
    dirty = _try(lambda: bool(run("status", "--porcelain", "--untracked-files=no")), False)
    return commit + ("+dirty" if dirty else "")


def malloc_settings() -> dict:
    """The ``MALLOC_*`` / ``PYTORCH_*ALLOC*`` environment variables (empty: defaults)."""
    return {
        name: value for name, value in sorted(os.environ.items())
        if name.startswith("MALLOC_") or (name.startswith("PYTORCH_") and "ALLOC" in name)
    }


def _kernels_state() -> str:
    """``loaded``, or why meprop's compiled kernels are not in use."""
    from meprop import kernels

    try:
        if not kernels.available():
            return f"off: {kernels.unavailable_reason()}"
        return f"loaded (top-k threshold: {kernels.threshold_search()})"
    except Exception as error:  # noqa: BLE001 - MEPROP_KERNELS=on without kernels, a bad setting
        return f"error: {error}"


def snapshot(*, threads: int | None = None, allocator: str | None = None,
             profile: str | None = None, argv: list[str] | None = None,
             malloc: dict | None = None) -> dict:
    """The environment snapshot; ``threads`` defaults to ``torch.get_num_threads()``.

    ``malloc``: the allocator setting applied by the run (``meprop.lab.engine.allocator``),
    recorded as ``malloc_policy``; None when the run changed nothing.
    """
    import psutil

    from meprop import __version__

    cudnn = _try(torch.backends.cudnn.version) if _try(torch.cuda.is_available, False) else None
    if allocator is None:
        allocator = "default"
    settings = malloc_settings()
    if malloc is not None and malloc.get("applied"):
        allocator += f"; malloc: {malloc['policy']} ({malloc['note']})"
    else:
        allocator += "; " + (", ".join(f"{k}={v}" for k, v in settings.items()) or "malloc defaults")
    return {
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": os.environ.get("MEPROP_MACHINE") or _try(socket.gethostname),
        "git_commit": git_commit(),
        "meprop_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": _try(platform.platform),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "cpu_model": cpu_model(),
        "cpu_cores_physical": _try(lambda: psutil.cpu_count(logical=False)),
        "cpu_cores_logical": _try(lambda: psutil.cpu_count(logical=True)),
        "ram_bytes": _try(lambda: int(psutil.virtual_memory().total)),
        # 1, 5, 15-minute load averages when the run started: above the core count, the
        # machine was shared and timings (threads > 1 especially) are unreliable.
        "load_average": _try(lambda: [round(x, 2) for x in os.getloadavg()]),
        "allocator": allocator,
        "malloc_policy": None if malloc is None else malloc.get("policy"),
        "meprop_kernels": _kernels_state(),
        "cuda_version": torch.version.cuda,
        "cudnn_version": cudnn,
        "gpus": gpus(),
        "profile": profile,
        "argv": list(sys.argv if argv is None else argv),
    }
