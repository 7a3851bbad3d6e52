"""The report's figures without a plotting library (issue 19): PNG pixels, orientation, the FD chart's values,
the 3D view from the renderer process, and a page that references nothing outside itself.

Pixels are decoded with Pillow (an independent PNG decoder). Orientation is checked on planted images whose
grids are stored with x decreasing along the array (as many NIfTI files are) and whose world box is symmetric
about the midline, so "right of the panel's centre" is the patient's right in a neurological view without
asking the code under test where anything is.
"""

import base64
import io
import os
import re
import time

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from tmstarget.outputs.report import write_report
from tmstarget.outputs.report_figures import fd_figure
from tmstarget.outputs.report_raster import TARGET_RGB, glass_brain_rgb, png_bytes, slices_rgb

#: A symmetric 3-mm grid (x from +90 to -90: stored right to left, y and z from -90/-72 up).
SHAPE = (61, 61, 49)
AFFINE = np.array([[-3.0, 0, 0, 90.0], [0, 3.0, 0, -90.0], [0, 0, 3.0, -72.0], [0, 0, 0, 1]])


def _world_index(point):
    return tuple(int(round(v)) for v in np.linalg.inv(AFFINE) @ [*point, 1.0])[:3]


def _planted_map(centre=(40.0, 20.0, 30.0), value=5.0):
    """A brain-shaped support (an ellipsoid of small values) and one strong blob at ``centre`` (world mm)."""
    ijk = np.indices(SHAPE).reshape(3, -1).T
    world = (AFFINE @ np.c_[ijk, np.ones(len(ijk))].T).T[:, :3].reshape(*SHAPE, 3)
    inside = (((world - [0, -10, 0]) / [70.0, 85.0, 65.0]) ** 2).sum(-1) < 1.0
    data = np.where(inside, 0.01, 0.0).astype(np.float32)
    data[np.linalg.norm(world - centre, axis=-1) <= 7.0] = value
    return nib.Nifti1Image(data, AFFINE)


def _decode(png):
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _coloured(rgb):
    """Pixels of the map's warm colours (red to yellow: strong red, little blue)."""
    rgb = rgb.astype(int)
    return (rgb[..., 0] > 180) & (rgb[..., 2] < 100) & (rgb[..., 0] - rgb[..., 1] > -10)


def _magenta(rgb):
    return np.all(rgb == TARGET_RGB, axis=-1)


def _panel(rgb, panel):
    return rgb[:panel.height, panel.left:panel.left + panel.width]


def test_png_bytes_decode_to_the_same_pixels():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    pixels[5:9] = 255  # runs of equal bytes and wrap-around differences
    png = png_bytes(pixels)
    np.testing.assert_array_equal(_decode(png), pixels)
    assert png_bytes(pixels) == png  # deterministic
    with pytest.raises(ValueError):
        png_bytes(np.zeros((4, 4, 4), dtype=np.uint8))


def test_glass_brain_shows_a_right_hemisphere_blob_on_the_right():
    img = _planted_map()
    target = (40.0, 20.0, 30.0)
    rgb, panels = glass_brain_rgb(img, threshold=1.0, marker_mm=target)
    by_name = {p.name: p for p in panels}
    assert [p.name for p in panels] == ["l", "z", "r"]
    # 'l' projects only the left hemisphere: no blob; 'r' and 'z' show it
    assert not _coloured(_panel(rgb, by_name["l"])).any()
    for name in ("z", "r"):
        assert _coloured(_panel(rgb, by_name[name])).sum() > 50, name
    axial = _panel(rgb, by_name["z"])
    rows, cols = np.nonzero(_coloured(axial))
    height, width = axial.shape[:2]
    assert cols.mean() > width * 0.6  # patient's right on the right (neurological)
    assert rows.mean() < height * 0.5  # anterior (y = +20 of a box from -96 to +96) up
    right = _panel(rgb, by_name["r"])
    rows, cols = np.nonzero(_coloured(right))
    assert cols.mean() > right.shape[1] * 0.5  # seen from the right: anterior on the right
    assert rows.mean() < right.shape[0] * 0.5  # superior (z = +30 of -78..+78) up
    # the target's marker lies on the blob in the axial view
    marker_rows, marker_cols = np.nonzero(_magenta(axial))
    assert abs(marker_cols.mean() - cols.mean()) < 40 and marker_cols.size > 10
    assert abs(marker_cols.mean() - (40 + 96) / 192 * width) < 3


def test_slices_put_the_patients_left_on_the_left():
    img = _planted_map()
    t1 = np.full(SHAPE, 100.0, dtype=np.float32)
    t1[:_world_index((0.0, 0.0, 0.0))[0] - 2] = 10.0  # array rows of x > 0 (stored first): the right is dark
    background = nib.Nifti1Image(t1, AFFINE)
    rgb, panels = slices_rgb(img, (40.0, 20.0, 30.0), threshold=1.0, background=background)
    by_name = {p.name: p for p in panels}
    for name in ("coronal", "axial"):
        panel = _panel(rgb, by_name[name])
        grey = panel[..., 0].astype(int)
        width = panel.shape[1]
        assert grey[:, : width // 3].mean() > grey[:, -width // 3:].mean() + 50, name  # bright left, dark right
        rows, cols = np.nonzero(_coloured(panel))
        assert cols.size > 20 and cols.mean() > width * 0.6, name  # the blob at x = +40: right
        marker = np.nonzero(_magenta(panel))[1]
        assert abs(marker.mean() - (40 + 96) / 192 * width) < 3, name
    sagittal = _panel(rgb, by_name["sagittal"])
    rows, cols = np.nonzero(_coloured(sagittal))
    assert cols.mean() > sagittal.shape[1] * 0.5  # y = +20: anterior on the right of a sagittal slice
    assert rows.mean() < sagittal.shape[0] * 0.5  # z = +30: up


def test_the_fd_chart_draws_each_volume_at_its_value():
    fd = [0.0, 0.12, 0.05, 0.9, 0.31, 0.02, 0.2]
    runs = [{"run": "task-rest", "fd_power_trace_mm": fd, "dummy_volumes_dropped": 3}]
    svg = fd_figure(runs, scrub=0.5, mean_limit=0.3)
    points = np.array([[float(v) for v in pair.split(",")] for pair in
                       re.search(r'<polyline class="fd" points="([^"]+)"', svg).group(1).split()])
    assert len(points) == len(fd)
    # one volume per step along x, and y a decreasing linear function of FD (exactly, up to the rounding)
    np.testing.assert_allclose(np.diff(points[:, 0]), np.diff(points[:, 0])[0], atol=0.02)
    slope, intercept = np.polyfit(fd, points[:, 1], 1)
    assert slope < 0
    np.testing.assert_allclose(slope * np.array(fd) + intercept, points[:, 1], atol=0.02)
    assert points[:, 1].argmin() == 3  # the 0.9-mm spike is the highest point
    # the threshold lines sit at their values on the same scale
    for css, value in (("scrub", 0.5), ("mean-limit", 0.3)):
        line = re.search(rf'<polyline class="{css}" points="([^"]+)"', svg).group(1).split()
        np.testing.assert_allclose([float(p.split(",")[1]) for p in line], slope * value + intercept, atol=0.02)
    assert "scrubbing threshold 0.5 mm" in svg and "task-rest" in svg


def _page_images(page):
    payloads = re.findall(r'(?:src|href)="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    return [_decode(base64.b64decode(p)) for p in payloads]


def test_report_of_a_plan_folder_is_self_contained_and_draws_without_plotting_libraries(sample_plan_dir, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "report.html"
    code = (f"from tmstarget.outputs.report import write_report\nwrite_report({str(sample_plan_dir)!r}, {str(out)!r})\n"
            "import sys\nprint(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('matplotlib', 'pyvista', 'vtkmodules') or m.startswith('nilearn.plotting')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
    page = out.read_text(encoding="utf-8")
    assert not re.search(r'<link|<script|<iframe|<object|@import|src="(?!data:)|href="(?!#|data:)', page)
    assert "http://" not in page and "https://" not in page and "xlink" not in page
    assert page.count('<svg class="chart"') >= 4  # glass brain, slices, stability, FD
    images = _page_images(page)
    assert len(images) == 2 and all(_magenta(im).sum() > 20 for im in images)  # the target in both brain figures
    assert "No 3D view: no scene renderer was given" in page


def test_the_renderer_process_draws_what_the_viewer_draws(sample_plan_dir, tmp_path, monkeypatch):
    pytest.importorskip("pyvista")
    import tmstarget
    from tmstarget.cli._common import scene_renderer
    from tmstarget.viewer.scene import render_png

    monkeypatch.delenv("TMSTARGET_RENDER_NICE", raising=False)
    renderer = scene_renderer(size=(320, 240)).start()
    process = renderer._process
    own = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        deadline = time.monotonic() + 20
        while os.getpriority(os.PRIO_PROCESS, process.pid) == own and time.monotonic() < deadline:
            time.sleep(0.02)
        assert os.getpriority(os.PRIO_PROCESS, process.pid) == own + 10  # starts up on idle CPU only
        pending = renderer(sample_plan_dir)
        picture = _decode(pending())
        if os.geteuid() == 0:  # allowed to rise again: the picture is drawn at the plan's priority
            assert os.getpriority(os.PRIO_PROCESS, process.pid) == own
        with pytest.raises(RuntimeError, match="target.json"):
            renderer(tmp_path)()  # not a plan folder: the reason comes back, the process keeps serving
        again = _decode(renderer(sample_plan_dir)())
    finally:
        renderer.close()
    assert process.poll() is not None  # ended
    direct = render_png(tmstarget.load_plan(sample_plan_dir), size=(320, 240))
    np.testing.assert_array_equal(picture, direct[..., :3])
    np.testing.assert_array_equal(again, picture)
    assert _magenta(picture).sum() > 10


def test_a_failed_3d_view_costs_only_the_3d_view(sample_plan_dir, tmp_path):
    def broken(plan_dir):
        def answer():
            raise RuntimeError("the renderer process ended (exit code -11)")

        return answer

    page = write_report(sample_plan_dir, tmp_path / "r.html", render_3d=broken).read_text(encoding="utf-8")
    assert "No 3D view: off-screen rendering failed (RuntimeError: the renderer process ended" in page
    assert '<section id="map">' in page and '<section id="provenance">' in page
