"""meprop's CPU kernel for aten::sqrt: torch's results bit for bit, with no zero sent to MKL.

The slowdown it removes: torch.optim's adaptive optimizers (default and foreach) take the sqrt
of second moments that meProp leaves exactly zero, and MKL's vector sqrt handles each zero in a
slow per-element path. The kernel must (1) be installed once a meProp layer exists, (2) give
every sqrt variant the same bits as torch's own kernel, whatever the dtype, layout or zeros,
and (3) leave torch.optim's updates on a converted model bit for bit unchanged.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import meprop
from meprop import kernels
from meprop._impl import fast_sqrt


@pytest.fixture(autouse=True)
def _kernels():
    if not kernels.available():
        pytest.skip("compiled kernels unavailable (MEPROP_KERNELS=off or no compiler)")


def _torch_sqrt(fn):
    """``fn()`` evaluated with torch's own CPU kernel for aten::sqrt (meprop's put back after)."""
    was = torch.ops.meprop.sqrt_override_active()
    torch.ops.meprop.set_sqrt_override(False)
    try:
        return fn()
    finally:
        torch.ops.meprop.set_sqrt_override(was)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32 if t.element_size() == 4 else torch.int64)


def _values(dtype, size=70_001, zero_fraction=0.3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    values = torch.rand(size, generator=gen, dtype=dtype) * 100
    values[torch.rand(size, generator=gen) < zero_fraction] = 0.0
    values[5::97] = -0.0
    values[7::101] = torch.finfo(dtype).tiny / 5  # denormals
    values[11::103] = -2.0
    values[13] = float("nan")
    values[17] = float("inf")
    return values


def test_a_converted_model_installs_it():
    meprop.convert(nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)), k=1)
    assert fast_sqrt.install() and fast_sqrt.installed(), fast_sqrt.status()
    assert torch.ops.meprop.sqrt_override_active()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("zero_fraction", [0.0, 0.3, 1.0])
def test_every_variant_equals_torch_bit_for_bit(dtype, zero_fraction):
    fast_sqrt.install()
    values = _values(dtype, zero_fraction=zero_fraction)
    expected = _torch_sqrt(lambda: torch.sqrt(values))
    assert torch.equal(_bits(torch.ops.meprop.sqrt_skipping_zeros(values)), _bits(expected))
    assert torch.equal(_bits(torch.sqrt(values)), _bits(expected))
    inplace = values.clone()
    inplace.sqrt_()
    assert torch.equal(_bits(inplace), _bits(expected))
    out = torch.empty(0, dtype=dtype)
    torch.sqrt(values, out=out)
    assert torch.equal(_bits(out), _bits(expected))
    assert torch.equal(_bits(torch._foreach_sqrt([values])[0]), _bits(expected))


def _assert_sqrt_out_of_place_in_place_and_out_equal_torch(values: torch.Tensor) -> torch.Tensor:
    """torch.sqrt, Tensor.sqrt_ and torch.sqrt(out=) give torch's own kernel's bits; returns those."""
    expected = _torch_sqrt(lambda: torch.sqrt(values))
    assert torch.equal(_bits(torch.sqrt(values)), _bits(expected))
    inplace = values.clone()
    inplace.sqrt_()
    assert torch.equal(_bits(inplace), _bits(expected))
    out = torch.empty_like(values)
    torch.sqrt(values, out=out)
    assert torch.equal(_bits(out), _bits(expected))
    return expected


def _rows_of_zeros(dtype, row, zero_rows_every, numel=3 * 4096 + 1000 + 37, seed=0):
    """Values with every ``zero_rows_every``-th row of ``row`` elements zero (+0 or -0), a few
    scattered zeros and denormals besides: runs of values, of zeros and of both, of every length
    around the kernel's blocks, and a tail that is no whole block."""
    gen = torch.Generator().manual_seed(seed)
    values = torch.rand(numel, generator=gen, dtype=dtype) * 10 + torch.finfo(dtype).tiny
    for start in range(0, numel, row * zero_rows_every):
        values[start:start + row] = -0.0 if (start // row) % 2 else 0.0
    values[3::1999] = 0.0
    values[5::2503] = torch.finfo(dtype).tiny / 7  # denormals
    values[-5:] = torch.tensor([0.0, float("nan"), -1.0, 0.0, 2.0], dtype=dtype)
    return values


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("row, every", [(784, 3), (64, 2), (63, 5), (1, 2), (200, 1), (500, 40)],
                         ids=["weight-rows", "block-aligned", "unaligned", "alternating", "all-zero", "rare-rows"])
def test_zeros_in_rows_equal_torch_bit_for_bit(dtype, row, every):
    fast_sqrt.install()
    values = _rows_of_zeros(dtype, row, every)
    _assert_sqrt_out_of_place_in_place_and_out_equal_torch(values)


@pytest.mark.parametrize("make", [
    lambda: _values(torch.float32)[:70000].reshape(-1, 7)[:, ::2],  # strided
    lambda: _values(torch.float32)[:100],  # small
    lambda: _values(torch.float32).to(torch.bfloat16),
    lambda: _values(torch.float32).to(torch.complex64),
    lambda: torch.arange(10_000),  # integers promote to float
], ids=["strided", "small", "bfloat16", "complex", "int"])
def test_other_inputs_go_to_torch_unchanged(make):
    fast_sqrt.install()
    values = make()
    expected = _torch_sqrt(lambda: torch.sqrt(values))
    result = torch.sqrt(values)
    assert result.dtype == expected.dtype and result.shape == expected.shape
    torch.testing.assert_close(result, expected, rtol=0, atol=0, equal_nan=True)


def test_out_refusals_are_torchs():
    fast_sqrt.install()
    with pytest.raises(RuntimeError, match="can't be cast"):
        torch.sqrt(_values(torch.float64), out=torch.empty(0, dtype=torch.int64))


def test_autograd_through_sqrt_is_unchanged():
    fast_sqrt.install()
    x = (torch.rand(10_000, dtype=torch.float64) + 0.1).requires_grad_()
    x.sqrt().sum().backward()
    assert torch.equal(x.grad, _torch_sqrt(lambda: 0.5 / x.detach().sqrt()))


def _train(optimizer_cls, steps=30, **kwargs):
    torch.manual_seed(0)
    model = meprop.convert(nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                                         nn.Linear(256, 10)), k=4)
    opt = optimizer_cls(model.parameters(), **kwargs)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.rand(8, 64, generator=gen), torch.randint(0, 10, (8,), generator=gen)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("optimizer_cls, kwargs", [
    (torch.optim.Adam, {}), (torch.optim.AdamW, {"foreach": True}), (torch.optim.RMSprop, {}),
    (torch.optim.Adagrad, {"foreach": True}),
], ids=["Adam", "AdamW-foreach", "RMSprop", "Adagrad-foreach"])
def test_torch_optimizers_train_bit_for_bit_as_before(optimizer_cls, kwargs):
    fast_sqrt.install()
    ours = _train(optimizer_cls, **kwargs)
    theirs = _torch_sqrt(lambda: _train(optimizer_cls, **kwargs))
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


def test_the_switch_leaves_torchs_kernel():
    code = ("import torch, torch.nn as nn, meprop; from meprop._impl import fast_sqrt; "
            "meprop.convert(nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)), k=1); "
            "from meprop import kernels; assert kernels.available(); "
            "print(fast_sqrt.status(), torch.ops.meprop.sqrt_override_active())")
    env = {**os.environ, "MEPROP_FAST_SQRT": "off"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["off", "(MEPROP_FAST_SQRT)", "False"]


def _special(dtype, zeros: bool) -> torch.Tensor:
    """Every class of value with chosen bit patterns (NaN payloads and signs, signalling NaNs,
    infinities, negatives, denormals), tiled past the size the zero-skipping path starts at.
    With ``zeros``: a -0.0 first (so the kernel's sample sees a zero), chunks of those values
    without zeros (torch's routine straight), then the same with -0.0 and +0.0 mixed in."""
    if dtype == torch.float32:
        patterns = [0x7FC12345, 0xFFC00001, 0x7F800001, 0xFF812345, 0x7F800000, 0xFF800000, 0xBF800000,
                    0x00000001, 0x807FFFFF, 0x3F800000, 0x40800000, 0x7F7FFFFF]
        zero_bits = [0x80000000, 0x00000000]
    else:
        patterns = [0x7FF8000000012345, -0x3FFFFFFFFFFF, 0x7FF0000000000001, 0x7FF0000000000000,
                    -0x10000000000000, -0x4010000000000000, 1, 0x3FF0000000000000, 0x7FEFFFFFFFFFFFFF]
        zero_bits = [-0x8000000000000000, 0]

    def tiled(bits, size=10_000):
        values = torch.tensor(bits, dtype=torch.int64)
        values = (values.to(torch.int32) if dtype == torch.float32 else values).view(dtype)
        return values.repeat(size // len(bits) + 1)[:size]

    if not zeros:
        return torch.cat([tiled(patterns), torch.rand(5, dtype=dtype) + 1])
    return torch.cat([tiled(zero_bits[:1], 1), tiled(patterns), tiled(patterns + zero_bits)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("zeros", [False, True], ids=["zero-free", "with-zeros"])
def test_never_changes_a_result_special_values(dtype, zeros):
    fast_sqrt.install()
    values = _special(dtype, zeros)
    assert values.numel() >= 8192
    expected = _assert_sqrt_out_of_place_in_place_and_out_equal_torch(values)
    foreach = torch._foreach_sqrt([values, values[:100]])
    assert torch.equal(_bits(foreach[0]), _bits(expected)) and torch.equal(_bits(foreach[1]), _bits(expected[:100]))
    if zeros:  # sqrt(-0.0) is -0.0: the sign survives
        negative_zero = _bits(values) == _bits(torch.tensor([-0.0], dtype=dtype))
        assert negative_zero.any() and torch.equal(_bits(torch.sqrt(values))[negative_zero], _bits(values)[negative_zero])


def test_foreach_sqrt_runs_aten_sqrt_per_tensor():
    """torch._foreach_sqrt on CPU goes through aten::sqrt for each tensor, so the kernel covers it."""
    fast_sqrt.install()
    tensors = [_values(torch.float32, size=10_000, seed=s) for s in range(3)]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        torch._foreach_sqrt(tensors)
    names = [event.name for event in prof.events()]
    assert names.count("aten::sqrt") == len(tensors), names


def _cpu_kernel_of_sqrt() -> str:
    """The dispatcher's line for aten::sqrt's CPU kernel (it names the file that registered it)."""
    lines = [line for line in torch._C._dispatch_dump("aten::sqrt").splitlines() if line.startswith("CPU:")]
    assert len(lines) == 1, lines
    return lines[0]


def test_uninstall_restores_torchs_kernel_and_force_reinstalls():
    fast_sqrt.install()
    assert "sqrt.cpp" in _cpu_kernel_of_sqrt()
    try:
        fast_sqrt.uninstall()
        assert not fast_sqrt.installed() and not torch.ops.meprop.sqrt_override_active()
        assert "sqrt.cpp" not in _cpu_kernel_of_sqrt()
        values = _values(torch.float32)
        assert torch.equal(_bits(torch.sqrt(values)), _bits(torch.ops.meprop.sqrt_skipping_zeros(values)))
        assert not fast_sqrt.install()  # automatic installs respect the uninstall
        meprop.convert(nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)), k=1)
        assert not torch.ops.meprop.sqrt_override_active()
    finally:
        assert fast_sqrt.install(force=True), fast_sqrt.status()
    assert "sqrt.cpp" in _cpu_kernel_of_sqrt()
