"""Figure builders: the plotted points are the measured numbers; files written as PNG and SVG."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import report_fixtures as fx

from meprop.lab.report import figures as F
from meprop.lab.report.frames import bench_frame


@pytest.fixture
def frame(quick_records):
    return bench_frame(quick_records)


def _data_lines(ax):
    """The curves (error-bar caps are unlabelled lines: left out)."""
    return [line for line in ax.lines if len(line.get_xdata())
            and not line.get_label().startswith(("ideal", "dense", "_"))]


def _markers(ax):
    """The ringed points (error bars are line collections: left out)."""
    from matplotlib.collections import PathCollection

    return [c for c in ax.collections if isinstance(c, PathCollection)]


def test_speedup_vs_k_ratio_plots_the_measured_speedups(frame, tmp_path):
    files = F.speedup_vs_k_ratio(frame, tmp_path)
    assert [f.name for f in files] == ["speedup_vs_k_linear_backward_linear_box-a_cpu_per_example",
                                       "speedup_vs_k_linear_backward_linear_box-a_cpu_unified"]
    for f in files:
        assert f.png.stat().st_size > 5000 and f.png.read_bytes()[:4] == b"\x89PNG"
        assert f.svg.read_text().lstrip().startswith(("<?xml", "<svg"))
    unified = files[1].figure
    ax = unified.axes[0]
    assert ax.get_title() == "hidden n = 1024" and ax.get_xscale() == "log" and ax.get_yscale() == "log"
    curves = sorted(tuple(np.round(line.get_ydata(), 6)) for line in _data_lines(ax))
    expected = sorted(tuple(fx.SPEEDUPS[("unified", 1024, b)].values()) for b in (64, 1024))
    assert curves == expected
    ideal = next(line for line in ax.lines if line.get_label() == "ideal n/k")
    assert np.allclose(ideal.get_ydata(), 1 / np.asarray(ideal.get_xdata()))
    breakeven = next(line for line in ax.lines if line.get_label() == "dense (1x)")
    assert list(breakeven.get_ydata()) == [1.0, 1.0]
    rings = np.vstack([c.get_offsets() for c in _markers(ax)])  # the one noisy cell, ringed
    assert rings.tolist() == [[41 / 1024, 8.0]]
    assert "k / n" in ax.get_xlabel() and "speedup" in ax.get_ylabel()


def test_speedup_vs_hidden_groups_rounded_ratios(frame, tmp_path):
    files = F.speedup_vs_hidden(frame, tmp_path)
    ax = files[1].figure.axes[0]  # unified, batch 64
    assert ax.get_title() == "batch = 64"
    lines = _data_lines(ax)
    assert len(lines) == 4  # 0.01, 0.04, 0.1, 0.5: k/n 10/1024 and 41/4096 are one ratio
    one_percent = sorted(tuple(line.get_ydata()) for line in lines)[-1]
    assert one_percent == (20.0, 30.0)  # n=1024 then n=4096 at k/n = 1%
    legend = files[1].figure.legends[0]
    assert [t.get_text() for t in legend.get_texts()][:4] == ["0.01", "0.04", "0.1", "0.5"]


def test_time_breakdown_shares_of_dense_total(frame, tmp_path):
    files = F.time_breakdown(frame, tmp_path)
    assert len(files) == 2
    ax = files[0].figure.axes[0]
    heights = [p.get_height() for p in ax.patches]
    # per (n, batch): dense forward 0.5, dense backprop 1, meProp forward 0.51, meProp backprop 1/speedup
    # of a dense total of 1.5 (x dense linear_backward time), at the smallest k
    n_cases = 4
    dense_fwd = heights[:n_cases]
    assert np.allclose(dense_fwd, 100 / 3)
    dense_bwd = heights[n_cases:2 * n_cases]
    assert np.allclose(dense_bwd, 200 / 3)
    meprop_bwd = heights[3 * n_cases:]
    first = fx.SPEEDUPS[("per_example", 1024, 64)][0.01]
    assert meprop_bwd[0] == pytest.approx(100 / 1.5 / first)


def test_side_by_side_views_only_when_there_is_something_to_compare(frame, tmp_path):
    frame = frame[(frame["hidden"] == 1024) & (frame["batch"] == 64)]  # one panel keeps it quick
    assert len(F.modes_side_by_side(frame, tmp_path)) == 1
    assert F.devices_side_by_side(frame, tmp_path) == []
    gpu = frame.assign(device="cuda", machine="gpu-box")
    both = F.devices_side_by_side(pd.concat([frame, gpu]), tmp_path)
    assert len(both) == 2  # one per mode
    labels = {t.get_text() for t in both[0].figure.legends[0].get_texts()}
    assert {"box-a cpu", "gpu-box cuda"} <= labels
    single = frame[frame["mode"] == "unified"]
    assert F.modes_side_by_side(single, tmp_path) == []


def test_figures_draw_each_cells_interval_and_name_their_workload(frame, tmp_path):
    from matplotlib.collections import LineCollection

    unified = F.speedup_vs_k_ratio(frame, tmp_path)[1].figure
    bars = [c for c in unified.axes[0].collections if isinstance(c, LineCollection)]
    segments = np.vstack([np.asarray(s) for c in bars for s in c.get_segments()]).reshape(-1, 2, 2)
    assert len(segments) == 8  # one error bar per cell of the panel: 2 batches x 4 ratios
    assert (segments[:, 0, 1] < segments[:, 1, 1]).all()  # from the low to the high bound
    lstm = frame.assign(workload="lstm").copy()
    names = [f.title for f in F.speedup_vs_k_ratio(lstm, tmp_path)]
    assert names and all("LSTM tagger" in name and "single layer" not in name for name in names)
