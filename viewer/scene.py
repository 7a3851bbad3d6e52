"""The viewer's 3D scene: what a plan shows (as data), drawn with pyvista, no Qt.

:func:`scene_data` turns a :class:`tmstarget.Plan` into a :class:`SceneData`
(meshes, map, markers, coil pose; world RAS mm of the plan), and
:func:`build_scene` adds it to any pyvista plotter: an off-screen
``pyvista.Plotter`` (:func:`render_png`, the report's 3D figure) or the Qt
window's ``QtInteractor`` (:mod:`tmstarget.viewer.app`).

What is drawn:

* the head: the scalp of the plan's T1 (``anat/`` copy; surface code of
  :mod:`tmstarget.anatomy.scalp`), semi-transparent; an MNI plan without a T1
  gets nilearn's MNI152 template as head;
* the brain: the outer surface of the map's support (the analysis mask;
  nilearn's MNI brain mask for a fixed-coordinate MNI plan), with the map
  (``delta`` for a contrast protocol, else the map the target was scored on)
  painted on it, sampled ``peel_mm`` under the surface; values with
  ``|value| < threshold`` are grey;
* markers, flat-shaded in one colour each and drawn in an overlay layer so
  the head never hides them: the target (at the cortex: the plan's
  ``cortical_target_ras_mm`` on the coil axis when known, else the fMRI
  voxel), candidates 2..N smaller, the classic targets (5-cm rule, Beam F3,
  BA46 of ``data/atlas.toml``; mapped into a native T1 through the plan's
  ``xfm/`` transforms, unavailable otherwise), other plans' targets;
* the coil at its pose: a figure-8 outline (two wings along the coil's x
  axis) at the scalp point, the handle along ``-y`` (SimNIBS convention,
  ``handle_ras = -pose_ras[:3, 1]``), the coil axis as a line from the centre
  to the target, and the scalp-to-cortex depth as a label.

Screen geometry for tests and picking: :func:`world_to_screen` gives the
pixel (column, row from the top) of world points for the current camera.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

logger = logging.getLogger(__name__)

#: Flat marker colours (RGB 0-255), unique in the scene so a screenshot can be searched for them.
TARGET_RGB = (255, 0, 255)
CANDIDATE_RGB = (255, 140, 0)
CLASSIC_RGB = (0, 200, 255)
COMPARE_RGB = (120, 255, 0)
COIL_RGB = (30, 60, 200)
HANDLE_RGB = (255, 230, 0)
AXIS_RGB = (255, 255, 255)
SCALP_RGB = (230, 190, 160)

#: Figure-8 geometry (mm): wing radius, wing centre offset along the coil x axis, handle length from the centre.
WING_RADIUS_MM = 22.0
WING_OFFSET_MM = 23.0
HANDLE_LENGTH_MM = 75.0
#: Classic targets shown as baselines (keys of ``data/atlas.toml`` ``[fixed]``).
CLASSIC_SITES = ("5cm-rule", "beam-f3", "ba46")
#: Marker radii (mm).
TARGET_RADIUS_MM = 4.0
SMALL_RADIUS_MM = 2.5


@dataclasses.dataclass
class Marker:
    """A labelled point of the scene.

    Attributes
    ----------
    name : str
        Label drawn next to it.
    kind : {"target", "candidate", "classic", "compare"}
    ras_mm : ndarray of shape (3,) or None
        World RAS mm of the plan; None when it cannot be placed in this world
        (``reason`` says why).
    reason : str
        Why ``ras_mm`` is None ("" otherwise).
    """

    name: str
    kind: str
    ras_mm: np.ndarray | None
    reason: str = ""


@dataclasses.dataclass
class SceneData:
    """Everything the 3D view and the slices show for one plan (world RAS mm of the plan).

    Attributes
    ----------
    plan : tmstarget.Plan
    t1_img : nibabel.Nifti1Image or None
        The plan's T1 (or the MNI template for an MNI plan without one).
    head : tmstarget.anatomy.scalp.SurfaceMesh
        Scalp of ``t1_img``.
    head_source : str
        ``"plan T1 (anat/...)"`` or ``"MNI152 template (nilearn)"``.
    brain : SurfaceMesh or None
        Outer surface of the map's support (None when no map is in this world).
    map_img : nibabel image or None
        The map painted on the brain and overlaid on the slices.
    map_name : str or None
        Its key in ``plan.maps``.
    map_note : str
        Why there is no map, when there is none.
    target_ras_mm : ndarray, shape (3,)
        Where the target marker is drawn (the cortical point when known).
    pose_ras : ndarray of shape (4, 4) or None
        The coil pose (SimNIBS axes), None without a coil.
    depth_mm : float or None
        The plan's scalp-to-cortex depth.
    markers : list of Marker
        Target, candidates, classic targets and compared plans' targets.
    """

    plan: object
    t1_img: object
    head: object
    head_source: str
    brain: object
    map_img: object
    map_name: str | None
    map_note: str
    target_ras_mm: np.ndarray
    pose_ras: np.ndarray | None
    depth_mm: float | None
    markers: list

    @property
    def map_limit(self):
        """Symmetric colour limit of the map: its largest absolute value (1 without a map)."""
        if self.map_img is None:
            return 1.0
        data = np.asarray(self.map_img.dataobj, dtype=float)
        value = float(np.nanmax(np.abs(data))) if np.isfinite(data).any() else 0.0
        return value if value > 0 else 1.0


# --------------------------------------------------------------------------
# the plan's content
# --------------------------------------------------------------------------


def plan_t1(plan):
    """The T1 a plan's coordinates and coil refer to (its ``anat/`` copy) as a nibabel image, or None."""
    anatomy = plan.anatomy
    if not anatomy or anatomy.get("t1") not in plan.files:
        return None
    data = plan.files[anatomy["t1"]]
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return nib.Nifti1Image.from_bytes(data)


def map_choice(plan):
    """Key of the map the viewer paints: ``delta`` for a contrast, else the first Fisher-z map; None when none."""
    if "delta" in plan.maps:
        return "delta"
    return next(iter(sorted(plan.maps)), None)


def _map_in_plan_world(plan, name):
    """Whether map ``name``'s grid is in the plan's world (an fMRIPrep T1w plan keeps its maps on the MNI grid)."""
    return f"_space-{plan.space}_" in plan.document["images"]["maps"][name]


def target_marker_ras_mm(plan):
    """Where the target marker goes: the plan's cortical point on the coil axis when known, else the fMRI voxel."""
    coil = plan.coil or {}
    point = coil.get("cortical_target_ras_mm")
    return np.asarray(point if point is not None else plan.target.ras_mm, dtype=float)


def _mni_to_plan_world(plan, points_mni):
    """MNI points in the plan's world: as they are for an MNI plan; through the plan's ``xfm/`` T1w<->MNI
    transforms for a native plan; None (with the reason) when the plan stores no such transform."""
    points = np.atleast_2d(np.asarray(points_mni, dtype=float))
    if plan.space.startswith("MNI"):
        return points, ""
    specs = [name for name in plan.files if name.startswith("xfm/") and "_from-T1w_to-MNI" in name
             and name.endswith("_xfm.json")]
    if not specs:
        return None, f"the plan stores no T1w -> MNI transform (space {plan.space})"
    from tmstarget.spaces import map_points_ras

    spec = json.loads(plan.files[specs[0]])
    with tempfile.TemporaryDirectory(prefix="tmstarget-viewer-xfm-") as scratch:
        for name, data in plan.files.items():
            if name.startswith("xfm/"):
                (Path(scratch) / Path(name).name).write_bytes(data)
        # "fwd" resamples T1w images onto the MNI grid, so as a point map it takes MNI points to T1w
        files = [Path(scratch) / entry["file"] for entry in spec["fwd"]]
        mapped = map_points_ras(points, files, [entry["invert"] for entry in spec["fwd"]])
    return mapped, ""


def classic_markers(plan, sites=CLASSIC_SITES):
    """The classic targets (``data/atlas.toml`` ``[fixed]``) as markers in the plan's world.

    Parameters
    ----------
    plan : tmstarget.Plan
    sites : sequence of str
        Keys of the atlas's ``[fixed]`` table.

    Returns
    -------
    list of Marker
        ``ras_mm`` None (with the reason) when the plan's world cannot be
        reached from MNI.
    """
    from tmstarget.analysis.rois import load_atlas

    fixed = load_atlas()["fixed"]
    mapped, reason = _mni_to_plan_world(plan, [fixed[site]["mni_mm"] for site in sites])
    return [Marker(site, "classic", None if mapped is None else mapped[i], reason) for i, site in enumerate(sites)]


def compare_markers(plan, others):
    """Targets of other plans (``--compare``) as markers in ``plan``'s world.

    A plan in the same space gives its ``ras_mm``; in an MNI plan, another
    plan's ``mni_mm``; otherwise the marker is unavailable (the two T1 worlds
    are not known to agree).
    """
    markers = []
    for other in others:
        name = f"{other.document['protocol']} ({other.target.name})"
        if other.space == plan.space and other.anatomy and plan.anatomy and \
                other.anatomy.get("t1_sha256") == plan.anatomy.get("t1_sha256"):
            markers.append(Marker(name, "compare", target_marker_ras_mm(other)))
        elif plan.space.startswith("MNI") and other.target.mni_mm is not None:
            markers.append(Marker(name, "compare", np.asarray(other.target.mni_mm, dtype=float)))
        else:
            markers.append(Marker(name, "compare", None, f"{other.space} plan on another T1: not in this world"))
    return markers


def scene_data(plan, compare=(), classic=True):
    """Build the scene of a plan: head, brain with map, markers and coil (world RAS mm of the plan).

    Parameters
    ----------
    plan : tmstarget.Plan
        A loaded or freshly computed plan.
    compare : sequence of tmstarget.Plan
        Other plans whose targets are shown as labelled markers.
    classic : bool
        Add the classic targets (5-cm rule, Beam F3, BA46).

    Returns
    -------
    SceneData

    Raises
    ------
    tmstarget.errors.InputError
        A T1w plan without its T1 (nothing to draw the head from).
    """
    from tmstarget.anatomy.scalp import mask_surface, scalp_surface
    from tmstarget.errors import InputError

    t1 = plan_t1(plan)
    if t1 is not None:
        source = f"plan T1 ({plan.anatomy['t1']})"
    elif plan.space.startswith("MNI"):
        from nilearn.datasets import load_mni152_template

        t1, source = load_mni152_template(resolution=2), "MNI152 template (nilearn)"
    else:
        raise InputError(f"a {plan.space} plan without its T1 (anatomy.t1 not in the plan folder): no head to draw")
    head = scalp_surface(t1)
    name = map_choice(plan)
    map_img, note, brain = None, "", None
    if name is None:
        note = "fixed-coordinate plan: no connectivity map"
    elif not _map_in_plan_world(plan, name):
        note = f"the maps are on the MNI grid, not in this plan's {plan.space} world: not drawn"
    else:
        map_img = plan.maps[name]
    if map_img is not None:
        data = np.asarray(map_img.dataobj, dtype=float)
        support = nib.Nifti1Image((np.isfinite(data) & (data != 0)).astype(np.uint8), map_img.affine)
        smoothing = float(np.mean(nib.affines.voxel_sizes(map_img.affine)))
        brain = mask_surface(support, smoothing_mm=smoothing)
    elif plan.space.startswith("MNI"):
        from nilearn.datasets import load_mni152_brain_mask

        brain = mask_surface(load_mni152_brain_mask(resolution=2), smoothing_mm=2.0)
    markers = [Marker("target", "target", target_marker_ras_mm(plan))]
    markers += [Marker(f"#{c.rank}", "candidate", np.asarray(c.ras_mm, dtype=float)) for c in plan.candidates[1:]]
    if classic:
        markers += classic_markers(plan)
    markers += compare_markers(plan, compare)
    coil = plan.coil
    pose = None if coil is None else np.asarray(coil["matrix"], dtype=float)
    depth = None if coil is None else coil.get("scalp_to_cortex_mm")
    return SceneData(plan, t1, head, source, brain, map_img, name, note, target_marker_ras_mm(plan), pose, depth,
                     markers)


# --------------------------------------------------------------------------
# geometry helpers
# --------------------------------------------------------------------------


def handle_end_ras_mm(pose_ras, length_mm=HANDLE_LENGTH_MM):
    """End of the drawn handle: ``centre + length_mm * handle``, handle = ``-pose_ras[:3, 1]`` (RAS mm)."""
    pose = np.asarray(pose_ras, dtype=float)
    return pose[:3, 3] - length_mm * pose[:3, 1]


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


def peeled_points(mesh, peel_mm):
    """Vertices of a surface moved ``peel_mm`` inward along their normals (RAS mm)."""
    return mesh.vertices_ras_mm - float(peel_mm) * mesh.normals_ras


def sample_map(img, points_ras_mm):
    """Trilinear values of a 3-D image at world points (NaN outside its grid)."""
    from scipy.ndimage import map_coordinates

    data = np.asarray(img.dataobj, dtype=float)
    ijk = nib.affines.apply_affine(np.linalg.inv(img.affine), np.asarray(points_ras_mm, dtype=float))
    return map_coordinates(data, ijk.T, order=1, mode="constant", cval=np.nan)


def map_colours(values, threshold):
    """Map values for the brain surface: NaN (drawn grey) where ``|value| < threshold`` or outside the map."""
    values = np.asarray(values, dtype=float).copy()
    values[~(np.abs(values) >= threshold)] = np.nan
    return values


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


def default_camera(scene, distance_mm=420.0):
    """A camera looking at the target from outside, along the coil axis (or from the left-anterior-superior
    side without a coil), head superior up: ``(position, focal_point, view_up)``."""
    focal = np.asarray(scene.target_ras_mm, dtype=float)
    if scene.pose_ras is not None:
        outward = -scene.pose_ras[:3, 2]
    else:
        outward = focal - scene.head.centroid_ras_mm
        if np.linalg.norm(outward) < 1e-6:
            outward = np.array([-1.0, 1.0, 1.0])
    outward = outward / np.linalg.norm(outward)
    up = np.array([0.0, 0.0, 1.0])
    if abs(outward @ up) > 0.95:
        up = np.array([0.0, 1.0, 0.0])
    return tuple(focal + distance_mm * outward), tuple(focal), tuple(up)


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
        import vtk

        self.renderer = vtk.vtkRenderer()
        self.renderer.SetLayer(1)
        self.renderer.InteractiveOff()
        self.renderer.SetActiveCamera(plotter.renderer.GetActiveCamera())
        window = plotter.render_window
        window.SetNumberOfLayers(max(2, window.GetNumberOfLayers()))
        window.AddRenderer(self.renderer)

    def add(self, mesh, rgb):
        """Add a flat-shaded mesh (one exact colour whatever the lighting); returns its vtkActor."""
        import vtk

        mapper = vtk.vtkPolyDataMapper()
        mapper.SetInputData(mesh)
        mapper.ScalarVisibilityOff()
        actor = vtk.vtkActor()
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
        label_points, label_text = [], []
        for marker in data.markers:
            if marker.ras_mm is None:
                continue
            radius = TARGET_RADIUS_MM if marker.kind == "target" else SMALL_RADIUS_MM
            rgb = {"target": TARGET_RGB, "candidate": CANDIDATE_RGB, "classic": CLASSIC_RGB,
                   "compare": COMPARE_RGB}[marker.kind]
            actor = self.overlay.add(pv.Sphere(radius=radius, center=marker.ras_mm, theta_resolution=24,
                                               phi_resolution=24), rgb)
            self.marker_actors[marker.name] = actor
            if marker.kind != "candidate":
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
        """Draw (or move) the coil at ``pose_ras``; the axis line runs from the centre to the target."""
        import pyvista as pv

        self.pose_ras, self.depth_mm = np.asarray(pose_ras, dtype=float), depth_mm
        wings, handle = coil_polydata(self.pose_ras)
        colour = [c / 255 for c in COIL_RGB]
        self.plotter.add_mesh(wings, color=colour, name="coil-wings", pickable=False, lighting=False)
        self.plotter.add_mesh(handle, color=[c / 255 for c in HANDLE_RGB], name="coil-handle", pickable=False,
                              lighting=False)
        centre = self.pose_ras[:3, 3]
        self.plotter.add_mesh(pv.Line(centre, self.data.target_ras_mm), color=[c / 255 for c in AXIS_RGB],
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

    def set_camera(self, camera=None):
        """``camera = (position, focal_point, view_up)``; default :func:`default_camera`."""
        self.plotter.camera_position = default_camera(self.data) if camera is None else camera
        self.plotter.renderer.ResetCameraClippingRange()


def build_scene(plan_or_data, plotter, *, compare=(), camera=None, **options):
    """Draw a plan's scene on a pyvista plotter.

    Parameters
    ----------
    plan_or_data : tmstarget.Plan or SceneData
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
    data = plan_or_data if isinstance(plan_or_data, SceneData) else scene_data(plan_or_data, compare)
    scene = Scene(data, plotter, **options)
    scene.set_camera(camera)
    return scene


def render_png(plan_or_data, path=None, *, size=(800, 600), camera=None, **options):
    """Render a plan's 3D scene off-screen (no window); optionally write it as a PNG.

    Parameters
    ----------
    plan_or_data : tmstarget.Plan or SceneData
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

    plotter = pv.Plotter(off_screen=True, window_size=list(size))
    try:
        build_scene(plan_or_data, plotter, camera=camera, **options)
        image = plotter.screenshot(return_img=True)
    finally:
        plotter.close()
    if path is not None:
        write_png(path, image)
    return image


def write_png(path, image):
    """Write an RGB(A) uint8 image as a PNG, atomically (:mod:`tmstarget._fileio`)."""
    import io

    from PIL import Image

    from tmstarget._fileio import write_bytes_atomic

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG", optimize=True)
    write_bytes_atomic(Path(path), buffer.getvalue())
