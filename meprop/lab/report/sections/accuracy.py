"""The report's accuracy section: our training runs next to the paper's Tables 1-4 (Section 4).

:func:`build_accuracy_section` turns ``train`` records (docs/results_schema.md; one row
per epoch, as flattened by ``pandas.json_normalize`` or with nested ``config`` /
``time_s`` dicts) into an HTML fragment with:

- the accuracy table (paper protocol: test score at the best-dev epoch) next to the
  paper's number for the same setting, where the paper has one;
- the time table (forward / backward / update seconds summed over epochs, the paper's
  Table 2 view) next to the paper's Table 2;
- figures: accuracy vs k (top-k and random-k lines, dense as a horizontal line), dev
  score per epoch, and time per epoch split into forward / backward / update.

Figures go to ``out_dir/figures`` (PNG and SVG), tables to ``out_dir/tables`` (CSV and
Markdown), through the report's own writers (:func:`meprop.lab.report.tables.write_table`,
:func:`meprop.lab.report.figures.save_figure`); the paper's numbers come from
:mod:`meprop.lab.report.reference`. When a run appears more than once (re-run with ``--resume``), its latest
``run_id`` is used. matplotlib is imported inside the functions that draw.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from meprop.lab.report.figures import FigureFile, save_figure
from meprop.lab.report.html import figure_html, table_html
from meprop.lab.report.reference import PAPER_ACCURACY, PAPER_TIMES
from meprop.lab.report.sections import Section
from meprop.lab.report.tables import write_table

__all__ = ["runs_frame", "summary_table", "section", "build_accuracy_section"]


def _column(frame: pd.DataFrame, flat: str, nested: str, key: str, default=None) -> pd.Series:
    if flat in frame:
        return frame[flat]
    if nested in frame:
        return frame[nested].map(lambda d: d.get(key, default) if isinstance(d, dict) else default)
    return pd.Series(default, index=frame.index, dtype=object)


def runs_frame(train_records: pd.DataFrame) -> pd.DataFrame:
    """One row per epoch with plain columns: preset, label, seed, task, k, mode, optimizer,
    optimizer_mode, hidden, epoch, dev_score, test_score, train_loss, forward_s, backward_s, update_s;
    only the latest ``run_id`` of each (preset, label, config) is kept."""
    if not isinstance(train_records, pd.DataFrame):
        raise TypeError(f"train_records must be a pandas.DataFrame, got {type(train_records).__name__}")
    missing = [c for c in ("epoch", "dev_score", "test_score") if c not in train_records]
    if missing:
        raise ValueError(f"train_records lacks the column(s) {missing} of a 'train' record "
                         f"(docs/results_schema.md); got columns {list(train_records.columns)}")
    f = train_records
    out = pd.DataFrame({
        "run_id": _column(f, "run_id", "run_id", ""),
        "preset": _column(f, "preset", "preset", "custom").fillna("custom"),
        "task": _column(f, "task", "task", ""),
        "k": _column(f, "config.k", "config", "k"),
        "mode": _column(f, "config.mode", "config", "mode"),
        "optimizer": _column(f, "config.optimizer", "config", "optimizer"),
        # lazy (meprop.optim's row update) or exact (torch.optim's); records before the
        # option ran the exact optimizer
        "optimizer_mode": _column(f, "config.optimizer_mode", "config", "optimizer_mode").fillna("exact"),
        "hidden": _column(f, "config.hidden", "config", "hidden"),
        "epochs": _column(f, "config.epochs", "config", "epochs"),
        "seed": _column(f, "config.seed", "config", "seed"),
        "epoch": f["epoch"].astype(int),
        "train_loss": _column(f, "train_loss", "train_loss", None),
        "dev_score": f["dev_score"].astype(float),
        "test_score": f["test_score"].astype(float),
        "forward_s": _column(f, "time_s.forward", "time_s", "forward"),
        "backward_s": _column(f, "time_s.backward", "time_s", "backward"),
        "update_s": _column(f, "time_s.update", "time_s", "update"),
    })
    run_key = _column(f, "run_key", "run_key", None)
    label = _column(f, "label", "label", None)
    out["label"] = [lab if isinstance(lab, str) and lab else
                    ("dense" if pd.isna(k) else f"meProp k={int(k)}") for lab, k in zip(label, out["k"])]
    out["run_key"] = [rk if isinstance(rk, str) else f"{p}/{lab}" for rk, p, lab in zip(run_key, out["preset"], out["label"])]
    latest = out.groupby("run_key")["run_id"].transform("max")
    out = out[out["run_id"] == latest]
    return out.sort_values(["preset", "label", "epoch"]).reset_index(drop=True)


def _paper_key(preset: str, label: str) -> tuple[str, str]:
    return (preset.removesuffix("-quick"), label)


def summary_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per run (preset, label and seed): epochs run, best-dev epoch, dev and test there; the paper's number beside it."""
    rows = []
    for (preset, label, seed), group in runs.groupby(["preset", "label", "seed"], sort=True, dropna=False):
        best = group.sort_values(["dev_score", "epoch"], ascending=[False, True]).iloc[0]
        paper = PAPER_ACCURACY.get(_paper_key(preset, label))
        quick = preset.endswith("-quick")
        rows.append({
            "preset": preset, "run": label, "seed": None if pd.isna(seed) else int(seed),
            "task": best["task"], "optimizer": best["optimizer"],
            "optimizer mode": best["optimizer_mode"],
            "hidden": best["hidden"], "k": "dense" if pd.isna(best["k"]) else int(best["k"]),
            "epochs run": int(group["epoch"].max()), "best epoch": int(best["epoch"]),
            "dev at best": round(float(best["dev_score"]), 2), "test at best": round(float(best["test_score"]), 2),
            "paper iterations": None if paper is None or paper[0] is None else paper[0],
            "paper test": None if paper is None else paper[1],
            "paper source": "" if paper is None else paper[2] + (" (full run; ours is a quick subset)" if quick else ""),
        })
    return pd.DataFrame(rows)


def _time_table(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (preset, label, seed), group in runs.groupby(["preset", "label", "seed"], sort=True, dropna=False):
        fwd, bwd, upd = (float(group[c].fillna(0).sum()) for c in ("forward_s", "backward_s", "update_s"))
        paper = PAPER_TIMES.get(_paper_key(preset, label))
        rows.append({
            "preset": preset, "run": label, "seed": None if pd.isna(seed) else int(seed),
            "epochs": int(group["epoch"].max()),
            "forward s": round(fwd, 1), "backward s": round(bwd, 1), "update s": round(upd, 1),
            "total s": round(fwd + bwd + upd, 1),
            "paper forward s": None if paper is None else paper[0],
            "paper backward s": None if paper is None else paper[1],
            "paper total s": None if paper is None else paper[2],
        })
    return pd.DataFrame(rows)


def _figure(fig, out_dir: Path, name: str, title: str, caption: str, files: list[Path]) -> str:
    saved: FigureFile = save_figure(fig, out_dir, name, title, caption)
    files += [saved.png, saved.svg]
    return figure_html(saved.png, saved.svg, title, caption, out_dir)


def _accuracy_vs_k(runs: pd.DataFrame, out_dir: Path, files: list[Path]) -> list[str]:
    from matplotlib.figure import Figure

    parts = []
    for preset in sorted(p for p in runs["preset"].unique() if "sweep" in p):
        group = runs[runs["preset"] == preset]
        best = summary_table(group)
        fig = Figure(figsize=(6, 4), layout="constrained")
        ax = fig.add_subplot()
        for mode, name in (("per_example", "top-k (meProp)"), ("random", "random-k"), ("unified", "unified top-k")):
            rows = best[(best["k"] != "dense") & best["run"].isin(group.loc[group["mode"] == mode, "label"])]
            if not rows.empty:
                rows = rows.assign(k=rows["k"].astype(int)).sort_values("k")
                ax.plot(rows["k"], rows["test at best"], marker="o", label=name)
        dense = best[best["k"] == "dense"]
        if not dense.empty:
            ax.axhline(float(dense["test at best"].iloc[0]), color="black", linestyle="--", label="dense")
        ax.set_xscale("log")
        ax.set_xlabel("k (of hidden size)")
        ax.set_ylabel("test accuracy at best dev epoch (%)")
        ax.set_title(f"Accuracy vs k ({preset})")
        ax.legend()
        parts.append(_figure(fig, out_dir, f"accuracy_vs_k_{preset}", f"Accuracy vs k ({preset})",
                             "Test score at the best-dev epoch; top-k is meProp, random-k the paper's ablation.",
                             files))
    return parts


def _dev_curves(runs: pd.DataFrame, out_dir: Path, files: list[Path]) -> list[str]:
    from matplotlib.figure import Figure

    parts = []
    for preset, group in runs.groupby("preset", sort=True):
        fig = Figure(figsize=(6, 4), layout="constrained")
        ax = fig.add_subplot()
        several = group.groupby("label")["seed"].nunique() > 1  # label -> runs with several seeds
        for (label, seed), run in group.groupby(["label", "seed"], sort=True, dropna=False):
            name = f"{label} (seed {seed})" if several.get(label, False) else label
            ax.plot(run["epoch"], run["dev_score"], marker=".", label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("dev score (%)")
        ax.set_title(f"Dev score per epoch ({preset})")
        ax.legend(fontsize="small")
        parts.append(_figure(fig, out_dir, f"dev_curves_{preset}", f"Dev score per epoch ({preset})",
                             "Accuracy on the dev split after each epoch (MNIST: images, POS: words).", files))
    return parts


def _time_per_epoch(runs: pd.DataFrame, out_dir: Path, files: list[Path]) -> list[str]:
    from matplotlib.figure import Figure

    means = runs.groupby(["preset", "label"], sort=True)[["forward_s", "backward_s", "update_s"]].mean()
    means = means.dropna(how="all")
    if means.empty:
        return []
    fig = Figure(figsize=(7, 0.45 * len(means) + 1.5), layout="constrained")
    ax = fig.add_subplot()
    names = [f"{p} / {l}" for p, l in means.index]
    left = pd.Series(0.0, index=means.index)
    for column, name in (("forward_s", "forward"), ("backward_s", "backward"), ("update_s", "update")):
        values = means[column].fillna(0.0)
        ax.barh(names, values, left=left, label=name)
        left = left + values
    ax.invert_yaxis()
    ax.set_xlabel("seconds per epoch (mean)")
    ax.set_title("Time per epoch: forward / backward / optimizer update")
    ax.legend()
    return [_figure(fig, out_dir, "time_per_epoch", "Time per epoch",
                    "Forward (model and loss), backward (loss.backward(), the paper's overall backprop) "
                    "and update (optimizer step); device-synchronised stopwatch, mean over epochs.", files)]


def section(train_records: pd.DataFrame, out_dir: Path) -> Section:
    """The accuracy section: tables and figures written under ``out_dir``, and their HTML."""
    out_dir = Path(out_dir)
    runs = runs_frame(train_records)
    if runs.empty:
        return Section("accuracy", "Accuracy", '<p class="note">No training epochs in the inputs '
                       "(<code>meprop train</code> writes them).</p>")
    summary = summary_table(runs)
    times = _time_table(runs)
    files: list[Path] = []
    for table, name in ((summary, "accuracy"), (times, "train_time"), (runs, "train_epochs")):
        files += write_table(table, out_dir, name).values()
    parts = [
        "<p>Protocol (the paper's): the test score reported is the one at the epoch with the best "
        "dev score. Presets ending in <code>-quick</code> train on a subset for few epochs, so their "
        "scores are not comparable with the paper's full runs. The paper's CPU timings come from its "
        "own single-threaded C# implementation; ours are PyTorch with one thread.</p>",
        "<h3>Accuracy (our Table 1/3/4 next to the paper's)</h3>",
        table_html(summary, speedup_column=None),
        "<h3>Training time (Table 2 view: seconds summed over the epochs run)</h3>",
        table_html(times, speedup_column=None),
    ]
    parts += _accuracy_vs_k(runs, out_dir, files)
    parts += _dev_curves(runs, out_dir, files)
    parts += _time_per_epoch(runs, out_dir, files)
    return Section("accuracy", "Accuracy", "\n".join(parts), files)


def build_accuracy_section(train_records: pd.DataFrame, out_dir: Path) -> str:
    """The accuracy section's HTML fragment; writes figures and tables under ``out_dir``."""
    return section(train_records, out_dir).html
