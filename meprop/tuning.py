"""Measured choice of a meProp backward's formulation, cached per machine (autotuning).

The first time a meProp linear layer meets a new *shape bucket* (device, dtype, thread
count, batch rounded up to a power of two, ``n``, ``m``, ``k``, weight-gradient layout,
whether grad_input is needed, whether the compiled kernels take part): in its forward when the compiled op applies (before the graph
is recorded, with a stand-in output gradient), else in its backward, :func:`pick` times every
candidate formulation on the layer's operands, interleaved round by round (cuDNN's benchmark mode and Triton's
autotuner do the same), and keeps the one with the lowest time (its fastest round: on a
shared machine, other processes only ever add time to a sample). The winner is cached in
memory and on disk, so a later process on the same machine reuses it without measuring.

Environment:

- ``MEPROP_TUNING``: ``on`` (default) measures at first use; ``off`` never measures nor
  reads the cache (the cost model of :mod:`meprop.dispatch` decides, as on a cold start).
- ``MEPROP_TUNING_DIR``: the cache folder (default ``$XDG_CACHE_HOME/meprop/tuning``, i.e.
  ``~/.cache/meprop/tuning``; never inside the installed package).

The cache file is named after a *machine fingerprint* (CPU model, core count,
architecture, torch version, and the compiled kernels' build key) and repeats it inside,
so an entry measured on another machine is never used. A corrupt or foreign file is
ignored with a :class:`TuningCacheWarning` and rewritten. Writes merge with what is on
disk and land by atomic replace, so concurrent writers never leave a torn file (the last
one wins an entry both measured).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from meprop import settings

__all__ = [
    "enabled",
    "cache_dir",
    "cache_path",
    "fingerprint",
    "bucket",
    "lookup",
    "pick",
    "clear_memory",
    "TuningCacheWarning",
]

_FORMAT = 1
_ROUNDS = 5          # timed rounds (each runs every candidate once), after one warm-up round
_BUDGET_S = 0.25     # stop adding rounds past this much measuring (at least _MIN_ROUNDS)
_MIN_ROUNDS = 3
_lock = threading.Lock()
_memory: dict[str, dict] = {}       # bucket key -> {"formulation", "source", "times"}
_disk_loaded: dict[str, bool] = {}  # cache path -> loaded
_generation = [0]  # bumped whenever _memory changes (decisions remembered from it are then stale)


class TuningCacheWarning(RuntimeWarning):
    """The tuning cache file could not be read; it is ignored and rebuilt."""


def enabled() -> bool:
    """False when ``MEPROP_TUNING=off``: the cost model decides, nothing is measured or read."""
    return settings.tuning() == "on"


def cache_dir() -> Path:
    """``$MEPROP_TUNING_DIR``, else ``$XDG_CACHE_HOME/meprop/tuning`` (``~/.cache/...``)."""
    env = os.environ.get("MEPROP_TUNING_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "meprop" / "tuning"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@functools.lru_cache(maxsize=1)
def fingerprint() -> str:
    """A short hash naming this machine and software: what a measured choice depends on."""
    from meprop import kernels  # noqa: PLC0415 - kernels imports nothing from here

    parts = (_cpu_model(), platform.machine(), os.cpu_count(), torch.__version__, kernels.build_key())
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def cache_path() -> Path:
    """The cache file of this machine."""
    return cache_dir() / f"{fingerprint()}.json"


def bucket(device: torch.device, dtype: torch.dtype, batch: int, n: int, m: int, k: int,
           layout: str, need_input: bool, compiled: bool = True) -> str:
    """The key of a shape bucket; the batch is rounded up to a power of two. ``compiled``: the
    compiled kernels took part (their candidates differ from the PyTorch path's)."""
    name = str(device.type)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    rounded = 1 << max(0, int(batch) - 1).bit_length()
    return (f"{name}|{str(dtype).removeprefix('torch.')}|t{torch.get_num_threads()}|b{rounded}"
            f"|n{n}|m{m}|k{k}|{layout}|{'gi' if need_input else 'nogi'}|{'op' if compiled else 'py'}")


def lookup(key: str) -> dict | None:
    """The cached choice for ``key`` (memory, then this machine's disk cache), or None."""
    entry = _memory.get(key)
    if entry is not None:
        return entry
    path = cache_path()
    with _lock:
        if not _disk_loaded.get(str(path)):
            _disk_loaded[str(path)] = True
            for name, stored in _read(path).items():
                _memory.setdefault(name, {**stored, "source": "cached"})
            _generation[0] += 1
    return _memory.get(key)


def generation() -> int:
    """A number that changes whenever the in-memory choices change (measured, read, cleared)."""
    return _generation[0]


def pick(key: str, candidates: Sequence[str], run: Callable[[str], object],
         sync: Callable[[], None] | None = None) -> str:
    """Time ``run(name)`` for every candidate, cache the fastest under ``key``, return it."""
    times = measure(candidates, run, sync)
    winner = min(times, key=times.get)
    entry = {"formulation": winner, "times": {name: round(t, 9) for name, t in times.items()}}
    with _lock:
        _memory[key] = {**entry, "source": "measured"}
        _generation[0] += 1
    _write(cache_path(), key, entry)
    return winner


def measure(candidates: Sequence[str], run: Callable[[str], object],
            sync: Callable[[], None] | None = None) -> dict[str, float]:
    """Seconds of each candidate (its fastest round), interleaved round by round after one warm-up."""
    sync = sync or (lambda: None)
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for name in candidates:
        run(name)
    sync()
    start = time.perf_counter()
    for done in range(_ROUNDS):
        if done >= _MIN_ROUNDS and time.perf_counter() - start > _BUDGET_S:
            break
        for name in candidates:
            t0 = time.perf_counter()
            run(name)
            sync()
            samples[name].append(time.perf_counter() - t0)
    return {name: min(values) for name, values in samples.items()}


def clear_memory() -> None:
    """Forget the in-memory choices (the next lookup reads the disk cache again)."""
    with _lock:
        _memory.clear()
        _disk_loaded.clear()
        _generation[0] += 1


def _read(path: Path) -> dict[str, dict]:
    """The entries of a cache file; {} (with a warning) when it is unreadable or foreign."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError("unknown format")
        if data.get("fingerprint") != fingerprint():
            raise ValueError(f"written for machine {data.get('fingerprint')!r}, this is {fingerprint()!r}")
        entries = data["entries"]
        if not isinstance(entries, dict) or not all(
                isinstance(e, dict) and isinstance(e.get("formulation"), str) for e in entries.values()):
            raise ValueError("malformed entries")
        return entries
    except (OSError, ValueError, KeyError, TypeError) as error:
        warnings.warn(f"meprop: ignoring the tuning cache {path} ({error}); it will be rebuilt",
                      TuningCacheWarning, stacklevel=2)
        return {}


def _write(path: Path, key: str, entry: dict) -> None:
    """Merge ``key: entry`` into the file at ``path`` by atomic replace (best effort)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TuningCacheWarning)  # a bad file is simply replaced
            entries = _read(path)
        entries[key] = entry
        data = {"format": _FORMAT, "fingerprint": fingerprint(), "machine": _cpu_model(),
                "torch": torch.__version__, "entries": entries}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tuning-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=1, sort_keys=True)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as error:  # a read-only home: the choice stays in memory
        warnings.warn(f"meprop: could not write the tuning cache {path} ({error})",
                      TuningCacheWarning, stacklevel=2)
