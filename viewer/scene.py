"""The viewer's 3D scene drawn with pyvista, no Qt: off-screen (report figure) or in the Qt window.

:func:`build_scene` draws a :class:`~tmstarget.viewer.content.SceneData` (or a
plan, through :func:`~tmstarget.viewer.content.scene_data`) on any pyvista
plotter: an off-screen ``pyvista.Plotter`` (:func:`render_png`, the report's
3D figure) or the Qt window's ``QtInteractor`` (:mod:`tmstarget.viewer.app`).

* the head semi-transparent; the brain with the map (``RdBu_r``, symmetric
  limits; ``|value| < threshold`` grey), sampled ``peel_mm`` under it;
* markers flat-shaded in one colour each (``TARGET_RGB``, ...) in an overlay
  layer sharing the camera, so the head never hides them and a screenshot can
  be searched for their colour;
* the coil at its pose: a figure-8 outline (two wings along the coil's x
  axis) at the scalp point, the handle along ``-y`` (SimNIBS convention,
  ``handle_ras = -pose_ras[:3, 1]``), the coil axis as a line from the centre
  to the target, and the scalp-to-cortex depth as a label.

Screen geometry for tests and picking: :func:`world_to_screen` gives the
pixel (column, row from the top) of world points for the current camera.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tmstarget.viewer.content import (
    SceneData,
    default_camera,
    handle_end_ras_mm,
    map_colours,
    peeled_points,
    sample_map,
    scene_data,
)

#: Flat marker colours (RGB 0-255), unique in the scene so a screenshot can be searched for them.
TARGET_RGB = (255, 0, 255)
CANDIDATE_RGB = (255, 140, 0)
CLASSIC_RGB = (0, 200, 255)
COMPARE_RGB = (120, 255, 0)
LIVE_RGB = (0, 255, 0)
COIL_RGB = (30, 60, 200)
HANDLE_RGB = (255, 230, 0)
AXIS_RGB = (255, 255, 255)
SCALP_RGB = (230, 190, 160)
CROSSHAIR_RGB = (255, 255, 255)

#: Figure-8 geometry (mm): wing radius, wing centre offset along the coil x axis.
WING_RADIUS_MM = 22.0
WING_OFFSET_MM = 23.0
#: Marker radii (mm).
TARGET_RADIUS_MM = 4.0
SMALL_RADIUS_MM = 2.5

# --------------------------------------------------------------------------
# geometry helpers
# --------------------------------------------------------------------------


def coil_polydata(pose_ras):
    """The figure-8 outline and the handle of a coil as pyvista meshes, in world RAS mm.

    Parameters
    ----------
    pose_ras : ndarray, shape (4, 4)
        SimNIBS pose: wings centred at ``centre +/- WING_OFFSET_MM * x`` in the
        coil plane (x, y), handle from the centre along ``-y``.

    Returns
    -------
    wings : pyvista.PolyData
        Two circles (lines).
    handle : pyvista.PolyData
        A tube from the centre to :func:`handle_end_ras_mm`.
    """
    import pyvista as pv

    pose = np.asarray(pose_ras, dtype=float)
    x, y, centre = pose[:3, 0], pose[:3, 1], pose[:3, 3]
    angles = np.linspace(0, 2 * np.pi, 73)
    loops = []
    for side in (-1.0, 1.0):
        wing = centre + side * WING_OFFSET_MM * x
        ring = wing + WING_RADIUS_MM * (np.cos(angles)[:, None] * x + np.sin(angles)[:, None] * y)
        loops.append(pv.lines_from_points(ring).tube(radius=1.2))
    wings = loops[0].merge(loops[1])
    handle = pv.Line(centre, handle_end_ras_mm(pose)).tube(radius=3.0, n_sides=16)
    return wings, handle


def world_to_screen(plotter, points_ras_mm):
    """Pixel positions of world points for the plotter's current camera.

    Parameters
    ----------
    plotter : pyvista.Plotter or pyvistaqt.QtInteractor
    points_ras_mm : array-like, shape (3,) or (n, 3)

    Returns
    -------
    ndarray, shape (n, 2)
        (column, row) in the screenshot, row 0 at the top, in pixels.
    """
    renderer = plotter.renderer
    height = plotter.window_size[1]
    out = []
    for point in np.atleast_2d(np.asarray(points_ras_mm, dtype=float)):
        renderer.SetWorldPoint(*point, 1.0)
        renderer.WorldToDisplay()
        x, y, _ = renderer.GetDisplayPoint()
        out.append((x, height - 1 - y))
    return np.asarray(out, dtype=float)


# --------------------------------------------------------------------------
# drawing
# --------------------------------------------------------------------------


def _surface_polydata(mesh, points=None):
    import pyvista as pv

    faces = np.hstack([np.full((len(mesh.faces), 1), 3), mesh.faces]).ravel()
    return pv.PolyData(mesh.vertices_ras_mm.copy() if points is None else points, faces)


class OverlayLayer:
    """A second renderer layer sharing the plotter's camera: its actors are drawn over the scene (markers)."""

    def __init__(self, plotter):
        from vtkmodules.vtkRenderingCore import vtkRenderer  # not ``import vtk``: that loads every VTK module

        self.renderer = vtkRenderer()
        self.renderer.SetLayer(1)
        self.renderer.InteractiveOff()
        self.renderer.SetActiveCamera(plotter.renderer.GetActiveCamera())
        window = plotter.render_window
        window.SetNumberOfLayers(max(2, window.GetNumberOfLayers()))
        window.AddRenderer(self.renderer)

    def add(self, mesh, rgb):
        """Add a flat-shaded mesh (one exact colour whatever the lighting); returns its vtkActor."""
        from vtkmodules.vtkRenderingCore import vtkActor, vtkPolyDataMapper

        mapper = vtkPolyDataMapper()
        mapper.SetInputData(mesh)
        mapper.ScalarVisibilityOff()
        actor = vtkActor()
        actor.SetMapper(mapper)
        prop = actor.GetProperty()
        prop.SetColor(*(c / 255.0 for c in rgb))
        prop.LightingOff()
        self.renderer.AddActor(actor)
        return actor


class Scene:
    """A :class:`SceneData` drawn on a pyvista plotter, with the handles the viewer changes.

    Parameters
    ----------
    data : SceneData
    plotter : pyvista.Plotter or pyvistaqt.QtInteractor
    threshold : float
        Map values with ``|value|`` below this are grey.
    head_opacity : float
        Opacity of the scalp (0..1).
    peel_mm : float
        Depth under the brain surface at which the map is sampled (and the
        surface drawn), mm.
    labels : bool
        Draw the markers' names and the depth label.
    """

    def __init__(self, data, plotter, *, threshold=0.0, head_opacity=0.3, peel_mm=0.0, labels=True):
        import pyvista as pv

        self.data, self.plotter = data, plotter
        self.threshold, self.peel_mm = float(threshold), float(peel_mm)
        plotter.set_background("black")
        # one translucent surface (the scalp) drawn after the opaque ones needs no order-independent
        # transparency pass: plain blending, about a third less render time under software OpenGL
        plotter.renderer.SetUseOIT(False)
        self.overlay = OverlayLayer(plotter)
        self.head_actor = plotter.add_mesh(_surface_polydata(data.head), color=[c / 255 for c in SCALP_RGB],
                                           opacity=head_opacity, smooth_shading=True, name="head", pickable=True)
        self.brain_mesh = self.brain_actor = None
        if data.brain is not None:
            self.brain_mesh = _surface_polydata(data.brain, peeled_points(data.brain, self.peel_mm))
            if data.map_img is not None:
                limit = data.map_limit
                self.brain_mesh["map"] = self._brain_values()
                self.brain_actor = plotter.add_mesh(
                    self.brain_mesh, scalars="map", cmap="RdBu_r", clim=(-limit, limit), nan_color="lightgrey",
                    smooth_shading=True, name="brain", pickable=True,
                    scalar_bar_args={"title": data.map_name, "color": "white", "vertical": True,
                                     "position_x": 0.88, "position_y": 0.1, "height": 0.5, "width": 0.06})
            else:
                self.brain_actor = plotter.add_mesh(self.brain_mesh, color="lightgrey", smooth_shading=True,
                                                    name="brain", pickable=True)
        self.marker_actors = {}
        self.crosshair_actor = None
        label_points, label_text = [], []
        for marker in data.markers:
            if marker.ras_mm is None:
                continue
            radius = TARGET_RADIUS_MM if marker.kind in ("target", "live") else SMALL_RADIUS_MM
            rgb = {"target": TARGET_RGB, "candidate": CANDIDATE_RGB, "classic": CLASSIC_RGB,
                   "compare": COMPARE_RGB, "live": LIVE_RGB}[marker.kind]
            actor = self.overlay.add(pv.Sphere(radius=radius, center=marker.ras_mm, theta_resolution=24,
                                               phi_resolution=24), rgb)
            self.marker_actors[marker.name] = actor
            if marker.kind not in ("candidate", "live"):
                label_points.append(marker.ras_mm)
                label_text.append(marker.name)
        if labels and label_points:
            plotter.add_point_labels(np.asarray(label_points), label_text, font_size=12, text_color="white",
                                     shape=None, show_points=False, always_visible=True, name="marker-labels")
        self.labels = labels
        self.pose_ras = None if data.pose_ras is None else data.pose_ras.copy()
        self.depth_mm = data.depth_mm
        if self.pose_ras is not None:
            self.set_pose(self.pose_ras, self.depth_mm, render=False)

    def _brain_values(self):
        return map_colours(sample_map(self.data.map_img, peeled_points(self.data.brain, self.peel_mm)),
                           self.threshold)

    def set_pose(self, pose_ras, depth_mm=None, render=True):
        """Draw (or move) the coil at ``pose_ras``; the axis line runs from the centre along z to the target's
        depth (through the target for the plan's pose)."""
        import pyvista as pv

        self.pose_ras, self.depth_mm = np.asarray(pose_ras, dtype=float), depth_mm
        wings, handle = coil_polydata(self.pose_ras)
        colour = [c / 255 for c in COIL_RGB]
        self.plotter.add_mesh(wings, color=colour, name="coil-wings", pickable=False, lighting=False)
        self.plotter.add_mesh(handle, color=[c / 255 for c in HANDLE_RGB], name="coil-handle", pickable=False,
                              lighting=False)
        centre, z = self.pose_ras[:3, 3], self.pose_ras[:3, 2]
        reach = max(10.0, float((self.data.target_ras_mm - centre) @ z))  # down to the target's depth
        self.plotter.add_mesh(pv.Line(centre, centre + reach * z), color=[c / 255 for c in AXIS_RGB],
                              line_width=3, name="coil-axis", pickable=False)
        if self.labels and depth_mm is not None:
            beside = centre + (WING_OFFSET_MM + WING_RADIUS_MM + 5.0) * self.pose_ras[:3, 0]  # off the axis
            self.plotter.add_point_labels([beside], [f"depth {depth_mm:.1f} mm"], font_size=12,
                                          text_color="yellow", shape=None, show_points=False, always_visible=True,
                                          name="depth-label")
        if render:
            self.plotter.render()

    def set_threshold(self, threshold, render=True):
        """Grey out map values with ``|value| < threshold``."""
        self.threshold = float(threshold)
        self._update_brain(render)

    def set_peel(self, peel_mm, render=True):
        """Show the brain surface and the map ``peel_mm`` under the map support's outer surface."""
        self.peel_mm = float(peel_mm)
        if self.brain_mesh is not None:
            self.brain_mesh.points = peeled_points(self.data.brain, self.peel_mm)
        self._update_brain(render)

    def _update_brain(self, render):
        if self.brain_mesh is not None and self.data.map_img is not None:
            self.brain_mesh["map"] = self._brain_values()
        if render:
            self.plotter.render()

    def set_head_opacity(self, opacity, render=True):
        """Scalp opacity, 0 (hidden) .. 1 (opaque)."""
        self.head_actor.GetProperty().SetOpacity(float(opacity))
        if render:
            self.plotter.render()

    def move_marker(self, name, ras_mm, render=True):
        """Move a marker (the live target) to a new world point."""
        actor = self.marker_actors.get(name)
        if actor is None:
            return
        marker = next(m for m in self.data.markers if m.name == name)
        actor.SetPosition(*(np.asarray(ras_mm, dtype=float) - marker.ras_mm))
        if render:
            self.plotter.render()

    def set_crosshair(self, ras_mm, render=True):
        """Show the crosshair point (a small white marker over the scene) at a world point."""
        import pyvista as pv

        point = np.asarray(ras_mm, dtype=float)
        if self.crosshair_actor is None:
            self.crosshair_actor = self.overlay.add(pv.Sphere(radius=1.5, center=(0.0, 0.0, 0.0)), CROSSHAIR_RGB)
        self.crosshair_actor.SetPosition(*point)
        if render:
            self.plotter.render()

    def set_camera(self, camera=None):
        """``camera = (position, focal_point, view_up)``; default :func:`default_camera`."""
        self.plotter.camera_position = default_camera(self.data) if camera is None else camera
        self.plotter.renderer.ResetCameraClippingRange()


def build_scene(plan_or_data, plotter, *, compare=(), camera=None, **options):
    """Draw a plan's scene on a pyvista plotter.

    Parameters
    ----------
    plan_or_data : tmstarget.Plan, SceneData, or str or Path of a plan folder
    plotter : pyvista.Plotter or pyvistaqt.QtInteractor
    compare : sequence of tmstarget.Plan
        Other plans' targets to mark (ignored when a SceneData is given).
    camera : tuple, optional
        ``(position, focal_point, view_up)``; default :func:`default_camera`.
    **options
        ``threshold``, ``head_opacity``, ``peel_mm``, ``labels`` of :class:`Scene`.

    Returns
    -------
    Scene
    """
    if isinstance(plan_or_data, (str, Path)):
        import tmstarget

        plan_or_data = tmstarget.load_plan(plan_or_data)
    data = plan_or_data if isinstance(plan_or_data, SceneData) else scene_data(plan_or_data, compare)
    scene = Scene(data, plotter, **options)
    scene.set_camera(camera)
    return scene


def render_png(plan_or_data, path=None, *, size=(800, 600), camera=None, **options):
    """Render a plan's 3D scene off-screen (no window); optionally write it as a PNG.

    Parameters
    ----------
    plan_or_data : tmstarget.Plan, SceneData, or str or Path of a plan folder
    path : str or Path, optional
        PNG written (atomically) when given.
    size : (int, int)
        Width and height in pixels.
    camera : tuple, optional
        ``(position, focal_point, view_up)``; default :func:`default_camera`.
    **options
        Options of :class:`Scene` (``threshold``, ``head_opacity``, ``peel_mm``, ``labels``).

    Returns
    -------
    ndarray, shape (height, width, 3), uint8
        The image.
    """
    import pyvista as pv

    if not os.environ.get("DISPLAY"):
        # VTK tries X first and warns "bad X server connection" before its off-screen fallback renders fine
        from vtkmodules.vtkCommonCore import vtkLogger

        vtkLogger.SetStderrVerbosity(vtkLogger.VERBOSITY_ERROR)
    plotter = pv.Plotter(off_screen=True, window_size=list(size))
    # no multisample anti-aliasing (pyvista's theme asks for 8 samples): under software OpenGL it cost 0.35 s of
    # the 0.43 s a 640 x 480 report view took to draw, for edges barely smoother (issue 19)
    plotter.render_window.SetMultiSamples(0)
    try:
        build_scene(plan_or_data, plotter, camera=camera, **options)
        image = plotter.screenshot(return_img=True)
    finally:
        plotter.close()
    if path is not None:
        write_png(path, image)
    return image


def write_png(path, image, metadata=None):
    """Write an RGB(A) uint8 image as a PNG, atomically (:mod:`tmstarget._fileio`).

    ``metadata`` (str -> str) goes into PNG text chunks (e.g. the camera, for tests and provenance).
    """
    import io

    from PIL import Image, PngImagePlugin

    from tmstarget._fileio import write_bytes_atomic

    info = PngImagePlugin.PngInfo()
    for key, value in (metadata or {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG", optimize=True, pnginfo=info)
    write_bytes_atomic(Path(path), buffer.getvalue())
