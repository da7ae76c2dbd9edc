"""The report page: one self-contained ``index.html`` (inline CSS, figures embedded).

Only assembly and formatting live here; the numbers come from
:mod:`meprop.lab.report.tables`, :mod:`meprop.lab.report.targets` and :mod:`meprop.lab.report.paper`,
the pictures from :mod:`meprop.lab.report.figures`. The page loads nothing from the network:
the CSS is inline, figures are embedded as base64 PNGs up to a size budget (beyond it
they are linked from the files beside the page, as the PNG/SVG links always are), and the one inline script only records, after load, how many
figures decoded (``<body data-figures-loaded="3/3">``), which the browser test reads.
Tables are rendered with pandas' ``Styler`` (speedups below 1 and noisy cells marked).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from string import Template
from typing import Iterable

import numpy as np
import pandas as pd

__all__ = ["table_html", "figure_html", "section", "render_page", "CSS"]

CSS = """
:root { --fg:#1d2430; --muted:#5b6575; --line:#d8dde5; --accent:#2c5d9e; --bad:#b42318; --warn:#9a6700; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--fg); margin: 0 auto; padding: 1.2rem 1.6rem 3rem; max-width: 1240px; background:#fff; }
h1 { font-size: 1.7rem; margin: .2rem 0 .3rem; }
h2 { font-size: 1.3rem; margin: 2rem 0 .6rem; padding-bottom: .25rem; border-bottom: 2px solid var(--line); }
h3 { font-size: 1.05rem; margin: 1.3rem 0 .4rem; }
p, li { max-width: 75em; }
.meta { color: var(--muted); margin: 0 0 .8rem; }
.scope { margin: 0 0 .8rem; max-width: 60rem; }
nav { background:#f5f7fa; border:1px solid var(--line); border-radius:6px; padding:.5rem .9rem; }
nav a { margin-right: 1.1rem; color: var(--accent); text-decoration: none; white-space: nowrap; }
.note { color: var(--muted); font-style: italic; }
.problems { border:1px solid #f0c36d; background:#fff8e6; border-radius:6px; padding:.6rem 1rem; }
.problems.severe { border-color:#f3a9a2; background:#fdeceb; }
.problems li { color: var(--warn); }
.scroll { overflow-x: auto; margin: .4rem 0 1rem; }
table { border-collapse: collapse; font-size: 12.5px; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 8px; text-align: right; vertical-align: top; }
th { background:#eef1f5; position: sticky; top: 0; text-align: center; white-space: nowrap; }
td.text, th.text { text-align: left; }
td { white-space: nowrap; }
td.text { white-space: nowrap; }
td.text.long { white-space: normal; }
td.long { min-width: 22em; }
td.undecided { color: var(--muted); font-style: italic; }
td.noisy { white-space: nowrap; }
td.slow { color: var(--bad); font-weight: 600; }
td.noisy { background: #fff3cd; }
td.met-yes { color: #1a7f37; font-weight: 600; }
td.met-NO, td.met-NO-flagged { color: var(--bad); font-weight: 700; }
table.env td { text-align: left; max-width: 28em; overflow-wrap: anywhere; }
figure { margin: 1rem 0 1.6rem; break-inside: avoid; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: .9rem; }
figcaption a { color: var(--accent); }
.headline { display:flex; flex-wrap:wrap; gap:.8rem; margin:.6rem 0 1rem; }
.card { border:1px solid var(--line); border-radius:8px; padding:.6rem .9rem; min-width: 14rem; background:#fbfcfe; }
.card .big { font-size: 1.6rem; font-weight: 700; color: var(--accent); }
.card .small { color: var(--muted); font-size: .85rem; }
.card { max-width: 24rem; }
.card .big.muted { color: var(--muted); font-size: 1.2rem; }
.card .ci { font-size: .9rem; }
details > summary { cursor: pointer; color: var(--accent); }
@media print {
  body { max-width: none; padding: 0; font-size: 11px; }
  nav { display: none; }
  h2 { break-after: avoid; }
  th { position: static; }
  .scroll { overflow: visible; }
  a { color: inherit; text-decoration: none; }
}
"""

_PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>$css</style>
</head>
<body data-figures-loaded="pending">
<header>
<h1>$title</h1>
<p class="meta">$meta</p>
$intro
<nav>$nav</nav>
</header>
$body
<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-figures-loaded", ok + "/" + imgs.length);
});
</script>
</body>
</html>
""")

_FORMATS = {
    "ms": "{:.4g}", "%": "{:.1f}", "speedup": "{:.2f}x", "ideal": "{:.1f}x", "efficiency": "{:.0%}",
    "k/n": "{:.3g}", "MiB": "{:.3g}", "ratio": "{:.2f}",
}


def _formatter(column: str):
    name = column.lower()
    if name.endswith(" ms") or name == "ms":
        fmt = _FORMATS["ms"]
    elif name.endswith("%"):
        fmt = _FORMATS["%"]
    elif "speedup" in name or name == "required" or name == "achieved":
        fmt = _FORMATS["speedup"]
    elif name.startswith("ideal"):
        fmt = _FORMATS["ideal"]
    elif name == "efficiency":
        fmt = _FORMATS["efficiency"]
    elif "k/n" in name:
        fmt = _FORMATS["k/n"]
    elif "mib" in name:
        fmt = _FORMATS["MiB"]
    elif "/" in name:
        fmt = _FORMATS["ratio"]
    else:
        return lambda v: html.escape(_plain(v))

    def format_value(value):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return "—"
        if isinstance(value, (int, float, np.number)):
            return fmt.format(value)
        return html.escape(str(value))

    return format_value


def _plain(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "⚠ noisy" if value else ""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def table_html(table: pd.DataFrame, *, css_class: str = "data", speedup_column: str | None = "speedup",
               slow_below: float = 1.0) -> str:
    """Render ``table`` with pandas' Styler: units formatted, slow/noisy/met cells classed.

    Cells of ``speedup_column`` below ``slow_below`` are marked slow (red); where a ``flag``
    column says the 95% interval contains 1.0 (or is unknown), the speedup is greyed: no win.
    Text columns holding prose get a minimum width, so no column is squeezed below its header.
    """
    if table is None or table.empty:
        return '<p class="note">No rows.</p>'
    table = table.reset_index(drop=True)
    classes = pd.DataFrame("", index=table.index, columns=table.columns)
    for column in table.columns:
        if not pd.api.types.is_numeric_dtype(table[column]) or table[column].dtype == bool:
            classes[column] = "text"
            if table[column].astype(str).str.len().max() > 40:  # prose: wide enough to read
                classes[column] = "text long"
    if speedup_column in table.columns:
        slow = pd.to_numeric(table[speedup_column], errors="coerce") < slow_below
        classes.loc[slow, speedup_column] += " slow"
    if "flag" in table.columns and speedup_column in table.columns:
        undecided = table["flag"].astype(str).str.contains("interval contains 1|no interval")
        classes.loc[undecided, speedup_column] += " undecided"
    if "noisy" in table.columns:
        noisy = table["noisy"] == True  # noqa: E712 (None = unknown)
        for column in ("noisy", "spread %", speedup_column):
            if column in table.columns:
                classes.loc[noisy, column] += " noisy"
    if "met" in table.columns:
        classes["met"] = "text met-" + table["met"].astype(str).str.replace(r"[^A-Za-z0-9]+", "-", regex=True).str.strip("-")
    styler = table.style.format({c: _formatter(c) for c in table.columns}, escape=None)
    styler = styler.format_index(escape="html", axis=1)  # headers can hold machine names
    styler = styler.set_td_classes(classes).hide(axis="index")
    styler = styler.set_table_attributes(f'class="{css_class}"')
    return f'<div class="scroll">{styler.to_html()}</div>'


def figure_html(png: Path, svg: Path | None, title: str, caption: str, out_dir: Path, *,
                embed: bool = True) -> str:
    """The PNG (embedded as base64, or linked when ``embed`` is False) with links to the PNG/SVG files."""
    rel_png = html.escape(Path(png).relative_to(out_dir).as_posix())
    if embed:
        src = "data:image/png;base64," + base64.b64encode(Path(png).read_bytes()).decode("ascii")
    else:
        src = rel_png
    links = [f'<a href="{rel_png}">PNG</a>']
    if svg is not None:
        links.append(f'<a href="{html.escape(Path(svg).relative_to(out_dir).as_posix())}">SVG</a>')
    lazy = "" if embed else ' loading="lazy"'
    return (f'<figure><img src="{src}"{lazy} alt="{html.escape(title)}">'
            f"<figcaption><b>{html.escape(title)}.</b> {html.escape(caption)} "
            f"({' · '.join(links)})</figcaption></figure>")


def section(anchor: str, heading: str, parts: Iterable[str]) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(heading)}</h2>\n' + "\n".join(parts) + "</section>"


def render_page(title: str, meta: str, sections: list[tuple[str, str, str]], intro: str = "") -> str:
    """``sections``: (anchor, heading, inner HTML); ``intro``: HTML under the title. Returns the whole page."""
    nav = " ".join(f'<a href="#{a}">{html.escape(h)}</a>' for a, h, _ in sections)
    body = "\n".join(section(a, h, [inner]) for a, h, inner in sections)
    return _PAGE.substitute(title=html.escape(title), css=CSS, meta=meta, intro=intro, nav=nav, body=body)
