"""A small builder of self-contained HTML documents (reports that travel as one file).

Everything a page needs is inside the file: images are embedded as base64
``data:`` URIs (also inside inline SVG figures), the stylesheet is inline (screen and print, A4 pages), and no
script, font, stylesheet or link to anything outside is ever written, so the
file opens the same on a machine without a network and prints as it shows.
All text passes through :func:`escape`; only the builder's own markup is raw.

Example::

    doc = HtmlDocument("Plan sub-01")
    section = doc.section("Target", anchor="target")
    section.paragraph("MNI (-10, 58, 28) mm")
    section.table([["x", "y", "z"], [-10, 58, 28]], header=True)
    section.figure(fig, caption="Glass brain")      # a matplotlib figure
    path.write_text(doc.render(), encoding="utf-8")
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence

#: Inline stylesheet: readable on screen, A4 in print (figures never split across pages).
STYLESHEET = """
:root { color-scheme: light; }
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; font-size: 10.5pt; line-height: 1.35;
       color: #1a1a1a; max-width: 60em; margin: 1.5em auto; padding: 0 1em; }
h1 { font-size: 1.6em; margin: 0 0 0.2em 0; }
h2 { font-size: 1.2em; margin: 1.4em 0 0.4em 0; border-bottom: 1px solid #999; padding-bottom: 0.1em; }
h3 { font-size: 1.0em; margin: 1em 0 0.3em 0; }
p { margin: 0.35em 0; }
table { border-collapse: collapse; margin: 0.4em 0; font-size: 0.92em; }
th, td { border: 1px solid #bbb; padding: 0.15em 0.5em; text-align: left; vertical-align: top; }
th { background: #eee; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 0.6em 0; page-break-inside: avoid; break-inside: avoid; }
figure img { max-width: 100%; height: auto; }
figure svg.chart { width: 100%; height: auto; display: block; }
figcaption { font-size: 0.88em; color: #444; }
.verdict { font-size: 1.1em; font-weight: bold; padding: 0.4em 0.6em; border-left: 0.4em solid #888;
           background: #f4f4f4; }
.verdict.go { border-color: #2a7a2a; } .verdict.caution { border-color: #c08000; }
.verdict.nogo { border-color: #b02020; }
.warning { color: #8a4b00; } .muted { color: #666; }
ul { margin: 0.3em 0 0.3em 1.2em; padding: 0; }
code, .mono { font-family: "DejaVu Sans Mono", monospace; font-size: 0.9em; word-break: break-all; }
nav { font-size: 0.9em; margin: 0.5em 0 1em 0; }
nav a { margin-right: 0.8em; color: #1a4f8a; }
@page { size: A4; margin: 14mm 12mm 16mm 12mm; }
@media print {
  body { max-width: none; margin: 0; padding: 0; font-size: 9.5pt; }
  nav { display: none; }
  h2 { page-break-after: avoid; break-after: avoid; }
  table, .verdict { page-break-inside: avoid; break-inside: avoid; }
  a { color: inherit; text-decoration: none; }
}
"""


def escape(text) -> str:
    """``text`` (any object, via ``str``) with ``& < > " '`` escaped for HTML."""
    return html.escape("" if text is None else str(text), quote=True)


def png_data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URI of PNG bytes (checked to be PNG)."""
    if not png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("not PNG data")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_png(fig, dpi: int = 90) -> bytes:
    """PNG bytes of a matplotlib figure (``bbox_inches="tight"``); the figure is closed afterwards.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    dpi : int, default=90
        Modest by default: a report stays small and fast to build.
    """
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    finally:
        plt.close(fig)
    return buffer.getvalue()


def _cell(value, tag):
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    css = ' class="num"' if number and tag == "td" else ""
    return f"<{tag}{css}>{escape(value)}</{tag}>"


class Section:
    """One ``<section>`` of an :class:`HtmlDocument`: a heading and blocks added in order."""

    def __init__(self, title: str, anchor: str | None = None, level: int = 2):
        self.title, self.anchor, self.level = title, anchor, level
        self.blocks: list[str] = []

    def paragraph(self, text, css_class: str | None = None) -> Section:
        """A paragraph of plain text (escaped)."""
        css = f' class="{escape(css_class)}"' if css_class else ""
        self.blocks.append(f"<p{css}>{escape(text)}</p>")
        return self

    def items(self, texts: Iterable, css_class: str | None = None) -> Section:
        """A bulleted list of plain texts (escaped)."""
        css = f' class="{escape(css_class)}"' if css_class else ""
        self.blocks.append(f"<ul{css}>" + "".join(f"<li>{escape(t)}</li>" for t in texts) + "</ul>")
        return self

    def table(self, rows: Sequence[Sequence], header: bool = True) -> Section:
        """A table from rows of values (escaped); the first row is the header when ``header``."""
        rows = [list(r) for r in rows]
        lines = []
        for i, row in enumerate(rows):
            tag = "th" if header and i == 0 else "td"
            lines.append("<tr>" + "".join(_cell(v, tag) for v in row) + "</tr>")
        self.blocks.append("<table>" + "".join(lines) + "</table>")
        return self

    def key_values(self, pairs: Iterable[tuple]) -> Section:
        """A two-column table of (label, value) pairs, labels as row headers."""
        lines = [f"<tr><th>{escape(k)}</th>{_cell(v, 'td')}</tr>" for k, v in pairs]
        self.blocks.append("<table>" + "".join(lines) + "</table>")
        return self

    def image(self, png: bytes, caption: str | None = None, alt: str = "", width_percent: int | None = None
              ) -> Section:
        """An embedded PNG (base64 ``data:`` URI) with an optional caption."""
        style = f' style="width:{int(width_percent)}%"' if width_percent else ""
        text = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
        self.blocks.append(f'<figure><img src="{png_data_uri(png)}" alt="{escape(alt or caption or "")}"{style}>'
                           f"{text}</figure>")
        return self

    def svg(self, svg: str, caption: str | None = None) -> Section:
        """An inline SVG figure (markup built by :mod:`tmstarget.outputs.report_svg`, text already escaped)."""
        if not svg.startswith("<svg"):
            raise ValueError("not an SVG element")
        text = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
        self.blocks.append(f"<figure>{svg}{text}</figure>")
        return self

    def figure(self, fig, caption: str | None = None, dpi: int = 90, width_percent: int | None = None) -> Section:
        """A matplotlib figure, embedded as PNG (see :func:`figure_png`)."""
        return self.image(figure_png(fig, dpi), caption=caption, width_percent=width_percent)

    def subsection(self, title: str) -> Section:
        """A level-3 heading inside this section."""
        self.blocks.append(f"<h3>{escape(title)}</h3>")
        return self

    def render(self) -> str:
        anchor = f' id="{escape(self.anchor)}"' if self.anchor else ""
        return (f"<section{anchor}><h{self.level}>{escape(self.title)}</h{self.level}>\n"
                + "\n".join(self.blocks) + "\n</section>")


class HtmlDocument:
    """A self-contained HTML page: a title, an optional subtitle and sections.

    Parameters
    ----------
    title : str
        ``<title>`` and the page's ``<h1>``.
    subtitle : str, optional
        A line under the heading.
    navigation : bool, default=True
        A screen-only table of contents linking the sections that have an anchor.
    """

    def __init__(self, title: str, subtitle: str | None = None, navigation: bool = True):
        self.title, self.subtitle, self.navigation = title, subtitle, navigation
        self.sections: list[Section] = []

    def section(self, title: str, anchor: str | None = None) -> Section:
        """Add and return a new section."""
        section = Section(title, anchor)
        self.sections.append(section)
        return section

    def render(self) -> str:
        """The whole page as one string (UTF-8 declared; nothing external referenced)."""
        head = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
                f"<title>{escape(self.title)}</title>\n<style>{STYLESHEET}</style>\n</head>\n<body>\n")
        top = f"<header><h1>{escape(self.title)}</h1>"
        if self.subtitle:
            top += f'<p class="muted">{escape(self.subtitle)}</p>'
        top += "</header>\n"
        nav = ""
        if self.navigation:
            links = [f'<a href="#{escape(s.anchor)}">{escape(s.title)}</a>' for s in self.sections if s.anchor]
            nav = f"<nav>{''.join(links)}</nav>\n" if links else ""
        body = "\n".join(s.render() for s in self.sections)
        return head + top + nav + body + "\n</body>\n</html>\n"
