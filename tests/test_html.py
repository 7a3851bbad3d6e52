"""The self-contained HTML builder: escaping, embedded images that decode, nothing external."""

import base64
import io
import re

import numpy as np

from tmstarget.outputs.html import HtmlDocument, escape, png_data_uri


def _decode_images(page):
    import matplotlib.image as mpimg

    images = []
    for payload in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page):
        images.append(mpimg.imread(io.BytesIO(base64.b64decode(payload)), format="png"))
    return images


def test_text_is_escaped_and_images_round_trip():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    doc = HtmlDocument("Plan <sub-01> & co", subtitle='"quoted"')
    section = doc.section("Target", anchor="target")
    section.paragraph("<script>alert(1)</script>")
    section.table([["name", "value"], ["<b>", 1.5]])
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [0, 1], color="red")
    section.figure(fig, caption="a red line")
    page = doc.render()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Plan &lt;sub-01&gt; &amp; co" in page and "&lt;b&gt;" in page
    assert '<td class="num">1.5</td>' in page
    (image,) = _decode_images(page)
    red = (image[..., 0] > 0.8) & (image[..., 1] < 0.3) & (image[..., 2] < 0.3)
    assert red.sum() > 10  # the drawn line survived encoding
    assert not re.search(r"<link|<script|src=\"http|url\(", page)
    assert "@page" in page and "size: A4" in page


def test_png_data_uri_refuses_other_bytes_and_escape_handles_none():
    assert png_data_uri(b"\x89PNG\r\n\x1a\n" + b"x").startswith("data:image/png;base64,")
    try:
        png_data_uri(b"GIF89a")
    except ValueError:
        pass
    else:
        raise AssertionError("GIF bytes accepted as PNG")
    assert escape(None) == "" and escape(np.float64(2.5)) == "2.5"


def test_svg_figures_are_inline_and_only_svg():
    doc = HtmlDocument("Plan")
    section = doc.section("Chart", anchor="chart")
    section.svg('<svg class="chart" viewBox="0 0 10 10"><circle cx="5" cy="5" r="2"/></svg>', caption="a <dot>")
    page = doc.render()
    assert '<figure><svg class="chart" viewBox="0 0 10 10">' in page
    assert "<figcaption>a &lt;dot&gt;</figcaption>" in page
    try:
        section.svg("<script>alert(1)</script>")
    except ValueError:
        pass
    else:
        raise AssertionError("non-SVG markup accepted as a figure")
