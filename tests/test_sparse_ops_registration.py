"""``import meprop`` leaves torch's sparse dispatch alone until a meProp layer makes a row-sparse gradient."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_sparse_kernels_register_at_the_first_row_sparse_gradient_not_at_import():
    code = textwrap.dedent("""
        import torch, meprop
        from meprop._impl import sparse_grad_ops
        coo = torch.sparse_coo_tensor([[0, 2]], torch.ones(2, 3), (4, 3))
        try:
            torch.linalg.vector_norm(coo)
            before = "works"
        except (NotImplementedError, RuntimeError):
            before = "torch's error"
        assert not sparse_grad_ops.registered()
        layer = meprop.MepropLinear(3, 4, k=1, sparse_grad=True)
        layer(torch.randn(2, 3)).sum().backward()
        assert layer.weight.grad.is_sparse and sparse_grad_ops.registered()
        norm = torch.linalg.vector_norm(coo)
        assert torch.isclose(norm, torch.tensor(6.0).sqrt()), norm
        print(before)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "torch's error"  # import meprop alone changed nothing
