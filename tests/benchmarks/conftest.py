"""Grid selection and the same-run ratios of the pytest-benchmark cases (``pytest tests/benchmarks --benchmark-only``).

The cases are a profile of :mod:`meprop.lab.plan.cases`, chosen by ``--meprop-profile``
(or the ``MEPROP_BENCH_PROFILE`` environment variable). Default: ``quick`` with
``--benchmark-only``, else ``smoke``, so a plain ``pytest`` run spends seconds here.

Test ids start with the variant (``test_case[dense-train_step-mlp-n500...]``), so the
two boxes of a shape stay apart in ``--benchmark-histogram`` (which cuts labels at 50
characters). pytest-benchmark times the dense and the meProp test of a shape separately,
possibly minutes apart, so their ratio is no speedup on a loaded machine: for each shape
the :func:`interleaved` fixture also times both sides once with the engine's interleaved
ratio (:func:`meprop.lab.engine.rounds.interleaved_ratio`, the timer of ``meprop bench``), stores the
speedup, its 95% interval and sample counts in both benchmarks' ``extra_info["interleaved"]``,
and the session ends with a table of them (``pytest_terminal_summary``).
"""

from __future__ import annotations

import os

import pytest

from meprop.lab.plan.profiles import PROFILES, profile_cases
from meprop.lab.engine.rounds import interleaved_ratio
from meprop.lab.ops.build import VARIANTS

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
    # the variant first: its id leads, so the histogram's cut labels still tell dense from meProp
    if "variant" in metafunc.fixturenames:
        metafunc.parametrize("variant", VARIANTS)
    if "bench_case" in metafunc.fixturenames:
        cases = profile_cases(selected_profile(metafunc.config))
        metafunc.parametrize("bench_case", cases, ids=[case_id(c) for c in cases])


def pytest_report_header(config):
    return f"meprop benchmark profile: {selected_profile(config)}"


@pytest.fixture(scope="session")
def bench_env() -> dict:
    """The environment snapshot, attached to every benchmark's extra_info; the fair allocator
    setting of ``meprop bench`` (``--malloc no-page-faults``) is applied first."""
    from meprop.lab.engine.allocator import apply
    from meprop.lab.ops.build import ALLOCATION_POLICY
    from meprop.lab.results.env import snapshot

    return snapshot(allocator=ALLOCATION_POLICY, profile=None, argv=[], malloc=apply())


#: Sampling budget of one shape's interleaved ratio (seconds, both sides together).
INTERLEAVED_BUDGET_S = {"benchmark": 0.5, "smoke": 0.02}
_RATIOS: dict[str, dict] = {}  # case key -> its interleaved ratio, for the session summary


@pytest.fixture
def interleaved(request):
    """``interleaved(case)``: the case's same-run ratio, measured once per session and shape."""
    budget = INTERLEAVED_BUDGET_S["benchmark" if request.config.getoption("benchmark_only", False) else "smoke"]

    def get(case) -> dict:
        if case.key not in _RATIOS:
            _RATIOS[case.key] = interleaved_ratio(case, budget)  # the engine's (meprop.lab.engine.rounds)
        return _RATIOS[case.key]

    return get


def _summary_line(key: str, r: dict) -> str:
    interval = (f"[{r['low']:.2f}-{r['high']:.2f}]" if r.get("low") is not None else "[no interval]")
    flag = []
    if r["noisy"]:
        flag.append("noisy")
    if r.get("low") is not None and r["low"] <= 1 <= r["high"]:
        flag.append("interval contains 1")
    return (f"{r['speedup']:8.2f}x {interval:>15} {r['n_samples']:4d}  {r['dense_median_s'] * 1e3:10.4g} "
            f"{r['meprop_median_s'] * 1e3:10.4g}  {', '.join(flag) or '-':<22} {key}")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _RATIOS:
        return
    terminalreporter.section("meProp speedups, dense and meProp interleaved in one run (95% CI)")
    terminalreporter.write_line(f"{'speedup':>9} {'95% CI':>15} {'n':>4}  {'dense ms':>10} {'meProp ms':>10}  "
                                f"{'flag':<22} case")
    for key, ratio in _RATIOS.items():
        terminalreporter.write_line(_summary_line(key, ratio))
