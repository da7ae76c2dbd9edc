"""The environment variables that switch meprop's behaviour, read and checked in one place.

- ``MEPROP_KERNELS``: ``auto`` (unset), ``on`` or ``off`` (:mod:`meprop.kernels`);
- ``MEPROP_TUNING``: ``on`` (unset) or ``off`` (:mod:`meprop.tuning`).

They are read at each use, so a test or a program may change them at run time. A value
meprop does not accept raises :class:`SettingError`, whose one-line message names the
variable, the value and what is accepted; the command lines print it as it is
(:func:`check` reads them all).
"""

from __future__ import annotations

import os

__all__ = ["SettingError", "kernels", "tuning", "check", "fingerprint"]

_KERNELS = {"auto": (), "on": ("1", "true", "yes", "required"), "off": ("0", "false", "no")}
_TUNING = {"on": ("1", "true", "yes"), "off": ("0", "false", "no")}


class SettingError(ValueError):
    """An environment variable read by meprop holds a value it does not accept."""


def kernels() -> str:
    """``MEPROP_KERNELS``: ``auto``, ``on`` or ``off``."""
    return _switch("MEPROP_KERNELS", _KERNELS)


def tuning() -> str:
    """``MEPROP_TUNING``: ``on`` or ``off``."""
    return _switch("MEPROP_TUNING", _TUNING)


def check() -> None:
    """Read every setting: :class:`SettingError` for the first one with a bad value."""
    kernels()
    tuning()


def fingerprint() -> tuple[str | None, ...]:
    """The settings' raw values, unchecked: a cheap part of the key of a cache whose entries
    depend on them (a changed value, spelled any way, is a new key; checking is left to use)."""
    return os.environ.get("MEPROP_KERNELS"), os.environ.get("MEPROP_TUNING")


def _switch(name: str, spellings: dict[str, tuple[str, ...]]) -> str:
    """The value of ``name`` as one of ``spellings``' keys (the first is the default, for unset
    or empty); each key maps to the other words that mean it. Case and blanks are ignored."""
    raw = os.environ.get(name)
    value = (raw or "").strip().lower()
    names = list(spellings)
    if not value:
        return names[0]
    for key, words in spellings.items():
        if value == key or value in words:
            return key
    accepted = f"{names[0]} or {names[1]}" if len(names) == 2 else "one of " + ", ".join(names)
    raise SettingError(f"{name} must be {accepted}, got {raw!r} (unset means {names[0]})")
