"""Linked axial, coronal and sagittal slices of the T1 with the map overlaid and a crosshair.

Slices are cut in world RAS mm, not voxel axes, so any storage order or
oblique T1 shows the head upright: each panel samples the T1 (trilinear) and
the map (nearest voxel) on a plane through the crosshair, ``SLICE_STEP_MM``
apart, over the head's extent. Panels are drawn in neurological convention
(the patient's left on the left of axial and coronal panels, labelled L/R).
A click in a panel calls ``on_pick(point_ras_mm)``; :meth:`SliceView.set_crosshair`
redraws all three.
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure

from tmstarget.viewer.content import map_colours, sample_map

#: In-plane sampling step of the slices (mm).
SLICE_STEP_MM = 1.5

#: Panel -> (horizontal world axis, vertical world axis, fixed world axis).
PLANES = {"axial": (0, 1, 2), "coronal": (0, 2, 1), "sagittal": (1, 2, 0)}


def head_extent(scene):
    """World RAS bounds (mm) the slices cover: the scalp's bounding box plus 5 mm, shape (3, 2)."""
    vertices = scene.head.vertices_ras_mm
    return np.stack([vertices.min(axis=0) - 5.0, vertices.max(axis=0) + 5.0], axis=1)


def slice_plane(extent, plane, crosshair_ras_mm, step_mm=SLICE_STEP_MM):
    """World points of one slice: (rows, cols, 3), row 0 at the bottom (superior/anterior up)."""
    h, v, fixed = PLANES[plane]
    hs = np.arange(extent[h, 0], extent[h, 1], step_mm)
    vs = np.arange(extent[v, 0], extent[v, 1], step_mm)
    points = np.empty((len(vs), len(hs), 3))
    points[..., h] = hs[None, :]
    points[..., v] = vs[:, None]
    points[..., fixed] = crosshair_ras_mm[fixed]
    return points


class SliceView(FigureCanvasQTAgg):
    """Three linked slices (axial, coronal, sagittal) of a :class:`~tmstarget.viewer.content.SceneData`.

    Parameters
    ----------
    scene : SceneData
    on_pick : callable, optional
        Called with the world point (RAS mm) clicked in a panel.
    threshold : float
        Map values with ``|value|`` below this are not overlaid.
    """

    def __init__(self, scene, on_pick=None, threshold=0.0, parent=None):
        self.figure = Figure(figsize=(9, 3), facecolor="black", layout="constrained")
        super().__init__(self.figure)
        self.setParent(parent)
        self.scene, self.on_pick = scene, on_pick
        self.extent = head_extent(scene)
        self.threshold = float(threshold)
        self.crosshair = np.asarray(scene.target_ras_mm, dtype=float)
        self.axes = {name: self.figure.add_subplot(1, 3, i + 1) for i, name in enumerate(PLANES)}
        t1 = np.asarray(scene.t1_img.dataobj, dtype=float)
        self.t1_limits = (float(np.percentile(t1, 1)), float(np.percentile(t1, 99.5)))
        self.mpl_connect("button_press_event", self._clicked)
        self.redraw()

    def set_threshold(self, threshold):
        """Hide map values with ``|value| < threshold`` and redraw."""
        self.threshold = float(threshold)
        self.redraw()

    def set_crosshair(self, point_ras_mm):
        """Move the crosshair (all three panels) to a world point and redraw."""
        self.crosshair = np.asarray(point_ras_mm, dtype=float)
        self.redraw()

    def redraw(self):
        """Sample and draw the three panels through the crosshair."""
        limit = self.scene.map_limit
        for name, ax in self.axes.items():
            h, v, _ = PLANES[name]
            points = slice_plane(self.extent, name, self.crosshair)
            flat = points.reshape(-1, 3)
            t1 = sample_map(self.scene.t1_img, flat).reshape(points.shape[:2])
            box = (self.extent[h, 0], self.extent[h, 1], self.extent[v, 0], self.extent[v, 1])
            ax.clear()
            ax.imshow(np.nan_to_num(t1), cmap="gray", origin="lower", extent=box, vmin=self.t1_limits[0],
                      vmax=self.t1_limits[1], interpolation="bilinear")
            if self.scene.map_img is not None:
                values = map_colours(sample_map(self.scene.map_img, flat), self.threshold)
                ax.imshow(np.ma.masked_invalid(values.reshape(points.shape[:2])), cmap="RdBu_r", origin="lower",
                          extent=box, vmin=-limit, vmax=limit, alpha=0.7, interpolation="nearest")
            ax.axvline(self.crosshair[h], color="lime", linewidth=0.8)
            ax.axhline(self.crosshair[v], color="lime", linewidth=0.8)
            target = self.scene.target_ras_mm
            ax.plot([target[h]], [target[v]], "o", markersize=5, markerfacecolor="none", markeredgecolor="magenta")
            ax.set_title(f"{name} {'xyz'[PLANES[name][2]]} = {self.crosshair[PLANES[name][2]]:.1f} mm",
                         color="white", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            if name != "sagittal":
                ax.text(0.02, 0.02, "L", color="white", transform=ax.transAxes, fontsize=9)
                ax.text(0.95, 0.02, "R", color="white", transform=ax.transAxes, fontsize=9)
            else:
                ax.text(0.02, 0.02, "P", color="white", transform=ax.transAxes, fontsize=9)
                ax.text(0.95, 0.02, "A", color="white", transform=ax.transAxes, fontsize=9)
            ax.set_facecolor("black")
        self.draw_idle()

    def panel_point(self, name, horizontal_mm, vertical_mm):
        """World point (RAS mm) of a position in a panel (the fixed coordinate is the crosshair's)."""
        h, v, _ = PLANES[name]
        point = self.crosshair.copy()
        point[h], point[v] = horizontal_mm, vertical_mm
        return point

    def _clicked(self, event):
        for name, ax in self.axes.items():
            if event.inaxes is ax and event.xdata is not None:
                point = self.panel_point(name, event.xdata, event.ydata)
                if self.on_pick is not None:
                    self.on_pick(point)
                else:
                    self.set_crosshair(point)
                return
