"""The meprop.optim tests import their twin models and references from optim_helpers."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

import meprop.optim.adam  # noqa: E402


@pytest.fixture(params=["compiled rows", "fused views"])
def adam_rows_path(request, monkeypatch):
    """Run a lazy Adam test on the compiled row kernel and on its fallback (torch's fused
    Adam on row views); the compiled one is skipped where the kernels are not loaded."""
    if request.param == "fused views":
        monkeypatch.setattr(meprop.optim.adam, "_rows_kernel_takes", lambda tensors, rows: False)
    elif not meprop.kernels.supports(torch.zeros(1)):
        pytest.skip("meprop kernels not loaded")
    return request.param
