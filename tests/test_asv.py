"""The asv suite (benchmarks/, asv.conf.json) and its offline publishing helper.

Runs ``asv check`` on the suite, checks that every benchmark's ``setup`` turns an
impossible case (cuda without a GPU) into ``NotImplementedError`` (asv's n/a) instead of
crashing, runs one class end to end on a tiny CPU grid, and checks that
scripts/asv_offline.py leaves no network reference in asv's page. Fast (seconds); no
timing is asserted.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SUITE_MODULES = ("bench_forward", "bench_linear_backward", "bench_overall_backward",
                 "bench_train_step", "bench_peak_memory")

asv = pytest.importorskip("asv", reason="asv is not installed (pip install asv); the asv suite is not checked")


def _load_suite():
    """Import benchmarks/ under a private package name (tests/benchmarks is another package)."""
    name = "_meprop_asv_suite"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, ROOT / "benchmarks" / "__init__.py",
            submodule_search_locations=[str(ROOT / "benchmarks")],
        )
        package = importlib.util.module_from_spec(spec)
        sys.modules[name] = package
        spec.loader.exec_module(package)
    return {mod: importlib.import_module(f"{name}.{mod}") for mod in ("common",) + SUITE_MODULES}


def _suite_classes():
    suite = _load_suite()
    for mod in SUITE_MODULES:
        for cls_name in suite[mod].__all__:
            yield getattr(suite[mod], cls_name)


def _load_offline():
    spec = importlib.util.spec_from_file_location("_asv_offline", ROOT / "scripts" / "asv_offline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_asv_check_finds_no_problems():
    # asv drops PYTHONPATH; ASV_PYTHONPATH makes its processes import this checkout's meprop
    proc = subprocess.run(
        [sys.executable, "-m", "asv", "check", "--python=same"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "ASV_PYTHONPATH": str(ROOT)},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "No problems found" in out, out


def test_every_class_covers_the_grid_and_names_its_params():
    classes = list(_suite_classes())
    assert {c.__name__ for c in classes} == {
        "Forward", "LinearBackward", "OverallBackward", "TrainStep", "TrainStepFusedAdam", "PeakMemory"}
    common = _load_suite()["common"]
    for cls in classes:
        assert cls.param_names == ["hidden", "k_ratio", "batch", "mode", "device"]
        assert cls.params == common.PARAMS
        tracks = [n for n in dir(cls) if n.startswith("track_")]
        assert tracks, cls
        for name in tracks:
            assert getattr(cls, name).unit in ("seconds", "bytes", "x dense time (meProp / dense = 1 / speedup)")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present: the n/a path is not taken")
def test_setup_raises_not_implemented_for_cuda_without_gpu():
    common = _load_suite()["common"]
    grid = [[32], [0.25], [4], ["unified"], ["cuda", "cuda:1"]]
    checked = 0
    for cls in _suite_classes():
        if hasattr(cls, "setup_cache"):  # the cache asv would pass: cuda entries skipped
            results = common.measure_grid(cls.workload, cls.measurement, grid, **cls.case_fields)
        for params in itertools.product(*grid):
            bench = cls()
            if hasattr(cls, "setup_cache"):
                assert results[params] == {"skipped": f"{params[-1]}: cuda not available"}
                args = (results, *params)
            else:
                args = params
            with pytest.raises(NotImplementedError, match="cuda not available"):
                bench.setup(*args)
            checked += 1
    assert checked == 12
    assert not torch.cuda.is_initialized()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present: the n/a path is not taken")
def test_a_grid_measures_only_what_can_run_here_and_starts_no_process_for_the_rest(monkeypatch):
    from meprop.lab.engine import rounds

    suite = _load_suite()
    common = suite["common"]
    cls = suite["bench_linear_backward"].LinearBackward
    given = []

    def fake_round(workload, measurement, combos, fields, settings):
        given.append(list(combos))
        return [{"dense": 2.0, "meprop": 1.0, "relative_time": 0.5, "dense_rel_iqr": 0.0,
                 "meprop_rel_iqr": 0.0, "ideal": 4.0} for _ in combos]

    monkeypatch.setattr(rounds, "round_in_fresh_process", fake_round)
    monkeypatch.setattr(common, "ROUNDS", 2)
    grid = [[32], [0.25], [4], ["unified"], ["cpu", "cuda"]]
    results = common.measure_grid(cls.workload, cls.measurement, grid)
    cpu, cuda = (32, 0.25, 4, "unified", "cpu"), (32, 0.25, 4, "unified", "cuda")
    assert given == [[cpu], [cpu]]  # two rounds, each of the runnable combination only
    assert results[cpu]["speedup"] == 2.0 and results[cpu]["rounds"] == 2
    assert results[cuda] == {"skipped": "cuda: cuda not available"}
    given.clear()
    results = common.measure_grid(cls.workload, cls.measurement, [[32], [0.25], [4], ["unified"], ["cuda"]])
    assert given == [] and results == {cuda: {"skipped": "cuda: cuda not available"}}


def test_fused_adam_suite_runs_fused_cases_and_is_na_where_the_field_is_missing(monkeypatch):
    suite = _load_suite()
    common = suite["common"]
    monkeypatch.setattr(common, "BUDGET_S", 0.01)
    monkeypatch.setattr(common, "ROUNDS", 1)  # one fresh process: what is measured, not how often
    cls = suite["bench_train_step"].TrainStepFusedAdam
    params = (32, 0.125, 4, "per_example", "cpu")
    assert common.make_case("mlp", "train_step", *params, **cls.case_fields).adam == "fused"
    results = common.measure_grid(cls.workload, cls.measurement, [[v] for v in params], **cls.case_fields)
    bench = cls()
    bench.setup(results, *params)
    assert bench.track_dense(results, *params) > 0 and bench.track_meprop(results, *params) > 0
    # an older commit, whose Case has no 'adam' field: n/a, not a crash
    missing = {"fused_everything": True}
    skipped = common.measure_grid(cls.workload, cls.measurement, [[v] for v in params], **missing)
    assert "no field" in skipped[params]["skipped"]
    with pytest.raises(NotImplementedError, match="no field"):
        common.lookup(skipped, cls.workload, cls.measurement, params, **missing)


def test_a_case_too_large_for_memory_is_not_applicable_not_a_crash(monkeypatch):
    suite = _load_suite()
    common = suite["common"]
    monkeypatch.setattr(common, "ROUNDS", 1)
    params = (2**20, 0.01, 1, "unified", "cpu")  # a 2^20 x 2^20 layer: terabytes
    cls = suite["bench_linear_backward"].LinearBackward
    results = common.measure_grid(cls.workload, cls.measurement, [[v] for v in params])
    with pytest.raises(NotImplementedError, match="out of memory"):
        cls().setup(results, *params)
    with pytest.raises(NotImplementedError, match="out of memory"):
        suite["bench_peak_memory"].PeakMemory().setup(*params)


@pytest.mark.slow
def test_cuda_is_not_touched_at_import():
    code = (
        "import importlib.util, sys, torch\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "import benchmarks.bench_forward, benchmarks.bench_linear_backward, "
        "benchmarks.bench_overall_backward, benchmarks.bench_train_step, "
        "benchmarks.bench_peak_memory\n"
        "print(torch.cuda.is_initialized())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


@pytest.mark.slow
def test_linear_backward_end_to_end_on_a_tiny_cpu_grid(monkeypatch):
    suite = _load_suite()
    common = suite["common"]
    monkeypatch.setattr(common, "BUDGET_S", 0.01)
    monkeypatch.setattr(common, "ROUNDS", 2)
    cls = suite["bench_linear_backward"].LinearBackward
    grid = [[32], [0.125, 1.0], [4], ["unified", "per_example"], ["cpu"]]
    monkeypatch.setattr(cls, "params", grid)
    children = []
    run = subprocess.run
    monkeypatch.setattr(subprocess, "run", lambda *a, **kw: children.append(a) or run(*a, **kw))
    results = common.measure_grid(cls.workload, cls.measurement, grid)
    assert len(children) == 2, "each round measures in its own fresh process"
    assert sorted(results) == sorted(itertools.product(*grid))
    for params, entry in results.items():
        bench = cls()
        bench.setup(results, *params)
        dense = bench.track_dense(results, *params)
        meprop = bench.track_meprop(results, *params)
        assert dense > 0 and meprop > 0
        # the relative time is the median of the per-round ratios (each measured interleaved),
        # not the quotient of the per-side medians, which come from different rounds
        relative = bench.track_relative_time(results, *params)
        assert relative > 0 and relative == entry["relative_time"]
        assert entry["speedup"] == pytest.approx(1 / relative, rel=1e-2)  # both rounded to 3 digits
        assert entry["rounds"] == 2
        assert not hasattr(bench, "track_speedup"), "asv reads every value as lower-is-better"
        assert entry["ideal"] == pytest.approx(1 / params[1])  # n / k with k = ratio * n
    # a combination not in the cache is n/a, not a KeyError
    with pytest.raises(NotImplementedError, match="not measured"):
        cls().setup(results, 64, 0.125, 4, "unified", "cpu")


def test_peak_memory_reports_bytes_on_cpu():
    cls = _load_suite()["bench_peak_memory"].PeakMemory
    bench = cls()
    params = (64, 0.0625, 8, "unified", "cpu")
    bench.setup(*params)
    assert bench.case.k == 4 and bench.case.workload == "mlp"
    for value in (bench.track_dense_bytes(*params), bench.track_meprop_bytes(*params)):
        assert isinstance(value, int) and value >= 0


def test_rounds_combine_to_medians_rounded_to_three_digits():
    from meprop.lab.engine.rounds import combine

    rounds = [{"dense": 0.0102769, "meprop": 0.00105, "relative_time": 0.1021, "dense_rel_iqr": 0.02,
               "meprop_rel_iqr": 0.03, "ideal": 100.0},
              {"dense": 0.0204, "meprop": 0.0011, "relative_time": 0.0539, "dense_rel_iqr": 0.5,
               "meprop_rel_iqr": 0.03, "ideal": 100.0},  # a burst of load on dense
              {"dense": 0.0101, "meprop": 0.00104, "relative_time": 0.103, "dense_rel_iqr": 0.02,
               "meprop_rel_iqr": 0.02, "ideal": 100.0}]
    entry = combine(rounds)
    assert entry["dense"] == 0.0103 and entry["meprop"] == 0.00105 and entry["relative_time"] == 0.102
    assert entry["speedup"] == 9.8 and entry["rounds"] == 3 and entry["ideal"] == 100.0
    assert combine([rounds[0], {"skipped": "cuda not available"}]) == {"skipped": "cuda not available"}


def test_quiet_defaults_and_their_overrides():
    from meprop.lab.plan import asv_grid

    assert asv_grid.read_threads({}) == 1 and asv_grid.read_threads({"MEPROP_ASV_THREADS": "all"}) is None
    assert asv_grid.read_rounds({}) == 5 and asv_grid.read_rounds({"MEPROP_ASV_ROUNDS": "3"}) == 3
    assert asv_grid.read_budget({}) == 0.3 and asv_grid.read_clock({}) == "cpu"
    assert asv_grid.read_settings({}) == asv_grid.Settings(threads=1, budget_s=0.3, clock="cpu", rounds=5)
    with pytest.raises(ValueError, match="MEPROP_ASV_THREADS must be a positive int or 'all', got 'many'"):
        asv_grid.read_threads({"MEPROP_ASV_THREADS": "many"})
    with pytest.raises(ValueError, match="MEPROP_ASV_ROUNDS must be a positive int, got '0'"):
        asv_grid.read_rounds({"MEPROP_ASV_ROUNDS": "0"})


def test_grid_env_overrides_and_bad_values():
    common = _load_suite()["common"]
    assert common.read_grid({}) == common.GRIDS["quick"]
    assert common.read_grid({"MEPROP_ASV_GRID": "wide"}) == common.GRIDS["wide"]
    grid = common.read_grid({"MEPROP_ASV_HIDDEN": "500, 8192", "MEPROP_ASV_MODE": "per_example",
                             "MEPROP_ASV_K_RATIO": "0.005,1"})
    assert grid["hidden"] == [500, 8192]
    assert grid["mode"] == ["per_example"]
    assert grid["k_ratio"] == [0.005, 1.0]
    assert grid["batch"] == common.GRIDS["quick"]["batch"]
    bad = [
        ({"MEPROP_ASV_GRID": "huge"}, r"MEPROP_ASV_GRID must be one of \['quick', 'wide'\], got 'huge'"),
        ({"MEPROP_ASV_HIDDEN": "0"}, r"MEPROP_ASV_HIDDEN: bad value '0'"),
        ({"MEPROP_ASV_BATCH": "sixty"}, r"MEPROP_ASV_BATCH: bad value 'sixty'"),
        ({"MEPROP_ASV_K_RATIO": "1.5"}, r"MEPROP_ASV_K_RATIO: bad value '1.5'"),
        ({"MEPROP_ASV_MODE": "topk"}, r"MEPROP_ASV_MODE: bad value 'topk'"),
        ({"MEPROP_ASV_DEVICE": "tpu"}, r"MEPROP_ASV_DEVICE: bad value 'tpu'"),
        ({"MEPROP_ASV_BATCH": " , "}, r"MEPROP_ASV_BATCH must list at least one value"),
    ]
    for environ, message in bad:
        with pytest.raises(ValueError, match=message):
            common.read_grid(environ)


def test_asv_conf_keeps_torch_pinned_and_outputs_ignored():
    text = (ROOT / "asv.conf.json").read_text()
    conf = json.loads(re.sub(r"^\s*//.*$", "", text, flags=re.MULTILINE))
    pin = (ROOT / "constraints.txt").read_text()
    assert f"torch=={conf['matrix']['req']['torch'][0]}" in pin
    assert conf["launch_method"] == "spawn"
    assert conf["branches"] == ["main"]
    assert all("--no-deps" in cmd for cmd in conf["build_command"] + conf["install_command"])
    for key in ("env_dir", "results_dir", "html_dir"):
        proc = subprocess.run(["git", "check-ignore", "-q", conf[key]], cwd=ROOT)
        assert proc.returncode == 0, f"{key}={conf[key]} is not git-ignored"


# ----------------------------------------------------------------- offline publishing


def _asv_index_html() -> str:
    return (Path(asv.__file__).parent / "www" / "index.html").read_text(encoding="utf-8")


def test_offline_rewrite_leaves_no_remote_reference_in_asvs_page():
    offline = _load_offline()
    html = offline.rewrite_html(_asv_index_html())
    remote = re.findall(r'<(?:script|link)\b[^>]*\b(?:src|href)="(?:[a-z]+:)?//', html, re.I)
    assert remote == []
    assert "integrity=" not in html
    for local in set(offline._REMOTE_TO_LOCAL.values()):
        assert f'"vendor/{local}"' in html
    # the data shim comes after jQuery and before asv.js runs (end of <head>)
    assert html.index("vendor/jquery.min.js") < html.index("asv_offline_data.js") < html.index("</head>")


def test_offline_rewrite_refuses_an_unknown_remote_script():
    offline = _load_offline()
    page = '<head><script src="//cdn/lib/new-plot-lib.js"></script></head>'
    with pytest.raises(ValueError, match="new-plot-lib.js"):
        offline.rewrite_html(page)


def test_make_offline_copies_vendors_and_embeds_the_data(tmp_path):
    offline = _load_offline()
    html = tmp_path / "html"
    (html / "graphs" / "summary").mkdir(parents=True)
    (html / "index.html").write_text(_asv_index_html(), encoding="utf-8")
    (html / "swallow.ico").write_bytes(b"\0")
    (html / "info.json").write_text('{"timestamp": 1}')
    (html / "graphs" / "summary" / "bench_forward.Forward.track_dense.json").write_text("[[1, 2.0]]")
    cache = tmp_path / "vendor"  # pre-filled, so no npm call is made
    for files in offline.VENDOR.values():
        for local in files.values():
            (cache / local).parent.mkdir(parents=True, exist_ok=True)
            (cache / local).write_text(f"/* {local} */")
    out = tmp_path / "reports" / "asv"
    out.mkdir(parents=True)
    (out / "stale.txt").write_text("from an older publish")

    index = offline.make_offline(html, out, cache)

    assert index == out / "index.html"
    assert not (out / "stale.txt").exists()
    assert (out / "vendor" / "bootstrap" / "css" / "bootstrap.min.css").is_file()
    shim = (out / "asv_offline_data.js").read_text()
    payload = json.loads(re.search(r"var files = (\{.*\});", shim).group(1))
    assert payload == {"info.json": '{"timestamp": 1}', "swallow.ico": "",
                       "graphs/summary/bench_forward.Forward.track_dense.json": "[[1, 2.0]]"}
    assert [p.name for p in tmp_path.joinpath("reports").iterdir()] == ["asv"]  # no staging left


def test_make_offline_without_published_html_is_a_clear_error(tmp_path):
    offline = _load_offline()
    with pytest.raises(SystemExit, match="run `asv publish` first"):
        offline.make_offline(tmp_path / "missing", tmp_path / "out", tmp_path / "cache")
