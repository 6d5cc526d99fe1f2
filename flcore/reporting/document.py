"""The report document: blocks (headings, paragraphs, tables, figures), number formats, Markdown and HTML.

A report is a list of blocks written twice: as Markdown (tables and text) and as
HTML with the figures inline as SVG, styles inline, no script and no link to
anything outside the file. Numbers are formatted here, in one place, so that both
show the same figures.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any

# -- blocks -------------------------------------------------------------------------------


@dataclass
class Heading:
    """A section heading (level 2 or 3)."""

    level: int
    text: str


@dataclass
class Para:
    """A paragraph; ``**bold**`` and ```code``` marks."""

    text: str


@dataclass
class Bullets:
    """A bulleted list."""

    items: list[str]


@dataclass
class Table:
    """A table of formatted cells."""

    header: list[str]
    rows: list[list[str]]


@dataclass
class Figure:
    """An inline SVG figure with its caption."""

    title: str
    svg: str
    caption: str = ""


@dataclass
class Report:
    """The blocks of a report, and what the comparison of several runs found (for comparison.json)."""

    title: str
    blocks: list[Any] = field(default_factory=list)
    comparison: dict[str, Any] | None = None


# -- number formatting: one place, so that report.md and report.html agree ---------------------


def num(v: float | None, digits: int = 3) -> str:
    """A metric value, or ``n/a``."""
    return "n/a" if v is None else f"{v:.{digits}f}"


def ci(iv: dict[str, Any] | None, digits: int = 3) -> str:
    """``mean [low, high]``; the mean alone when there is no interval (one seed)."""
    if not iv or iv["mean"] is None:
        return "n/a"
    if iv["ci_low"] is None:
        return num(iv["mean"], digits)
    return f"{num(iv['mean'], digits)} [{num(iv['ci_low'], digits)}, {num(iv['ci_high'], digits)}]"


def signed(v: float | None, digits: int = 3) -> str:
    """A difference with its sign."""
    return "n/a" if v is None else f"{v:+.{digits}f}"


def diff(p: dict[str, Any], digits: int = 3) -> str:
    """A paired difference with its interval."""
    if p["mean_difference"] is None:
        return "n/a"
    if p["ci_low"] is None:
        return signed(p["mean_difference"], digits)
    return f"{signed(p['mean_difference'], digits)} [{signed(p['ci_low'], digits)}, {signed(p['ci_high'], digits)}]"


def pval(p: float | None) -> str:
    """A p-value, ``<0.001`` below that."""
    if p is None:
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def spanned(iv: dict[str, Any] | None, digits: int = 1, scale: float = 1.0) -> str:
    """A cost over seeds: ``mean (min-max)``; the mean alone when every seed gives the same value."""
    if not iv or iv["mean"] is None:
        return "n/a"
    values = [v / scale for v in iv["values"]]
    mean = num(iv["mean"] / scale, digits)
    low, high = num(min(values), digits), num(max(values), digits)
    return mean if low == high else f"{mean} ({low}-{high})"


def megabytes(iv: dict[str, Any] | None) -> str:
    """Bytes over seeds, in MB, as :func:`spanned`."""
    return spanned(iv, 2, 1e6)


# -- rendering --------------------------------------------------------------------------------


def _md_table(t: Table) -> str:
    def cell(x: str) -> str:
        return x.replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in t.header) + " |", "|" + "---|" * len(t.header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in t.rows]
    return "\n".join(lines)


def to_markdown(report: Report) -> str:
    """The report as Markdown; figures are named and left to report.html."""
    out = [f"# {report.title}"]
    for b in report.blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Table):
            out.append(_md_table(b))
        elif isinstance(b, Figure):
            out.append(f"_Figure: {b.title} (in report.html)._" + (f" {b.caption}" if b.caption else ""))
    return "\n\n".join(out) + "\n"


def _inline(text: str) -> str:
    """Escape, then the two Markdown marks the blocks use: **bold** and `code`."""
    text = html.escape(text, quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


_CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1a1a1a}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d0d0;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f3f5f7}tr:nth-child(even) td{background:#fafbfc}
figure{margin:1em 0}figure svg{max-width:100%;height:auto}
figcaption{font-size:.85em;color:#555}code{background:#f3f3f3;padding:0 .2em}
nav{font-size:.9em;background:#f7f7f7;padding:.5em 1em}
"""


def to_html(report: Report) -> str:
    """The report as one HTML file: inline styles and SVG figures, no script, nothing fetched."""
    body, toc = [], []
    for i, b in enumerate(report.blocks):
        if isinstance(b, Heading):
            anchor = f"s{i}"
            if b.level == 2:
                toc.append(f'<a href="#{anchor}">{_inline(b.text)}</a>')
            body.append(f'<h{b.level} id="{anchor}">{_inline(b.text)}</h{b.level}>')
        elif isinstance(b, Para):
            body.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Bullets):
            body.append("<ul>" + "".join(f"<li>{_inline(x)}</li>" for x in b.items) + "</ul>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{_inline(h)}</th>" for h in b.header)
            rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Figure):
            caption = f"<figcaption>{_inline(b.caption)}</figcaption>" if b.caption else ""
            body.append(f'<figure class="plot" data-title="{html.escape(b.title)}">{b.svg}{caption}</figure>')
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(report.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{_inline(report.title)}</h1>\n<nav>{' · '.join(toc)}</nav>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )
