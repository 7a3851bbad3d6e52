"""What a plan's 3D view shows, as data (no drawing): head and brain surfaces, the map, markers, the coil pose.

:func:`scene_data` turns a :class:`tmstarget.Plan` into a :class:`SceneData`
in the plan's world (RAS mm); :mod:`tmstarget.viewer.scene` draws it.

* head: the scalp of the plan's T1 (``anat/`` copy; surface code of
  :mod:`tmstarget.anatomy.scalp`); an MNI plan without a T1 gets nilearn's
  MNI152 template;
* brain: the outer surface of the map's support (the analysis mask;
  nilearn's MNI brain mask for a fixed-coordinate MNI plan), with the map
  (``delta`` for a contrast protocol, else the first Fisher-z map) sampled
  ``peel_mm`` under the surface;
* markers: the target at the cortex (the plan's ``cortical_target_ras_mm``
  on the coil axis when known, else the fMRI voxel), candidates 2..N, the
  classic targets (5-cm rule, Beam F3, BA46 of ``data/atlas.toml``; mapped
  into a native T1 through the plan's ``xfm/`` transforms, unavailable
  otherwise) and other plans' targets.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

#: Classic targets shown as baselines (keys of ``data/atlas.toml`` ``[fixed]``).
CLASSIC_SITES = ("5cm-rule", "beam-f3", "ba46")
#: Working voxel and smoothing (mm) of the displayed scalp: a quarter of the faces of the planner's 2-mm surface
#: (about 20,000 on a 1-mm T1), a quarter of the render time under software OpenGL; the coil's pose comes from
#: the plan (placed on the 2-mm surface), so the display surface may sit up to about a millimetre off it.
DISPLAY_VOXEL_MM = 3.0
#: Length of the drawn coil handle from the coil centre (mm).
HANDLE_LENGTH_MM = 75.0


@dataclasses.dataclass
class Marker:
    """A labelled point of the scene.

    Attributes
    ----------
    name : str
        Label drawn next to it.
    kind : {"target", "candidate", "classic", "compare", "live"}
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


def map_plan_points(plan, points_ras_mm, to_mni):
    """Points between MNI and the plan's world (RAS mm).

    Parameters
    ----------
    plan : tmstarget.Plan
    points_ras_mm : array-like, shape (3,) or (n, 3)
    to_mni : bool
        True: plan world -> MNI; False: MNI -> plan world.

    Returns
    -------
    points : ndarray of shape (n, 3) or None
        Unchanged for an MNI plan; through the plan's ``xfm/`` T1w <-> MNI
        transforms (antspyx) for a native plan; None when the plan stores no
        such transform.
    reason : str
        Why ``points`` is None ("" otherwise).
    """
    points = np.atleast_2d(np.asarray(points_ras_mm, dtype=float))
    if plan.space.startswith("MNI"):
        return points, ""
    specs = [name for name in plan.files if name.startswith("xfm/") and "_from-T1w_to-MNI" in name
             and name.endswith("_xfm.json")]
    if not specs:
        return None, f"the plan stores no T1w -> MNI transform (space {plan.space})"
    from tmstarget.spaces import map_points_ras

    spec = json.loads(plan.files[specs[0]])
    # "fwd" resamples T1w images onto the MNI grid, so as a point map it takes MNI points to T1w; "inv" the reverse
    chain = spec["inv" if to_mni else "fwd"]
    with tempfile.TemporaryDirectory(prefix="tmstarget-viewer-xfm-") as scratch:
        for entry in chain:
            (Path(scratch) / entry["file"]).write_bytes(plan.files[f"xfm/{entry['file']}"])
        mapped = map_points_ras(points, [Path(scratch) / entry["file"] for entry in chain],
                                [entry["invert"] for entry in chain])
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
    mapped, reason = map_plan_points(plan, [fixed[site]["mni_mm"] for site in sites], to_mni=False)
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
    head = scalp_surface(t1, voxel_mm=DISPLAY_VOXEL_MM, smoothing_mm=DISPLAY_VOXEL_MM)
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


def t1_scene_data(t1_img):
    """The scene of a T1 alone (live mode before any plan): its scalp, no brain or map, and a ``live target``
    marker (kind ``"live"``) at the head's centre until the watcher places it."""
    from tmstarget.anatomy.scalp import scalp_surface

    head = scalp_surface(t1_img, voxel_mm=DISPLAY_VOXEL_MM, smoothing_mm=DISPLAY_VOXEL_MM)
    centre = np.asarray(head.centroid_ras_mm, dtype=float)
    return SceneData(None, t1_img, head, "the watcher's T1", None, None, None, "no plan yet", centre, None, None,
                     [Marker("live target", "live", centre.copy())])


# --------------------------------------------------------------------------
# geometry helpers
# --------------------------------------------------------------------------

def handle_end_ras_mm(pose_ras, length_mm=HANDLE_LENGTH_MM):
    """End of the drawn handle: ``centre + length_mm * handle``, handle = ``-pose_ras[:3, 1]`` (RAS mm)."""
    pose = np.asarray(pose_ras, dtype=float)
    return pose[:3, 3] - length_mm * pose[:3, 1]

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
