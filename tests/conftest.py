"""Shared fixtures: run a test module's gradient tests on both meprop paths.

The suite runs as users run: the formulation tuner on (the default; ``MEPROP_TUNING`` is
left as the environment has it), with a fresh, empty cache folder for each test run
(``MEPROP_TUNING_DIR``), so that the first backward of each shape measures, as in a new
user's first process, and no test reads or writes the user's cache. Subprocesses inherit
the folder. A test that needs the formulation fixed (it asserts which one ran, or compares
two runs bit for bit) asks for ``tuning_off_for_determinism``.
"""

from __future__ import annotations

import os
import tempfile

import pytest

os.environ["MEPROP_TUNING_DIR"] = tempfile.mkdtemp(prefix="meprop-tuning-tests-")

from meprop import kernels, settings, tuning

#: ``MEPROP_KERNELS=off`` for the whole run (CI's kernels-off leg): the compiled library is
#: never loaded, as on a machine that cannot build it, and ``meprop_path`` skips its kernels half.
KERNELS_OFF_FOR_RUN = settings.kernels() == "off"


@pytest.fixture
def tuning_off_for_determinism(monkeypatch):
    """``MEPROP_TUNING=off`` for one test: the kernels' cost model picks the formulation,
    nothing is timed, so which formulation runs (and so every rounding) is fixed."""
    monkeypatch.setenv("MEPROP_TUNING", "off")


@pytest.fixture
def cold_tuning_cache(monkeypatch, tmp_path):
    """Tuning on, an empty cache folder of the test's own and no choice in memory: every first
    backward of a shape measures, as in a new user's first process. Yields the folder."""
    monkeypatch.setenv("MEPROP_TUNING", "on")
    monkeypatch.setenv("MEPROP_TUNING_DIR", str(tmp_path))
    tuning.clear_memory()
    yield tmp_path
    tuning.clear_memory()


@pytest.fixture(params=["kernels", "pytorch"])
def meprop_path(request, monkeypatch):
    """Each test twice: through the compiled kernels (``MEPROP_KERNELS=on``) and through the
    PyTorch fallback (``MEPROP_KERNELS=off``). The kernels half is skipped where they cannot
    be loaded (``tests/test_kernels.py`` fails there instead, naming the reason) and in a run
    with ``MEPROP_KERNELS=off``."""
    if request.param == "kernels":
        if KERNELS_OFF_FOR_RUN:
            pytest.skip("MEPROP_KERNELS=off for this run")
        monkeypatch.setenv("MEPROP_KERNELS", "auto")
        if not kernels.load():
            pytest.skip(f"meprop kernels unavailable: {kernels.unavailable_reason()}")
        monkeypatch.setenv("MEPROP_KERNELS", "on")
    else:
        monkeypatch.setenv("MEPROP_KERNELS", "off")
    return request.param
