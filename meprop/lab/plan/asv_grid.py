"""The asv suite's grid and settings, read from ``MEPROP_ASV_*`` environment variables.

asv's ``params`` must be the same for every commit of one ``asv run``, so the suite
(``benchmarks/common.py``) reads them once at import, with :func:`read_grid` and
:func:`read_settings` (docs/asv.md lists the variables and why their defaults are quiet):

- ``MEPROP_ASV_GRID``: ``quick`` (default) or ``wide``; ``MEPROP_ASV_HIDDEN``,
  ``MEPROP_ASV_K_RATIO``, ``MEPROP_ASV_BATCH``, ``MEPROP_ASV_MODE``, ``MEPROP_ASV_DEVICE``:
  comma-separated values replacing one axis;
- ``MEPROP_ASV_THREADS`` (1, or ``all``), ``MEPROP_ASV_BUDGET`` (0.3 s), ``MEPROP_ASV_CLOCK``
  (``cpu`` or ``wall``), ``MEPROP_ASV_ROUNDS`` (5): how each case is timed.

:func:`grid_case` turns one combination of the grid into the engine's :class:`Case`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from meprop.checks import check_k_ratio
from meprop.lab.plan.cases import Case, check_device, grid
from meprop.selection import MODES

__all__ = ["PARAM_NAMES", "GRIDS", "Settings", "read_grid", "read_settings", "read_threads",
           "read_clock", "read_rounds", "read_budget", "grid_case"]

PARAM_NAMES = ["hidden", "k_ratio", "batch", "mode", "device"]

#: Named grids: one list of values per entry of PARAM_NAMES.
GRIDS: dict[str, dict[str, list]] = {
    "quick": {
        "hidden": [1024, 4096],
        "k_ratio": [0.01, 0.1],
        "batch": [64],
        "mode": ["unified"],
        "device": ["cpu", "cuda"],
    },
    "wide": {
        "hidden": [500, 1024, 4096],
        "k_ratio": [0.01, 0.04, 0.1, 0.5],
        "batch": [1, 64, 1024],
        "mode": ["unified", "per_example"],
        "device": ["cpu", "cuda"],
    },
}


@dataclass(frozen=True)
class Settings:
    """How each case of the suite is timed: torch threads (None: torch's own count), seconds
    of sampling per case and round, the clock (``cpu`` or ``wall``) and the rounds."""

    threads: int | None = 1
    budget_s: float = 0.3
    clock: str = "cpu"
    rounds: int = 5


def _split(env_name: str, raw: str, convert) -> list:
    values = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            values.append(convert(item))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{env_name}: bad value {item!r} in {raw!r}: {exc}") from None
    if not values:
        raise ValueError(f"{env_name} must list at least one value, got {raw!r}")
    return values


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be a positive int, got {value}")
    return value


def _mode(text: str) -> str:
    if text not in MODES:
        raise ValueError(f"must be one of {list(MODES)}")
    return text


_CONVERTERS = {"hidden": _positive_int, "k_ratio": lambda s: check_k_ratio(float(s), "k_ratio"),
               "batch": _positive_int, "mode": _mode, "device": check_device}


def read_grid(environ=None) -> dict[str, list]:
    """The grid named by ``MEPROP_ASV_GRID`` with the per-axis overrides applied."""
    environ = os.environ if environ is None else environ
    name = environ.get("MEPROP_ASV_GRID", "quick")
    if name not in GRIDS:
        raise ValueError(f"MEPROP_ASV_GRID must be one of {sorted(GRIDS)}, got {name!r}")
    out = {axis: list(values) for axis, values in GRIDS[name].items()}
    for axis in PARAM_NAMES:
        env_name = f"MEPROP_ASV_{axis.upper()}"
        if env_name in environ:
            out[axis] = _split(env_name, environ[env_name], _CONVERTERS[axis])
    return out


def _read(environ, name: str, default: str, parse, accepted: str):
    """``parse`` of the variable ``name`` (``default`` when unset); a ValueError naming the
    variable, what it accepts and the value when ``parse`` refuses it."""
    raw = environ.get(name, default)
    try:
        return parse(raw)
    except ValueError:
        raise ValueError(f"{name} must be {accepted}, got {raw!r}") from None


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:  # also refuses NaN
        raise ValueError(f"must be positive, got {value}")
    return value


def _clock(text: str) -> str:
    if text not in ("cpu", "wall"):
        raise ValueError(f"must be 'cpu' or 'wall', got {text!r}")
    return text


def read_threads(environ) -> int | None:
    return _read(environ, "MEPROP_ASV_THREADS", "1", lambda raw: None if raw == "all" else _positive_int(raw),
                 "a positive int or 'all'")


def read_clock(environ) -> str:
    return _read(environ, "MEPROP_ASV_CLOCK", "cpu", _clock, "'cpu' or 'wall'")


def read_rounds(environ) -> int:
    return _read(environ, "MEPROP_ASV_ROUNDS", "5", _positive_int, "a positive int")


def read_budget(environ) -> float:
    return _read(environ, "MEPROP_ASV_BUDGET", "0.3", _positive_float, "a positive number of seconds")


def read_settings(environ=None) -> Settings:
    environ = os.environ if environ is None else environ
    return Settings(threads=read_threads(environ), budget_s=read_budget(environ),
                    clock=read_clock(environ), rounds=read_rounds(environ))


def grid_case(workload: str, measurement: str, combo, threads: int | None, fields: dict | None = None) -> Case:
    """The Case of one combination ``(hidden, k_ratio, batch, mode, device)``: k = round(k_ratio
    * width), the width being hidden, or the LSTM's 4 * hidden gate entries. ``fields``: further
    Case fields; NotImplementedError (asv: n/a) when the Case lacks one."""
    hidden, k_ratio, batch, mode, device = combo
    try:
        (case,) = grid(workload=(workload,), measurement=(measurement,), hidden=(hidden,),
                       k_ratio=(k_ratio,), batch=(batch,), device=(device,), mode=(mode,),
                       threads=threads)  # grid() resolves k against the workload's width
        return case.replace(**fields) if fields else case
    except TypeError as exc:  # a field the Case does not have
        raise NotImplementedError(f"this commit's cases have no field among {sorted(fields or {})}: {exc}") from exc
