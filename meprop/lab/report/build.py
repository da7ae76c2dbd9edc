"""Build the report folder: results in, ``index.html`` + figures + tables out.

Orchestration only: :mod:`~meprop.lab.report.ingest` reads the inputs,
:mod:`~meprop.lab.report.frames` turns the records into frames, :mod:`~meprop.lab.report.diagnose`
lists what is missing, and the section modules (:mod:`meprop.lab.report.sections`) write
their tables and figures and return their HTML, which :mod:`~meprop.lab.report.html`
assembles; :data:`SECTIONS` lists them in page order, one entry per section. Order of the
page: what it shows and how to run the fuller profile (:mod:`~meprop.lab.report.scope`), problems with the inputs (if any), environment
per run and how the numbers were measured, headline (representative speedups, break-even k/n),
performance targets vs achieved, speedup tables per measurement, figures, the paper
side by side, peak memory, accuracy, and the list of files written. Every table is also
written as CSV and Markdown under ``tables/``, every figure as PNG and SVG under
``figures/``. The page stays small for large inputs: long tables are shown in part and
linked in full, and figures are embedded up to :data:`EMBED_BUDGET` bytes, then linked.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from meprop.lab.report.diagnose import input_problems, latest_per_case, problems_section
from meprop.lab.report.frames import bench_frame, env_frame, train_frame
from meprop.lab.report.html import render_page
from meprop.lab.report.ingest import LoadedResults, load_results
from meprop.lab.report.scope import scope_html
from meprop.lab.report.sections import Section, bench, ddp, optimizers, paper
from meprop.lab.report.sections import targets as targets_section
from meprop.lab.results.store import ResultsError

__all__ = ["Report", "ReportInputs", "SECTIONS", "build_report", "DEFAULT_TITLE", "EMBED_BUDGET"]

DEFAULT_TITLE = "meProp benchmark report"
#: Bytes of PNG embedded in the page (base64 adds a third); later figures are linked.
EMBED_BUDGET = 4 * 2**20


@dataclass
class Report:
    """What :func:`build_report` wrote and found."""

    index: Path
    problems: list[str] = field(default_factory=list)
    headline: pd.DataFrame = field(default_factory=pd.DataFrame)
    targets: pd.DataFrame = field(default_factory=pd.DataFrame)
    files: list[Path] = field(default_factory=list)


def _meta(loaded: LoadedResults) -> str:
    envs = [r.get("env") or {} for r in loaded.of_type("env")]
    commits = sorted({str(e.get("git_commit"))[:12] for e in envs if e.get("git_commit")})
    stamps = sorted(str(e.get("timestamp")) for e in envs if e.get("timestamp"))
    machines = sorted({str(e.get("machine")) for e in envs if e.get("machine")})
    parts = [f"built {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"]
    if stamps:
        parts.append("measured " + (stamps[0] if len(stamps) == 1 else f"{stamps[0]} … {stamps[-1]}"))
    dated = sorted(str(e.get("commit_date")) for e in envs if e.get("commit_date"))
    if dated:  # asv results are dated by their commit, not by when they were measured
        parts.append("commit dates " + (dated[0] if len(dated) == 1 else f"{dated[0]} … {dated[-1]}"))
    if commits:
        parts.append("git commit " + ", ".join(commits))
    if machines:
        parts.append("machine" + ("s " if len(machines) > 1 else " ") + ", ".join(machines))
    profiles = sorted({str(e.get("profile")) for e in envs if e.get("profile")})
    if profiles:
        parts.append("profile " + ", ".join(profiles))
    return html.escape(" · ".join(parts))


def _accuracy(train: pd.DataFrame, out_dir: Path, problems: list[str]) -> Section:
    if train.empty:
        return Section("accuracy", "Accuracy", '<p class="note">No training results in the inputs '
                       "(<code>meprop train</code> writes them).</p>")
    from meprop.lab.report.sections import accuracy

    try:
        return accuracy.section(train, out_dir)
    except Exception as error:  # one failing section must not take the whole report down
        problems.append(f"accuracy section failed: {type(error).__name__}: {error}")
        return Section("accuracy", "Accuracy", '<p class="note">The accuracy section could not be built: '
                       f"{html.escape(str(error))}</p>")


def _pays_off(loaded: LoadedResults, out_dir: Path, problems: list[str]) -> Section:
    """The "Does it pay off?" section (time to accuracy); one failing section must not take the report down."""
    from meprop.lab.report.sections import convergence

    try:
        return convergence.section(loaded.of_type("convergence"), out_dir, EMBED_BUDGET)
    except Exception as error:
        problems.append(f"time-to-accuracy section failed: {type(error).__name__}: {error}")
        return Section("pays-off", "Does it pay off?", '<p class="note">The time-to-accuracy section could '
                       f"not be built: {html.escape(str(error))}</p>")


def _files_section(loaded: LoadedResults, out_dir: Path, files: list[Path]) -> Section:
    names = sorted({p.relative_to(out_dir).as_posix() for p in files})
    asv_page = out_dir.parent / "asv" / "index.html"  # scripts/asv_publish.sh writes reports/asv
    asv_link = ('<p>The asv dashboard published beside this report: <a href="../asv/index.html">'
                "../asv/index.html</a>.</p>" if asv_page.exists() else "")
    return Section("files", "Files",
                   "<p>Inputs: " + html.escape("; ".join(loaded.sources)) + ".</p>" + asv_link + "<ul>"
                   + "".join(f'<li><a href="{html.escape(f)}">{html.escape(f)}</a></li>' for f in names)
                   + "</ul>")


@dataclass
class ReportInputs:
    """What every section builder gets: the loaded inputs, the bench frame (latest outcome per
    case), the output folder, the problems list (a builder may append to it), the other
    sources' timing notes, and ``results``: named by-products for :class:`Report`."""

    loaded: LoadedResults
    frame: pd.DataFrame
    out_dir: Path
    problems: list[str]
    timings: list[str]
    results: dict = field(default_factory=dict)
    targets: tuple = ()  # the performance targets to judge the rows by (a targets file's)


def _headline(inputs: ReportInputs) -> Section:
    section, inputs.results["headline"] = bench.headline(inputs.frame, inputs.out_dir)
    return section


def _targets(inputs: ReportInputs) -> Section:
    section, inputs.results["targets"] = targets_section.section(inputs.frame, inputs.out_dir, inputs.targets)
    return section


#: The page's sections, in order: ``(anchor, builder)``, each builder taking the
#: :class:`ReportInputs` and returning a :class:`~meprop.lab.report.sections.Section`. A new
#: section is one entry here (``SECTIONS.insert(i, ("anchor", builder))`` places it); the
#: problems list (first, when there are problems) and the files list (last) are added around them.
SECTIONS: list[tuple[str, Callable[[ReportInputs], Section]]] = [
    ("pays-off", lambda i: _pays_off(i.loaded, i.out_dir, i.problems)),
    ("environment", lambda i: bench.environment(env_frame(i.loaded.records), i.timings, i.frame, i.out_dir)),
    ("headline", _headline),
    ("targets", _targets),
    ("tables", lambda i: bench.tables(i.frame, i.out_dir)),
    ("optimizers", lambda i: optimizers.section(i.frame, i.out_dir)),
    ("figures", lambda i: bench.figures(i.frame, i.out_dir, EMBED_BUDGET)),
    ("paper", lambda i: paper.section(i.frame, i.out_dir)),
    ("ddp", lambda i: ddp.section(i.loaded.records, i.out_dir)),
    ("memory", lambda i: bench.memory(i.frame, i.out_dir)),
    ("accuracy", lambda i: _accuracy(train_frame(i.loaded.records), i.out_dir, i.problems)),
]


def build_report(paths: Iterable[str | Path] | LoadedResults, out_dir: str | Path, *,
                 title: str | None = None, targets: tuple | None = None) -> Report:
    """Load ``paths`` and write the report into ``out_dir``; returns what was written.

    ``targets``: the performance targets (:func:`meprop.lab.plan.target_file.load_targets`)
    to judge the rows by; None: the project's file if it is in the current directory.
    """
    if targets is None:
        from meprop.lab.plan.target_file import DEFAULT_TARGETS_FILE, load_targets

        targets = load_targets(DEFAULT_TARGETS_FILE) if DEFAULT_TARGETS_FILE.is_file() else ()
    loaded = paths if isinstance(paths, LoadedResults) else load_results(paths)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ResultsError(f"cannot create the output folder {str(out_dir)!r}: {error}") from None
    frame, repeated = latest_per_case(bench_frame(loaded.records), loaded)
    problems, severe = input_problems(loaded, frame)
    if repeated:
        problems.append(f"{repeated} case(s) were measured more than once on the same machine: "
                        "the latest outcome of each is shown")
    timings = sorted({str(e["timing"]) for e in (r.get("env") or {} for r in loaded.of_type("env"))
                      if e.get("timing")})
    inputs = ReportInputs(loaded, frame, out_dir, problems, timings, targets=targets)
    sections = [build(inputs) for _, build in SECTIONS]
    if problems:
        sections.insert(0, problems_section(problems, severe))
    written = [f for s in sections for f in s.files]
    sections.append(_files_section(loaded, out_dir, written))
    page = render_page(title or DEFAULT_TITLE, _meta(loaded), [(s.anchor, s.heading, s.html) for s in sections],
                       intro=scope_html(loaded.records, len(frame)))
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return Report(index=index, problems=problems, headline=inputs.results.get("headline", pd.DataFrame()),
                  targets=inputs.results.get("targets", pd.DataFrame()), files=[index, *written])
