"""Shared fixtures: run a test module's gradient tests on both meprop paths.

The suite runs with the formulation tuner off (``MEPROP_TUNING=off``: the cost model
decides, deterministically, and nothing is timed) and its cache in a temporary folder, so
that no test reads or writes the user's cache; tests/test_tuning.py turns it on where it
tests it. Subprocesses inherit both settings.
"""

from __future__ import annotations

import os
import tempfile

import pytest

os.environ["MEPROP_TUNING"] = "off"
os.environ["MEPROP_TUNING_DIR"] = tempfile.mkdtemp(prefix="meprop-tuning-tests-")

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
