"""Vector parts of the report's figures, as inline SVG: line and scatter charts, and labels over a brain picture.

Inline SVG needs no plotting library, prints sharp at any size and stays searchable text. Every
string written passes through :func:`tmstarget.outputs.html.escape`; pictures are embedded as
``data:`` URIs, so a figure references nothing outside the page.
"""

from __future__ import annotations

import math

import numpy as np

from tmstarget.outputs.html import escape, png_data_uri

#: Font of the figures' text (the page's).
FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif"'


def _num(value):
    """A coordinate for SVG: two decimals, no trailing zeros."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def nice_ticks(low, high, count=5):
    """About ``count`` round tick values (1, 2 or 5 times a power of ten apart) covering [low, high]."""
    if not high > low:
        high = low + 1.0
    raw = (high - low) / max(count, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step - 1e-9)
    return [round(i * step, 10) for i in range(first, int(math.floor(high / step + 1e-9)) + 1)]


def _tick_text(value):
    return f"{value:g}"


class Axes:
    """One chart area of an :class:`SvgFigure`: data coordinates mapped onto a box of the figure.

    Parameters
    ----------
    figure : SvgFigure
    box : (left, top, width, height)
        The plotting area in figure units (pixels of the view box).
    xlim, ylim : (float, float)
        Data range shown.
    """

    def __init__(self, figure, box, xlim, ylim):
        self.figure, self.box = figure, box
        self.xlim, self.ylim = (float(xlim[0]), float(xlim[1])), (float(ylim[0]), float(ylim[1]))
        self.parts, self.legend_items = [], []

    def px(self, x):
        """Figure column of data x."""
        left, _, width, _ = self.box
        return left + (np.asarray(x, dtype=float) - self.xlim[0]) / (self.xlim[1] - self.xlim[0]) * width

    def py(self, y):
        """Figure row of data y (up is larger y)."""
        _, top, _, height = self.box
        return top + height - (np.asarray(y, dtype=float) - self.ylim[0]) / (self.ylim[1] - self.ylim[0]) * height

    def line(self, x, y, colour, width=1.2, dash=None, label=None, css_class=None):
        """A polyline through the data points."""
        points = " ".join(f"{_num(a)},{_num(b)}" for a, b in zip(self.px(x), self.py(y)))
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        css = f' class="{escape(css_class)}"' if css_class else ""
        self.parts.append(f'<polyline{css} points="{points}" fill="none" stroke="{colour}" stroke-width="{width}"'
                          f'{dashes} stroke-linejoin="round"/>')
        if label:
            self.legend_items.append(("line", colour, dash, label))

    def hline(self, y, colour, width=1.0, dash=None, label=None, css_class=None):
        """A horizontal line across the axes at data y."""
        self.line(self.xlim, (y, y), colour, width, dash, label, css_class)

    def vline(self, x, colour, width=1.0, dash=None, label=None, css_class=None):
        """A vertical line across the axes at data x."""
        self.line((x, x), self.ylim, colour, width, dash, label, css_class)

    def scatter(self, x, y, colour, size=3.0, shape="circle", opacity=1.0, label=None, edge=None):
        """Markers at the data points: ``circle``, ``square`` or ``star``; ``size`` is the radius in figure units."""
        stroke = f' stroke="{edge}" stroke-width="0.8"' if edge else ""
        marks = []
        for a, b in zip(self.px(x), self.py(y)):
            if shape == "square":
                marks.append(f'<rect x="{_num(a - size)}" y="{_num(b - size)}" width="{_num(2 * size)}" '
                             f'height="{_num(2 * size)}"/>')
            elif shape == "star":
                angles = np.pi / 2 + np.arange(10) * np.pi / 5
                radii = np.where(np.arange(10) % 2 == 0, size, size * 0.45)
                corners = " ".join(f"{_num(a + r * math.cos(t))},{_num(b - r * math.sin(t))}"
                                   for r, t in zip(radii, angles))
                marks.append(f'<polygon points="{corners}"/>')
            else:
                marks.append(f'<circle cx="{_num(a)}" cy="{_num(b)}" r="{_num(size)}"/>')
        self.parts.append(f'<g fill="{colour}" fill-opacity="{opacity:g}"{stroke}>' + "".join(marks) + "</g>")
        if label:
            self.legend_items.append((shape, colour, None, label))

    def ring(self, cx, cy, radius, colour, dash="3,2"):
        """A circle of data radius (x units) around a data point."""
        rx = abs(self.px(cx + radius) - self.px(cx))
        ry = abs(self.py(cy + radius) - self.py(cy))
        self.parts.append(f'<ellipse cx="{_num(self.px(cx))}" cy="{_num(self.py(cy))}" rx="{_num(rx)}" '
                          f'ry="{_num(ry)}" fill="none" stroke="{colour}" stroke-width="0.8" '
                          f'stroke-dasharray="{dash}"/>')

    def render(self, xlabel="", ylabel="", title="", legend=True):
        """The axes' SVG: frame, ticks, labels, clipped data, legend."""
        left, top, width, height = self.box
        out = [f'<rect x="{_num(left)}" y="{_num(top)}" width="{_num(width)}" height="{_num(height)}" '
               'fill="white" stroke="#444" stroke-width="0.8"/>']
        for value in nice_ticks(*self.xlim):
            x = self.px(value)
            out.append(f'<line x1="{_num(x)}" y1="{_num(top + height)}" x2="{_num(x)}" y2="{_num(top + height + 3)}" '
                       f'stroke="#444" stroke-width="0.8"/><text x="{_num(x)}" y="{_num(top + height + 12)}" '
                       f'text-anchor="middle">{escape(_tick_text(value))}</text>')
        for value in nice_ticks(*self.ylim, count=4):
            y = self.py(value)
            out.append(f'<line x1="{_num(left - 3)}" y1="{_num(y)}" x2="{_num(left)}" y2="{_num(y)}" stroke="#444" '
                       f'stroke-width="0.8"/><text x="{_num(left - 5)}" y="{_num(y + 3)}" '
                       f'text-anchor="end">{escape(_tick_text(value))}</text>')
        clip = self.figure.clip_id()
        out.append(f'<clipPath id="{clip}"><rect x="{_num(left)}" y="{_num(top)}" width="{_num(width)}" '
                   f'height="{_num(height)}"/></clipPath><g clip-path="url(#{clip})">' + "".join(self.parts) + "</g>")
        if xlabel:
            out.append(f'<text x="{_num(left + width / 2)}" y="{_num(top + height + 25)}" '
                       f'text-anchor="middle">{escape(xlabel)}</text>')
        if ylabel:
            out.append(f'<text transform="translate({_num(left - 32)},{_num(top + height / 2)}) rotate(-90)" '
                       f'text-anchor="middle">{escape(ylabel)}</text>')
        if title:
            out.append(f'<text x="{_num(left)}" y="{_num(top - 4)}" font-weight="bold">{escape(title)}</text>')
        if legend and self.legend_items:
            out.append(self._legend())
        return "".join(out)

    def _legend(self):
        left, top, width, _ = self.box
        rows = []
        longest = max(len(item[3]) for item in self.legend_items)
        box_width = 26 + 5.2 * longest
        x0 = left + width - box_width - 4
        for i, (shape, colour, dash, label) in enumerate(self.legend_items):
            y = top + 10 + 12 * i
            if shape == "line":
                dashes = f' stroke-dasharray="{dash}"' if dash else ""
                key = f'<line x1="{_num(x0 + 4)}" y1="{_num(y - 3)}" x2="{_num(x0 + 20)}" y2="{_num(y - 3)}" ' \
                      f'stroke="{colour}" stroke-width="1.2"{dashes}/>'
            else:
                key = f'<circle cx="{_num(x0 + 12)}" cy="{_num(y - 3)}" r="3" fill="{colour}"/>'
            rows.append(f'{key}<text x="{_num(x0 + 24)}" y="{_num(y)}">{escape(label)}</text>')
        height = 12 * len(self.legend_items) + 4
        return (f'<rect x="{_num(x0)}" y="{_num(top + 2)}" width="{_num(box_width)}" height="{_num(height)}" '
                f'fill="white" fill-opacity="0.85" stroke="#bbb" stroke-width="0.5"/>' + "".join(rows))


class SvgFigure:
    """An inline SVG figure of a fixed view box (``width`` x ``height`` units), shown at the page's width.

    Parameters
    ----------
    width, height : float
        The view box; text is drawn at about 9 units.
    name : str
        Prefix of the figure's element ids (clip paths), unique in the page.
    label : str
        Accessible name of the figure (``aria-label``).
    """

    def __init__(self, width, height, name="figure", label=""):
        self.width, self.height, self.label, self.name = float(width), float(height), label, name
        self.parts, self._clips = [], 0

    def clip_id(self):
        self._clips += 1
        return f"{self.name}-clip{self._clips}"

    def add(self, svg):
        """Raw SVG markup (the builder's own, already escaped)."""
        self.parts.append(svg)

    def axes(self, box, xlim, ylim):
        """A new :class:`Axes` on this figure (render it with :meth:`Axes.render` and :meth:`add`)."""
        return Axes(self, box, xlim, ylim)

    def image(self, png, left, top, width, height):
        """An embedded PNG placed on the view box."""
        self.parts.append(f'<image href="{png_data_uri(png)}" x="{_num(left)}" y="{_num(top)}" '
                          f'width="{_num(width)}" height="{_num(height)}" preserveAspectRatio="none"/>')

    def text(self, x, y, text, anchor="start", size=None, colour=None, weight=None):
        """A label at (x, y) of the view box."""
        extra = (f' font-size="{_num(size)}"' if size else "") + (f' fill="{colour}"' if colour else "") + \
            (f' font-weight="{weight}"' if weight else "")
        self.parts.append(f'<text x="{_num(x)}" y="{_num(y)}" text-anchor="{anchor}"{extra}>{escape(text)}</text>')

    def render(self):
        """The ``<svg>`` element (no namespace attribute needed inline in HTML)."""
        return (f'<svg class="chart" viewBox="0 0 {_num(self.width)} {_num(self.height)}" role="img" '
                f'aria-label="{escape(self.label)}" {FONT} font-size="9">' + "".join(self.parts) + "</svg>")


def equal_limits(xlim, ylim, box):
    """Widen the shorter data range so one data unit has the same length along x and y in ``box``."""
    _, _, width, height = box
    (x0, x1), (y0, y1) = xlim, ylim
    scale = max((x1 - x0) / width, (y1 - y0) / height)
    xc, yc = (x0 + x1) / 2, (y0 + y1) / 2
    return (xc - scale * width / 2, xc + scale * width / 2), (yc - scale * height / 2, yc + scale * height / 2)
