"""Pixels of the report's brain figures, drawn with numpy: slices and glass-brain projections of a map, as PNG.

No plotting library: a figure is an RGB array built from the images' world coordinates (RAS mm),
encoded by :func:`png_bytes` (zlib, the standard library), and the page adds its labels, crosshair
and colour bar as SVG over it (:mod:`tmstarget.outputs.report_svg`).

Orientation (every panel says it with letters): neurological, the patient's left on the left of a
coronal or axial panel, anterior up in an axial panel, superior up in sagittal and coronal panels;
a sagittal slice has anterior on the right, the glass brain's ``l`` panel (the left hemisphere seen
from the left) anterior on the left and its ``r`` panel anterior on the right, as nilearn's
``lzr`` glass brain.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib

import nibabel as nib
import numpy as np

#: The target's marker colour in every figure (the viewer's target colour, as in the 3D view).
TARGET_RGB = (255, 0, 255)
#: Colour ramps of the map, from the display threshold to the largest |value|: positive (dark red to yellow)
#: and negative (dark blue to cyan), as nilearn's ``cold_hot``.
HOT = ((200, 20, 0), (255, 90, 0), (255, 170, 0), (255, 255, 80))
COLD = ((0, 40, 220), (0, 110, 255), (0, 190, 255), (80, 255, 255))
#: Background of the panels, the glass brain's inside and its outline (RGB).
PAPER_RGB = (255, 255, 255)
GLASS_RGB = (238, 238, 238)
OUTLINE_RGB = (120, 120, 120)
#: Pixel size of the display grids (mm): slices and glass brain at 1 mm.
DISPLAY_STEP_MM = 1.0
#: Pixels between two panels of a figure.
GAP_PX = 8


@dataclasses.dataclass
class Panel:
    """One panel of a figure: where it lies in the figure's pixels and how world points map onto them.

    Attributes
    ----------
    name : str
        ``"sagittal"``, ``"coronal"``, ``"axial"`` (slices) or ``"l"``, ``"z"``, ``"r"`` (glass brain).
    left : int
        First column of the panel in the figure.
    width, height : int
        Size in pixels.
    columns, rows : (int, float, float)
        World axis (0 = x, 1 = y, 2 = z) along the panel's columns and rows, its value at pixel 0
        and its step per pixel (mm; negative when it decreases along the pixels).
    letters : (str, str, str, str)
        Orientation letters at the left, right, top and bottom edges.
    """

    name: str
    left: int
    width: int
    height: int
    columns: tuple
    rows: tuple
    letters: tuple

    def pixel(self, point_mm):
        """(column, row) in the figure of a world point (RAS mm), fractional."""
        (ca, c0, cs), (ra, r0, rs) = self.columns, self.rows
        return self.left + (point_mm[ca] - c0) / cs, (point_mm[ra] - r0) / rs


def colour_map(values, threshold, limit):
    """RGB (uint8) and shown-mask of map values: ``|value| >= threshold`` coloured on the ramps, the rest hidden.

    Parameters
    ----------
    values : ndarray
    threshold : float
        Smallest |value| shown.
    limit : float
        |value| at the end of the ramps (the largest |value| of the map).
    """
    values = np.asarray(values, dtype=float)
    shown = np.isfinite(values) & (np.abs(values) >= threshold) & (np.abs(values) > 0)
    span = max(limit - threshold, 1e-12)
    t = np.clip((np.abs(np.nan_to_num(values)) - threshold) / span, 0.0, 1.0)
    stops = np.linspace(0.0, 1.0, len(HOT))
    rgb = np.empty(values.shape + (3,), dtype=np.uint8)
    positive = values > 0
    for channel in range(3):
        hot = np.interp(t, stops, [c[channel] for c in HOT])
        cold = np.interp(t, stops, [c[channel] for c in COLD])
        rgb[..., channel] = np.round(np.where(positive, hot, cold)).astype(np.uint8)
    return rgb, shown


def ramp_stops():
    """The colour ramps as (fraction of the bar, "#rrggbb"): negative limit at 0, positive at 1 (the colour bar)."""
    cold = [(0.5 - 0.5 * f, c) for f, c in zip(np.linspace(0, 1, len(COLD)), COLD)][::-1]
    hot = [(0.5 + 0.5 * f, c) for f, c in zip(np.linspace(0, 1, len(HOT)), HOT)]
    return [(float(f), "#%02x%02x%02x" % c) for f, c in cold + hot]


def png_bytes(rgb):
    """PNG (8-bit RGB) of an ``(height, width, 3)`` uint8 array: the "Sub" row filter and zlib, nothing else.

    Deterministic: the same pixels give the same bytes.
    """
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width, channels = rgb.shape
    if channels != 3:
        raise ValueError(f"png_bytes takes RGB pixels; got {channels} channels")
    rows = rgb.reshape(height, width * 3)
    filtered = np.empty((height, width * 3 + 1), dtype=np.uint8)
    filtered[:, 0] = 1  # filter type Sub: each byte minus the same channel of the pixel on its left
    filtered[:, 1:4] = rows[:, :3]
    filtered[:, 4:] = rows[:, 3:] - rows[:, :-3]  # uint8 arithmetic wraps modulo 256, as PNG wants

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(filtered.tobytes(), 6))
            + chunk(b"IEND", b""))


def world_box(img, margin_mm=0.0):
    """World bounding box (RAS mm) of an image's voxel centres: ``(low, high)``, each of shape (3,)."""
    shape = np.asarray(img.shape[:3]) - 1
    corners = np.array([[i, j, k] for i in (0, shape[0]) for j in (0, shape[1]) for k in (0, shape[2])], float)
    world = nib.affines.apply_affine(img.affine, corners)
    return world.min(axis=0) - margin_mm, world.max(axis=0) + margin_mm


def _sample(data, affine, points):
    """Trilinear values of a volume at world points (NaN outside)."""
    from scipy.ndimage import map_coordinates

    ijk = nib.affines.apply_affine(np.linalg.inv(affine), points.reshape(-1, 3))
    values = map_coordinates(data, ijk.T, order=1, mode="constant", cval=np.nan, prefilter=False)
    return values.reshape(points.shape[:-1])


def _disc(rgb, centre, radius, colour, ring=None):
    """Paint a filled disc (and a one-pixel ring of ``ring`` colour around it) into ``rgb`` in place."""
    rows, columns = np.ogrid[:rgb.shape[0], :rgb.shape[1]]
    distance = np.hypot(columns - centre[0], rows - centre[1])
    if ring is not None:
        rgb[distance <= radius + 1.5] = ring
    rgb[distance <= radius] = colour


#: The three slices: (name, fixed axis, column axis and direction, row axis and direction, letters l r t b).
SLICES = (("sagittal", 0, (1, +1), (2, -1), ("P", "A", "S", "I")),
          ("coronal", 1, (0, +1), (2, -1), ("L", "R", "S", "I")),
          ("axial", 2, (0, +1), (1, -1), ("L", "R", "A", "P")))


def _layout(name, box, axes, left, letters, step=DISPLAY_STEP_MM):
    """A panel covering ``box`` (low, high) along the column and row axes ((axis, +1/-1) each)."""
    (ca, cd), (ra, rd) = axes
    low, high = box
    width = int(round((high[ca] - low[ca]) / step)) + 1
    height = int(round((high[ra] - low[ra]) / step)) + 1
    c0 = low[ca] if cd > 0 else high[ca]
    r0 = low[ra] if rd > 0 else high[ra]
    return Panel(name, left, width, height, (ca, c0, cd * step), (ra, r0, rd * step), letters)


def _panel_points(panel, fixed_axis, fixed_value):
    (ca, c0, cs), (ra, r0, rs) = panel.columns, panel.rows
    points = np.empty((panel.height, panel.width, 3))
    points[..., fixed_axis] = fixed_value
    points[..., ca] = c0 + cs * np.arange(panel.width)[None, :]
    points[..., ra] = r0 + rs * np.arange(panel.height)[:, None]
    return points


def _grey(values):
    """Background intensities to grey levels (robust range of the shown pixels; outside the image as air)."""
    finite = values[np.isfinite(values) & (values > 0)]
    low, high = (np.percentile(finite, (1.0, 99.5)) if finite.size else (0.0, 1.0))
    grey = np.clip((np.nan_to_num(values, nan=low) - low) / max(high - low, 1e-12), 0.0, 1.0)
    grey = np.round(40 + 215 * grey).astype(np.uint8)
    grey[~np.isfinite(values)] = 40
    return np.repeat(grey[..., None], 3, axis=-1)


def _concatenate(pictures, panels):
    height = max(p.height for p in panels)
    width = panels[-1].left + panels[-1].width
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    rgb[:] = PAPER_RGB
    for picture, panel in zip(pictures, panels):
        rgb[:panel.height, panel.left:panel.left + panel.width] = picture
    return rgb


def slices_rgb(map_img, centre_mm, threshold, background=None, margin_mm=6.0):
    """Sagittal, coronal and axial slices through ``centre_mm``: background, map above threshold, target marker.

    Parameters
    ----------
    map_img : nibabel image
        The map (any grid, any orientation: sampled at world points, trilinear).
    centre_mm : sequence of 3 float
        The target (world RAS mm of the map's grid): the slices pass through it and it is marked.
    threshold : float
        Smallest |value| drawn.
    background : nibabel image, optional
        Grey background (a T1 in the same world); white without it.
    margin_mm : float
        Space around the map's bounding box.

    Returns
    -------
    rgb : ndarray, shape (height, width, 3), uint8
    panels : list of Panel
    """
    centre = np.asarray(centre_mm, dtype=float)
    box = world_box(map_img, margin_mm)
    values = np.asarray(map_img.dataobj, dtype=np.float32)
    limit = float(np.nanmax(np.abs(values))) if values.size else 1.0
    back = None if background is None else np.asarray(background.dataobj, dtype=np.float32)
    panels, pictures, left = [], [], 0
    for name, fixed, *axes, letters in SLICES:
        panel = _layout(name, box, axes, left, letters)
        points = _panel_points(panel, fixed, centre[fixed])
        picture = np.empty((panel.height, panel.width, 3), dtype=np.uint8)
        picture[:] = PAPER_RGB
        if back is not None:
            picture = _grey(_sample(back, background.affine, points))
        colours, shown = colour_map(_sample(values, map_img.affine, points), threshold, limit)
        picture[shown] = colours[shown]
        panels.append(panel)
        pictures.append(picture)
        left += panel.width + GAP_PX
    rgb = _concatenate(pictures, panels)
    for panel in panels:
        _disc(rgb, panel.pixel(centre), 3.5, TARGET_RGB, ring=(0, 0, 0))
    return rgb, panels


def _canonical(img):
    """The image's data reordered to RAS voxel axes (flips and transposes only) with its voxel sizes and the world
    coordinate of each voxel centre along each axis."""
    canonical = nib.as_closest_canonical(img)
    data = np.asarray(canonical.dataobj, dtype=np.float32)
    affine = canonical.affine
    coords = [affine[axis, axis] * np.arange(data.shape[axis]) + affine[axis, 3] for axis in range(3)]
    return data, coords


def _signed_projection(values, axis):
    """Along ``axis``, the value of largest |value| (its sign kept): the glass brain's projection."""
    index = np.expand_dims(np.nanargmax(np.abs(np.nan_to_num(values)), axis=axis), axis)
    return np.take_along_axis(values, index, axis=axis).squeeze(axis)


#: Glass-brain panels: (name, projected axis, hemisphere (-1 left, +1 right, 0 both), column axis and
#: direction, row axis and direction, letters left right top bottom).
GLASS = (("l", 0, -1, (1, -1), (2, -1), ("A", "P", "S", "I")),
         ("z", 2, 0, (0, +1), (1, -1), ("L", "R", "A", "P")),
         ("r", 0, +1, (1, +1), (2, -1), ("P", "A", "S", "I")))


def glass_brain_rgb(map_img, threshold, marker_mm=None, margin_mm=6.0):
    """Glass brain of a map (``lzr``): maximum-|value| projections inside the outline of the map's support.

    ``l`` projects the left hemisphere (x < 0) seen from the left, ``z`` the whole brain from above,
    ``r`` the right hemisphere from the right. The outline is the projection of the map's support
    (its non-zero voxels: the analysis mask), on the map's own grid resampled to 1-mm pixels.

    Parameters
    ----------
    map_img : nibabel image
        On a grid aligned with the world axes (flips and axis order are handled; an oblique grid is
        taken at its closest orientation).
    threshold : float
        Smallest |value| drawn.
    marker_mm : sequence of 3 float, optional
        The target, marked in each panel.
    margin_mm : float

    Returns
    -------
    rgb : ndarray, shape (height, width, 3), uint8
    panels : list of Panel
    """
    from scipy.ndimage import map_coordinates

    data, coords = _canonical(map_img)
    support = np.isfinite(data) & (data != 0)
    limit = float(np.nanmax(np.abs(data))) if support.any() else 1.0
    low = np.array([c[0] for c in coords]) - margin_mm
    high = np.array([c[-1] for c in coords]) + margin_mm
    panels, pictures, left = [], [], 0
    for name, axis, side, *axes, letters in GLASS:
        keep = np.ones(data.shape[axis], dtype=bool) if side == 0 else (np.sign(coords[axis]) == side)
        part = np.compress(keep, np.where(support, data, 0.0), axis=axis)
        projection = _signed_projection(part, axis)  # 2-D, remaining axes in RAS order
        inside = support.any(axis=axis).astype(np.float32)
        panel = _layout(name, (low, high), axes, left, letters)
        points = _panel_points(panel, axis, 0.0)
        remaining = [a for a in range(3) if a != axis]
        # fractional index of each pixel along the two remaining axes of the projection (RAS voxel grid)
        index = np.stack([(points[..., a] - coords[a][0]) / (coords[a][1] - coords[a][0]) for a in remaining])
        values = map_coordinates(projection, index, order=1, mode="constant", cval=0.0, prefilter=False)
        glass = map_coordinates(inside, index, order=1, mode="constant", cval=0.0, prefilter=False) >= 0.5
        edge = glass & ~_eroded(glass)
        picture = np.empty((panel.height, panel.width, 3), dtype=np.uint8)
        picture[:] = PAPER_RGB
        picture[glass] = GLASS_RGB
        picture[edge] = OUTLINE_RGB
        colours, shown = colour_map(values, threshold, limit)
        picture[shown] = colours[shown]
        panels.append(panel)
        pictures.append(picture)
        left += panel.width + GAP_PX
    rgb = _concatenate(pictures, panels)
    if marker_mm is not None:
        for panel in panels:
            _disc(rgb, panel.pixel(np.asarray(marker_mm, dtype=float)), 4.5, TARGET_RGB, ring=(0, 0, 0))
    return rgb, panels


def _eroded(mask):
    """A 2-D mask shrunk by one pixel (4-neighbourhood)."""
    out = mask.copy()
    out[1:, :] &= mask[:-1, :]
    out[:-1, :] &= mask[1:, :]
    out[:, 1:] &= mask[:, :-1]
    out[:, :-1] &= mask[:, 1:]
    return out
