"""Grid selection for the pytest-benchmark cases (``pytest tests/benchmarks --benchmark-only``).

The cases are a profile of :mod:`meprop.lab.bench.cases`, chosen by ``--meprop-profile``
(or the ``MEPROP_BENCH_PROFILE`` environment variable). Default: ``quick`` with
``--benchmark-only``, else ``smoke``, so a plain ``pytest`` run spends seconds here.
"""

from __future__ import annotations

import os

import pytest

from meprop.lab.bench.profiles import PROFILES, profile_cases
from meprop.lab.bench.workloads import VARIANTS

ENV_VAR = "MEPROP_BENCH_PROFILE"


def pytest_addoption(parser):
    parser.addoption(
        "--meprop-profile", choices=sorted(PROFILES), default=None,
        help=f"grid of the pytest-benchmark cases (default: ${ENV_VAR}, else quick with "
             f"--benchmark-only and smoke otherwise)",
    )


def selected_profile(config) -> str:
    name = config.getoption("--meprop-profile") or os.environ.get(ENV_VAR)
    if name is None:
        return "quick" if config.getoption("benchmark_only", False) else "smoke"
    if name not in PROFILES:
        raise pytest.UsageError(f"{ENV_VAR} must be one of {sorted(PROFILES)}, got {name!r}")
    return name


def case_id(case) -> str:
    """``linear_backward-linear-n4096-k41-b1024-unified-cpu`` (+ m, layers, dtype, threads)."""
    return (f"{case.measurement}-{case.workload}-m{case.in_features}-n{case.hidden}"
            f"x{case.layers}-k{case.k}-b{case.batch}-{case.mode}-{case.device}-{case.dtype}"
            f"-t{case.threads or 'auto'}")


def pytest_generate_tests(metafunc):
    if "bench_case" in metafunc.fixturenames:
        cases = profile_cases(selected_profile(metafunc.config))
        metafunc.parametrize("bench_case", cases, ids=[case_id(c) for c in cases])
    if "variant" in metafunc.fixturenames:
        metafunc.parametrize("variant", VARIANTS)


def pytest_report_header(config):
    return f"meprop benchmark profile: {selected_profile(config)}"


@pytest.fixture(scope="session")
def bench_env() -> dict:
    """The environment snapshot, attached to every benchmark's extra_info; the fair allocator
    setting of ``meprop bench`` (``--malloc no-page-faults``) is applied first."""
    from meprop.lab.bench.allocator import apply
    from meprop.lab.bench.workloads import ALLOCATION_POLICY
    from meprop.lab.results.env import snapshot

    return snapshot(allocator=ALLOCATION_POLICY, profile=None, argv=[], malloc=apply())
