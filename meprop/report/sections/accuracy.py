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
Markdown). When a run appears more than once (re-run with ``--resume``), its latest
``run_id`` is used. matplotlib is imported inside the functions that draw.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

__all__ = ["PAPER_ACCURACY", "PAPER_TIMES", "runs_frame", "summary_table", "build_accuracy_section"]

#: (preset, run label) -> (paper's iterations, paper's test score, source).
PAPER_ACCURACY = {
    ("mnist-adam", "dense"): (17, 97.82, "Table 1 (Adam)"),
    ("mnist-adam", "meProp k=20"): (15, 98.01, "Table 1 (Adam)"),
    ("mnist-adagrad", "dense"): (8, 97.52, "Table 1 (AdaGrad)"),
    ("mnist-adagrad", "meProp k=10"): (16, 98.00, "Table 1 (AdaGrad)"),
    ("pos-adam", "dense"): (2, 97.07, "Table 1 (Adam)"),
    ("pos-adam", "meProp k=5"): (5, 97.12, "Table 1 (Adam)"),
    ("mnist-table3", "meProp k=20 (h=500)"): (None, 98.01, "Table 3"),
    ("mnist-table3", "dense h=20"): (None, 95.77, "Table 3"),
    ("mnist-dropout", "dense"): (None, 98.09, "Table 4 (dropout 0.2)"),
    ("mnist-dropout", "meProp k=25"): (None, 98.32, "Table 4 (dropout 0.2)"),
    ("mnist-adam-release", "dense"): (17, 97.82, "Table 1 (Adam; paper without dropout)"),
    ("mnist-adam-release", "meProp k=20"): (15, 98.01, "Table 1 (Adam; paper without dropout)"),
    ("mnist-release-unified", "dense"): (None, 97.97, "Table 6 (GPU, unified, batch 50)"),
    ("mnist-release-unified", "meProp unified k=30"): (None, 98.08, "Table 6 (GPU, unified, batch 50)"),
    # not in the paper: the log the authors ship in their PyTorch release (h=512, batch 32, dropout 0.1)
    ("mnist-release", "dense"): (19, 98.00, "authors' PyTorch release log"),
    ("mnist-release", "meProp k=30"): (17, 98.28, "authors' PyTorch release log"),
}
#: (preset, run label) -> the paper's Table 2 seconds (overall forward, overall backward, total).
PAPER_TIMES = {
    ("mnist-adam", "dense"): (69, 171, 240),
    ("mnist-adam", "meProp k=20"): (68, 9, 77),
    ("pos-adam", "dense"): (7334, 16522, 23856),
    ("pos-adam", "meProp k=5"): (7362, 540, 7903),
}


def _column(frame: pd.DataFrame, flat: str, nested: str, key: str, default=None) -> pd.Series:
    if flat in frame:
        return frame[flat]
    if nested in frame:
        return frame[nested].map(lambda d: d.get(key, default) if isinstance(d, dict) else default)
    return pd.Series(default, index=frame.index, dtype=object)


def runs_frame(train_records: pd.DataFrame) -> pd.DataFrame:
    """One row per epoch with plain columns: preset, label, seed, task, k, mode, optimizer,
    hidden, epoch, dev_score, test_score, train_loss, forward_s, backward_s, update_s;
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


def _write_table(table: pd.DataFrame, out_dir: Path, name: str) -> None:
    folder = out_dir / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / f"{name}.csv", index=False)
    (folder / f"{name}.md").write_text(table.to_markdown(index=False) + "\n", encoding="utf-8")


def _save(fig, out_dir: Path, name: str) -> Path:
    folder = out_dir / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    png = folder / f"{name}.png"
    fig.savefig(png, dpi=110)
    fig.savefig(folder / f"{name}.svg")
    return png


def _figure_html(png: Path, out_dir: Path, title: str, caption: str) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    rel_png = png.relative_to(out_dir).as_posix()
    rel_svg = png.with_suffix(".svg").relative_to(out_dir).as_posix()
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(title)}">'
            f"<figcaption><b>{html.escape(title)}.</b> {html.escape(caption)} "
            f'(<a href="{rel_png}">PNG</a> · <a href="{rel_svg}">SVG</a>)</figcaption></figure>')


def _accuracy_vs_k(runs: pd.DataFrame, out_dir: Path) -> list[str]:
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
        png = _save(fig, out_dir, f"accuracy_vs_k_{preset}")
        parts.append(_figure_html(png, out_dir, f"Accuracy vs k ({preset})",
                                  "Test score at the best-dev epoch; top-k is meProp, random-k the paper's ablation."))
    return parts


def _dev_curves(runs: pd.DataFrame, out_dir: Path) -> list[str]:
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
        png = _save(fig, out_dir, f"dev_curves_{preset}")
        parts.append(_figure_html(png, out_dir, f"Dev score per epoch ({preset})",
                                  "Accuracy on the dev split after each epoch (MNIST: images, POS: words)."))
    return parts


def _time_per_epoch(runs: pd.DataFrame, out_dir: Path) -> list[str]:
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
    png = _save(fig, out_dir, "time_per_epoch")
    return [_figure_html(png, out_dir, "Time per epoch",
                         "Forward (model and loss), backward (loss.backward(), the paper's overall backprop) "
                         "and update (optimizer step); device-synchronised stopwatch, mean over epochs.")]


def build_accuracy_section(train_records: pd.DataFrame, out_dir: Path) -> str:
    """The accuracy section's HTML fragment; writes figures and tables under ``out_dir``."""
    out_dir = Path(out_dir)
    runs = runs_frame(train_records)
    if runs.empty:
        return '<p class="note">No training epochs in the inputs (<code>meprop train</code> writes them).</p>'
    summary = summary_table(runs)
    times = _time_table(runs)
    _write_table(summary, out_dir, "accuracy")
    _write_table(times, out_dir, "train_time")
    _write_table(runs, out_dir, "train_epochs")
    parts = [
        "<p>Protocol (the paper's): the test score reported is the one at the epoch with the best "
        "dev score. Presets ending in <code>-quick</code> train on a subset for few epochs, so their "
        "scores are not comparable with the paper's full runs. The paper's CPU timings come from its "
        "own single-threaded C# implementation; ours are PyTorch with one thread.</p>",
        "<h3>Accuracy (our Table 1/3/4 next to the paper's)</h3>",
        summary.to_html(index=False, na_rep="", classes="data", float_format=lambda v: f"{v:g}"),
        "<h3>Training time (Table 2 view: seconds summed over the epochs run)</h3>",
        times.to_html(index=False, na_rep="", classes="data", float_format=lambda v: f"{v:g}"),
    ]
    parts += _accuracy_vs_k(runs, out_dir)
    parts += _dev_curves(runs, out_dir)
    parts += _time_per_epoch(runs, out_dir)
    return "\n".join(parts)
