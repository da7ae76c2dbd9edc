"""pytest-benchmark front door onto the engine's workloads (same operations as ``meprop bench``).

Run ``pytest tests/benchmarks --benchmark-only --benchmark-group-by=group`` to time the
quick grid with dense and meProp side by side per case (``--meprop-profile`` picks
another grid). Without ``--benchmark-only`` every case runs a few rounds only, as a
smoke test. Each benchmark's ``extra_info`` carries the case, the ideal speedup n/k, the
environment and ``interleaved``: the shape's speedup with dense and meProp timed
interleaved in one run (its 95% interval and sample count; see ``conftest.py``), which
the session's last lines list per shape. The timed call synchronizes the device before
returning. Select cases with ``-k`` (``-k "train_step and mlp"``) and compare a shape's
two boxes with ``--benchmark-group-by=group`` (the group is the case key).
"""

from __future__ import annotations

import pytest
import torch

from meprop.lab.engine.timer import num_threads, synchronize
from meprop.lab.ops.build import Unsupported, build
from meprop.lab.measurements import measurement


def test_case(benchmark, request, bench_case, variant, bench_env, interleaved):
    case = bench_case
    try:
        op = build(case, variant)
    except Unsupported as error:  # no CUDA, too large: a clean skip
        pytest.skip(str(error))

    def timed() -> None:
        op()
        synchronize(case.device)  # CUDA is asynchronous: the call ends when the work does

    benchmark.group = case.key  # dense and meprop of one case side by side
    benchmark.extra_info.update({
        "variant": variant,
        "case": case.to_dict(),
        "key": case.key,
        "ideal": case.ideal,
        "env": {name: bench_env[name] for name in (
            "machine", "cpu_model", "threads", "torch_version", "git_commit", "gpus",
            "allocator", "malloc_policy", "cuda_version")},
    })
    benchmark.extra_info["interleaved"] = interleaved(case)  # the same-run ratio of this shape
    with num_threads(case.threads) as threads:
        benchmark.extra_info["case"]["threads"] = threads
        if request.config.getoption("benchmark_only"):
            benchmark(timed)  # pytest-benchmark's calibrated rounds
        else:
            benchmark.pedantic(timed, rounds=2, iterations=1, warmup_rounds=1)
    if measurement(case.measurement).runs_backward and not measurement(case.measurement).steps_optimizer:
        # the allocation policy: .grad stays one dense buffer, accumulated in place
        grads = [p.grad for p in op.model.parameters() if p.dim() == 2]
        assert grads and all(g is not None and g.layout == torch.strided for g in grads)
