"""Small synthetic result sets in the results schema (``meprop.results/1``), for report tests.

Records are built the way the engine writes them (speedup = dense / meProp medians,
ideal = n / k, noisy when an IQR exceeds 10% of its median), from times chosen so that
every speedup in a test is known in advance.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["SCHEMA", "env_record", "bench_record", "train_record", "write_jsonl", "quick_like_records", "tiny_records",
           "SPEEDUPS"]

SCHEMA = "meprop.results/1"


def env_record(run_id: str, machine: str = "box-a", *, profile: str = "quick", device_gpus=()) -> dict:
    return {
        "schema": SCHEMA, "type": "env", "run_id": run_id,
        "env": {
            "timestamp": "2026-11-21T05:12:00+00:00", "machine": machine, "git_commit": "0123456789abcdef",
            "meprop_version": "0.1.0", "torch_version": "2.13.0", "python_version": "3.11.7",
            "platform": "Linux-x86_64", "threads": 2, "cpu_model": "AMD EPYC", "cpu_cores_physical": 1,
            "cpu_cores_logical": 2, "ram_bytes": 24 * 2**30, "allocator": "grads preallocated",
            "cuda_version": None, "cudnn_version": None, "gpus": list(device_gpus), "profile": profile,
            "argv": ["meprop", "bench", "--profile", profile],
        },
    }


def bench_record(run_id: str, *, hidden: int, batch: int, k: int, mode: str = "unified",
                 measurement: str = "linear_backward", dense_s: float | None = 1e-3,
                 meprop_s: float | None = 1e-4, iqr_frac: float = 0.02, device: str = "cpu",
                 workload: str = "linear", layers: int = 1, in_features: int | None = None,
                 status: str = "ok", reason: str | None = None, peak: dict | None = None,
                 threads: int = 2, classes: int = 10, **case_fields) -> dict:
    def side(median):
        if median is None:
            return None
        return {"median_s": median, "iqr_s": median * iqr_frac, "n_samples": 7,
                "min_s": median * 0.95, "mean_s": median * 1.01}

    in_features = hidden if in_features is None else in_features
    case = {"workload": workload, "measurement": measurement, "hidden": hidden, "in_features": in_features,
            "layers": layers, "k": k, "k_ratio": k / hidden, "batch": batch, "device": device,
            "dtype": "float32", "mode": mode, "threads": threads, "classes": classes, **case_fields}
    speedup = dense_s / meprop_s if (status == "ok" and dense_s and meprop_s) else None
    return {
        "schema": SCHEMA, "type": "bench", "run_id": run_id, "case": case,
        "key": "|".join(f"{k_}={v}" for k_, v in case.items()),
        "status": status, "reason": reason,
        "dense": side(dense_s) if status == "ok" else None,
        "meprop": side(meprop_s) if status == "ok" else None,
        "speedup": speedup, "ideal": hidden / k,
        "efficiency": None if speedup is None else speedup / (hidden / k),
        "noisy": iqr_frac > 0.10 if status == "ok" else False,
        "peak_memory": peak,
    }


def train_record(run_id: str, epoch: int = 1) -> dict:
    return {"schema": SCHEMA, "type": "train", "run_id": run_id, "task": "mnist", "preset": "tiny",
            "config": {"k": 20, "mode": "per_example", "hidden": 500}, "epoch": epoch, "train_loss": 0.3,
            "dev_score": 97.0, "test_score": 96.9, "best_epoch_so_far": epoch,
            "time_s": {"forward": 1.0, "backward": 0.5, "update": 0.1}, "samples": 1000}


def write_jsonl(path: Path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


#: (mode, hidden, batch) -> {k_ratio: speedup} used by :func:`quick_like_records`.
SPEEDUPS = {
    ("unified", 1024, 64): {0.01: 20.0, 0.04: 8.0, 0.1: 4.0, 0.5: 1.5},
    ("unified", 1024, 1024): {0.01: 40.0, 0.04: 16.0, 0.1: 6.0, 0.5: 1.8},
    ("unified", 4096, 64): {0.01: 30.0, 0.04: 12.0, 0.1: 7.0, 0.5: 1.6},
    ("unified", 4096, 1024): {0.01: 45.0, 0.04: 18.0, 0.1: 8.0, 0.5: 1.9},
    ("per_example", 1024, 64): {0.01: 9.0, 0.04: 3.0, 0.1: 1.2, 0.5: 0.6},
    ("per_example", 1024, 1024): {0.01: 7.0, 0.04: 2.5, 0.1: 0.9, 0.5: 0.4},
    ("per_example", 4096, 64): {0.01: 12.0, 0.04: 4.0, 0.1: 1.5, 0.5: 0.5},
    ("per_example", 4096, 1024): {0.01: 10.0, 0.04: 3.5, 0.1: 1.1, 0.5: 0.45},
}


def quick_like_records(run_id: str = "run-a", machine: str = "box-a", *, noisy_case=None) -> list[dict]:
    """A quick-profile-like run: linear-only backprop + forward with known speedups.

    ``noisy_case``: (mode, hidden, batch, k_ratio) whose meProp side gets a 30% IQR.
    Dense takes ``hidden * batch * 1e-9`` s; meProp that divided by the speedup.
    """
    records = [env_record(run_id, machine)]
    for (mode, hidden, batch), curve in SPEEDUPS.items():
        for ratio, speedup in curve.items():
            k = max(1, round(ratio * hidden))
            dense = hidden * batch * 1e-9
            noisy = noisy_case == (mode, hidden, batch, ratio)
            records.append(bench_record(run_id, hidden=hidden, batch=batch, k=k, mode=mode,
                                        dense_s=dense, meprop_s=dense / speedup,
                                        iqr_frac=0.3 if noisy else 0.02))
            records.append(bench_record(run_id, hidden=hidden, batch=batch, k=k, mode=mode,
                                        measurement="forward", dense_s=dense * 0.5, meprop_s=dense * 0.51))
    return records


def tiny_records(run_id: str = "run-t", machine: str = "box-t") -> list[dict]:
    """Two linear-only backprop cells (one figure): for tests that only need a small valid run."""
    return [env_record(run_id, machine)] + [
        bench_record(run_id, hidden=1024, batch=64, k=k, dense_s=1e-3, meprop_s=1e-3 / s)
        for k, s in ((10, 8.0), (102, 2.0))
    ]


def many_records(n: int = 20_000, *, machines: int = 4) -> list[dict]:
    """About ``n`` bench records over several machines (the report must scale).

    Each machine: both top-k modes x 4 measurements x hidden {500 ... 8192} x batch
    {1 ... 1024} x as many k ratios as it takes to reach ``n`` records; speedups fall
    with k/n as 0.8 n/k^0.8 does, so every curve crosses break-even.
    """
    import math

    hiddens, batches = (500, 1024, 2048, 4096, 8192), (1, 16, 64, 256, 1024)
    modes, measurements = ("unified", "per_example"), ("forward", "linear_backward", "overall_backward", "train_step")
    per_ratio = machines * len(modes) * len(measurements) * len(hiddens) * len(batches)
    ratios = [0.005 * 1.2 ** i for i in range(math.ceil(n / per_ratio) + 1)]  # + 1: k ties at small n
    records = []
    for m in range(machines):
        run = f"run-{m}"
        records.append(env_record(run, f"box-{m}"))
        for mode in modes:
            for measurement in measurements:
                workload = "linear" if measurement in ("forward", "linear_backward") else "mlp"
                for hidden in hiddens:
                    for batch in batches:
                        ks = dict.fromkeys(min(hidden, max(1, round(r * hidden))) for r in ratios)
                        for k in ks:  # one record per case: no case is measured twice
                            dense = hidden * batch * 1e-9 + 1e-5
                            speedup = 1.0 if measurement == "forward" else max(0.2, 0.8 * (hidden / k) ** 0.8)
                            records.append(bench_record(
                                run, hidden=hidden, batch=batch, k=k, mode=mode, measurement=measurement,
                                workload=workload, layers=2 if workload == "mlp" else 1,
                                dense_s=dense, meprop_s=dense / speedup,
                                iqr_frac=0.15 if (hidden + batch + k) % 7 == 0 else 0.02,
                                peak={"dense_bytes": hidden * 4096, "meprop_bytes": k * 4096,
                                      "kind": "cpu_rss_delta"}))
    return records
