"""Shared fixtures: run a test module's gradient tests on both meprop paths."""

from __future__ import annotations

import pytest

from meprop import kernels


@pytest.fixture(params=["kernels", "pytorch"])
def meprop_path(request, monkeypatch):
    """Each test twice: through the compiled kernels (``MEPROP_KERNELS=on``) and through the
    PyTorch fallback (``MEPROP_KERNELS=off``). The kernels half is skipped where they cannot
    be loaded (``tests/test_kernels.py`` fails there instead, naming the reason)."""
    if request.param == "kernels":
        monkeypatch.setenv("MEPROP_KERNELS", "auto")
        if not kernels.load():
            pytest.skip(f"meprop kernels unavailable: {kernels.unavailable_reason()}")
        monkeypatch.setenv("MEPROP_KERNELS", "on")
    else:
        monkeypatch.setenv("MEPROP_KERNELS", "off")
    return request.param
