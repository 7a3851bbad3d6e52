"""The coil over a target: scalp point, handle direction, pose and scalp-to-cortex depth.

Everything is in the **world RAS frame of the T1 file, in mm**, on the scalp
surface of :mod:`tmstarget.anatomy.scalp` (a :class:`~tmstarget.anatomy.scalp.SurfaceMesh`).

Coil poses follow the SimNIBS convention of ``shared/specs/navigation-formats.md``
§1.5 and §2: a 4x4 matrix whose columns 0-2 are the unit coil axes x, y, z and
column 3 the coil centre; z is the coil normal **into** the head, y points
**away** from the handle (the handle direction is ``handle_ras = -pose_ras[:3, 1]``),
x = y × z, det +1.  Poses are never pushed through a warp (§1.4): build them
here, on the scalp of the T1 the navigator loads.

Order of operations (``place_coil``), after the scalp surface:

1. ``scalp_point``: "closest" = closest point of the mesh to the target;
   "normal" = the scalp point whose smoothed outward normal (faces within
   ``normal_radius_mm``) passes through the target (fixed-point iteration of
   ray casts from the target, started at the closest point).
2. ``coil_pose``: centre = scalp point + ``distance_mm`` along the outward
   normal; z = minus the smoothed scalp normal (``z_axis="normal"``, coil flat on
   the scalp) or the unit vector from the centre to the target
   (``z_axis="target"``); the handle (a rule from ``handle_direction`` or an
   explicit vector) is projected into the plane normal to z; y = -handle;
   x = y × z.
3. ``scalp_to_cortex_mm``: distance along the coil axis (z) from the scalp
   point to where it enters the cortex mask (grey or white matter of this T1,
   :mod:`tmstarget.anatomy.tissue`; its outer boundary is the pial surface), or
   to the target without a mask.
4. ``cortical_point`` (with a :class:`~tmstarget.anatomy.tissue.TissueMaps`):
   the tissue at the target, and the grey-matter point on the coil axis
   nearest to the target. Moving the target along the coil axis leaves the
   scalp point, the normal and so the whole pose unchanged.
"""

import logging
from dataclasses import dataclass

import numpy as np
from nibabel.affines import apply_affine
from scipy import ndimage

from tmstarget.anatomy.scalp import as_point, closest_point, load_3d, ray_hits, surface_normal
from tmstarget.errors import InputError, OrientationError
from tmstarget.spaces import pose_from_axes

logger = logging.getLogger(__name__)

#: Handle angle of the DLPFC rule, degrees from the posterior midline direction
#: toward the lateral side of the target's hemisphere.
DLPFC_HANDLE_ANGLE_DEG = 45.0

_SCALP_METHODS = ("closest", "normal")
_Z_AXES = ("normal", "target")
_HANDLE_RULES = ("auto", "dlpfc", "midline")


# --------------------------------------------------------------------------
# the scalp point above a target
# --------------------------------------------------------------------------


def _unit(vector, name):
    v = np.asarray(vector, dtype=float)
    norm = np.linalg.norm(v)
    if v.shape != (3,) or not np.isfinite(norm) or norm < 1e-9:
        raise OrientationError(f"{name} must be a nonzero finite 3-vector; got {vector!r}")
    return v / norm


def _depth_below_surface(target, mesh, normal_radius_mm):
    """Signed depth (mm, > 0 inside) of ``target`` below the closest surface point."""
    point, _ = closest_point(target, mesh)
    normal = surface_normal(point, mesh, radius_mm=normal_radius_mm)
    return float((point - target) @ normal), point, normal


def scalp_point(target_ras_mm, mesh, *, method="normal", normal_radius_mm=10.0, max_iter=30, tol_mm=0.05):
    """Point on the scalp for a cortical target, and the outward scalp normal there.

    Parameters
    ----------
    target_ras_mm : array-like, shape (3,)
        Cortical target, world RAS mm of the T1 the mesh came from.
    mesh : SurfaceMesh
        Scalp surface (``scalp_surface``).
    method : {"normal", "closest"}
        "closest": the closest scalp point to the target.  "normal": the
        scalp point whose smoothed normal (``normal_radius_mm``) passes
        through the target, i.e. the perpendicular projection onto the
        smoothed scalp (found by casting rays from the target along the
        normal, starting at the closest point, until the point moves less than
        ``tol_mm``).  On a smooth head both agree to about a millimetre.
    normal_radius_mm : float
        Smoothing radius of the returned normal (see ``surface_normal``).
    max_iter, tol_mm : int, float
        Iteration limit and convergence distance of the "normal" method.

    Returns
    -------
    point_ras_mm : ndarray, shape (3,)
        On the mesh, world RAS mm.
    normal_ras : ndarray, shape (3,)
        Outward unit normal (smoothed), world RAS.

    Raises
    ------
    OrientationError
        The target lies outside the head surface (a target in another space,
        e.g. MNI coordinates given for a native T1, usually shows this way).
    InputError
        Unknown method.
    """
    target = as_point(target_ras_mm, "target_ras_mm")
    if method not in _SCALP_METHODS:
        raise InputError(f"scalp point method must be one of {_SCALP_METHODS}; got {method!r}")
    depth_mm, point, normal = _depth_below_surface(target, mesh, normal_radius_mm)
    if depth_mm < 0:
        raise OrientationError(
            f"target {np.round(target, 1).tolist()} RAS mm lies {-depth_mm:.1f} mm outside the head "
            "surface; is it in the world space of this T1?"
        )
    if method == "closest":
        return point, normal
    for _ in range(max_iter):
        hits = ray_hits(target, normal, mesh)
        hits = hits[hits > -1e-6]
        if len(hits) == 0:
            break
        new_point = target + hits.min() * normal
        moved_mm = np.linalg.norm(new_point - point)
        point = new_point
        normal = surface_normal(point, mesh, radius_mm=normal_radius_mm)
        if moved_mm < tol_mm:
            return point, normal
    logger.warning(
        "scalp point along the normal did not converge for target %s; last point %s",
        np.round(target, 1).tolist(),
        np.round(point, 1).tolist(),
    )
    return point, normal


# --------------------------------------------------------------------------
# handle and pose
# --------------------------------------------------------------------------


def _check_head_axes(head_axes_ras):
    if head_axes_ras is None:
        return np.eye(3)
    axes = np.asarray(head_axes_ras, dtype=float)
    if axes.shape != (3, 3) or not np.allclose(axes.T @ axes, np.eye(3), atol=1e-6) or np.linalg.det(axes) <= 0:
        raise OrientationError(
            "head_axes_ras must be a 3x3 rotation whose columns are the head's Right, Anterior and "
            f"Superior unit vectors in world RAS; got {head_axes_ras!r}"
        )
    return axes


def handle_direction(
    target_ras_mm, rule="auto", *, midline_ras_mm=(0.0, 0.0, 0.0), head_axes_ras=None, midline_tolerance_mm=10.0
):
    """Default coil handle direction for a target (before projection onto the scalp).

    Parameters
    ----------
    target_ras_mm : array-like, shape (3,)
        Target, world RAS mm.
    rule : {"auto", "dlpfc", "midline"} or float
        - "dlpfc": the usual figure-8 convention for DLPFC, handle pointing
          posterior and lateral (away from the midline, on the target's side),
          45° from the midsagittal line.  Left target -> (-s, -s, 0), right
          target -> (+s, -s, 0), s = 1/√2 (head frame).
        - "midline": handle pointing posterior along the midline (dMPFC).
        - "auto": "midline" when the target is within ``midline_tolerance_mm``
          of the midsagittal plane, else "dlpfc".
        - a number: angle in degrees from the posterior midline direction,
          positive toward the lateral side of the target's hemisphere (45 =
          "dlpfc"); for a target on the midline only 0 or 180 are defined.
    midline_ras_mm : array-like, shape (3,)
        A point of the midsagittal plane, world RAS mm (0 in MNI space).
    head_axes_ras : ndarray, shape (3, 3), optional
        Columns = the head's Right, Anterior, Superior unit vectors in world
        RAS (e.g. the rotation of the T1 -> MNI affine); default identity.
    midline_tolerance_mm : float
        Lateral distance (mm) under which a target counts as midline.

    Returns
    -------
    ndarray, shape (3,)
        Unit handle direction in world RAS, in the head's axial plane.

    Raises
    ------
    InputError
        Unknown rule.
    OrientationError
        A lateral angle for a midline target, or invalid head axes.
    """
    target = as_point(target_ras_mm, "target_ras_mm")
    midline = as_point(midline_ras_mm, "midline_ras_mm")
    axes = _check_head_axes(head_axes_ras)
    right, anterior = axes[:, 0], axes[:, 1]
    lateral_mm = float((target - midline) @ right)
    on_midline = abs(lateral_mm) <= midline_tolerance_mm
    if isinstance(rule, str):
        if rule not in _HANDLE_RULES:
            raise InputError(f"handle rule must be one of {_HANDLE_RULES} or an angle in degrees; got {rule!r}")
        if rule == "auto":
            rule = "midline" if on_midline else "dlpfc"
        angle_deg = DLPFC_HANDLE_ANGLE_DEG if rule == "dlpfc" else 0.0
    elif isinstance(rule, (int, float, np.integer, np.floating)) and not isinstance(rule, bool) and np.isfinite(rule):
        angle_deg = float(rule)
    else:
        raise InputError(f"handle rule must be one of {_HANDLE_RULES} or an angle in degrees; got {rule!r}")
    angle = np.deg2rad(angle_deg)
    if on_midline and abs(np.sin(angle)) > 1e-9:
        raise OrientationError(
            f"handle angle {angle_deg:g}° toward the lateral side is undefined for a target "
            f"{lateral_mm:+.1f} mm from the midline (tolerance {midline_tolerance_mm:g} mm); "
            "use 'midline', 0 or 180, or an explicit handle vector"
        )
    side = np.sign(lateral_mm) if not on_midline else 0.0
    return -np.cos(angle) * anterior + np.sin(angle) * side * right


def pose_from_handle(centre_ras_mm, z_ras, handle_ras):
    """SimNIBS coil pose from a centre, a coil normal and a handle direction.

    Parameters
    ----------
    centre_ras_mm : array-like, shape (3,)
        Coil centre, world RAS mm.
    z_ras : array-like, shape (3,)
        Coil normal pointing into the head (any length).
    handle_ras : array-like, shape (3,)
        Approximate handle direction; its component along z is removed.

    Returns
    -------
    pose_ras : ndarray, shape (4, 4)
        Columns x, y, z, centre; y = -(unit handle in the coil plane),
        x = y × z, det +1.

    Raises
    ------
    OrientationError
        Handle (almost) parallel to the coil normal.
    """
    centre = as_point(centre_ras_mm, "centre_ras_mm")
    z = _unit(z_ras, "coil normal z_ras")
    handle = _unit(handle_ras, "handle_ras")
    in_plane = handle - (handle @ z) * z
    if np.linalg.norm(in_plane) < np.sin(np.deg2rad(5.0)):
        raise OrientationError(
            f"handle direction {np.round(handle, 3).tolist()} is within 5° of the coil normal "
            f"{np.round(z, 3).tolist()}: it has no direction in the coil plane"
        )
    return pose_from_axes(centre, -in_plane / np.linalg.norm(in_plane), z)


def scalp_to_cortex_mm(scalp_ras_mm, target_ras_mm, brain_mask_img=None, *, axis_ras=None, radius_mm=0.0,
                       step_mm=0.1, max_depth_mm=80.0):
    """Distance from a scalp point to the cortex, along the coil axis or the line to the target.

    Parameters
    ----------
    scalp_ras_mm : array-like, shape (3,)
        Point on the scalp (coil centre without offset), world RAS mm.
    target_ras_mm : array-like, shape (3,)
        Cortical target, world RAS mm; gives the direction when ``axis_ras``
        is not given.
    brain_mask_img : nibabel image, optional
        Cortex mask (nonzero = grey or white matter, e.g.
        :meth:`tmstarget.anatomy.tissue.TissueMaps.parenchyma_img`) in the same
        world space.  Without it the result is the scalp-to-target distance.
    axis_ras : array-like, shape (3,), optional
        Direction into the head (the coil's z axis); default: toward the target.
    radius_mm : float
        Also follow lines parallel to the axis up to this distance from it
        (rings at half and full radius, 8 directions each) and report the
        median of their entry depths: the cortex *under the coil centre*, so
        that neither a sulcus exactly on the axis (its fundus) nor one line
        grazing a gyral crown decides.  0: the axis only.
    step_mm, max_depth_mm : float
        Sampling step and search length along the line (mm).

    Returns
    -------
    float
        mm from the scalp point, along the axis, to where the line(s) enter
        the mask (trilinear mask value 0.5, linearly interpolated between
        samples; the median over the lines that enter).

    Raises
    ------
    InputError
        No line enters the mask within ``max_depth_mm``.
    """
    scalp = as_point(scalp_ras_mm, "scalp_ras_mm")
    target = as_point(target_ras_mm, "target_ras_mm")
    if brain_mask_img is None:
        return float(np.linalg.norm(target - scalp))
    direction = _unit(target - scalp if axis_ras is None else axis_ras, "scalp-to-cortex direction")
    data, affine = load_3d(brain_mask_img, "cortex mask image")
    u = np.cross(direction, [1.0, 0.0, 0.0] if abs(direction[0]) < 0.9 else [0.0, 1.0, 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(direction, u)
    angles = np.arange(8) * np.pi / 4
    ring = np.cos(angles)[:, None] * u + np.sin(angles)[:, None] * v
    offsets = np.vstack([np.zeros(3)] + ([r * ring for r in (radius_mm / 2, radius_mm)] if radius_mm > 0 else []))
    depths = np.arange(0.0, max_depth_mm + step_mm, step_mm)
    points = scalp + offsets[:, None, :] + depths[None, :, None] * direction
    ijk = apply_affine(np.linalg.inv(affine), points.reshape(-1, 3))
    values = ndimage.map_coordinates((data > 0).astype(np.float32), ijk.T, order=1, mode="constant")
    values = values.reshape(len(offsets), len(depths))
    entries = []
    for line in values:
        entered = np.flatnonzero(line >= 0.5)
        if len(entered) == 0:
            continue
        k = int(entered[0])
        entries.append(0.0 if k == 0 else depths[k - 1] + (0.5 - line[k - 1]) / (line[k] - line[k - 1]) * step_mm)
    if not entries:
        raise InputError(
            f"the line from scalp point {np.round(scalp, 1).tolist()} along the coil axis never enters "
            f"the cortex mask within {max_depth_mm:g} mm; is the mask in the same world space?"
        )
    return float(np.median(entries))


def cortical_point(target_ras_mm, scalp_ras_mm, axis_ras, tissue, *, max_shift_mm=10.0, step_mm=0.25):
    """Tissue at a target and the grey-matter point on the coil axis nearest to it.

    An fMRI target is a 2-3 mm voxel centre; on this T1 it may fall in white
    matter or sulcal CSF.  The cortical point is searched **on the coil axis**
    (the line from the scalp point along ``axis_ras``), at the depth nearest
    to the target's own depth, so that the coil pose is the same for both.

    Parameters
    ----------
    target_ras_mm, scalp_ras_mm : array-like, shape (3,)
        World RAS mm of the T1.
    axis_ras : array-like, shape (3,)
        Coil axis into the head (pose z).
    tissue : TissueMaps
        Tissue labels of this T1 (:func:`tmstarget.anatomy.tissue.segment_t1`).
    max_shift_mm : float
        Largest move along the axis; farther grey matter is not reported.
    step_mm : float
        Sampling step along the axis.

    Returns
    -------
    dict
        ``target_tissue`` (label name at the target voxel),
        ``target_in_grey_matter`` (bool), ``cortical_target_ras_mm`` (the
        target itself when it is in grey matter, else the nearest grey-matter
        point on the axis, or None beyond ``max_shift_mm``) and
        ``cortical_shift_mm`` (signed: > 0 deeper than the target).
    """
    from tmstarget.anatomy.tissue import GM, LABELS

    target = as_point(target_ras_mm, "target_ras_mm")
    scalp = as_point(scalp_ras_mm, "scalp_ras_mm")
    axis = _unit(axis_ras, "coil axis")
    label = tissue.label_at(target)
    result = {"target_tissue": LABELS[label], "target_in_grey_matter": label == GM}
    if label == GM:
        return {**result, "cortical_target_ras_mm": target.tolist(), "cortical_shift_mm": 0.0}
    depth = float((target - scalp) @ axis)
    shifts = np.arange(-max_shift_mm, max_shift_mm + step_mm / 2, step_mm)
    shifts = shifts[depth + shifts >= 0]
    grey = np.flatnonzero(tissue.labels_along(scalp, axis, depth + shifts) == GM)
    if len(grey) == 0:
        return {**result, "cortical_target_ras_mm": None, "cortical_shift_mm": None}
    shift = float(shifts[grey[np.argmin(np.abs(shifts[grey]))]])
    point = scalp + (depth + shift) * axis
    return {**result, "cortical_target_ras_mm": point.tolist(), "cortical_shift_mm": shift}


@dataclass(frozen=True)
class CoilPlacement:
    """A coil placed over a target on one T1's scalp (world RAS mm, SimNIBS axes).

    Attributes
    ----------
    pose_ras : ndarray, shape (4, 4)
        SimNIBS pose; ``handle_ras = -pose_ras[:3, 1]``.
    scalp_ras_mm : ndarray, shape (3,)
        Scalp point under the coil centre.
    scalp_normal_ras : ndarray, shape (3,)
        Outward smoothed scalp normal at that point.
    handle_rule : str
        How the handle was chosen (rule name, angle or "explicit").
    scalp_to_target_mm : float
    scalp_to_cortex_mm : float or None
        None without a brain mask.
    """

    pose_ras: np.ndarray
    scalp_ras_mm: np.ndarray
    scalp_normal_ras: np.ndarray
    handle_rule: str
    scalp_to_target_mm: float
    scalp_to_cortex_mm: float | None

    @property
    def handle_ras(self):
        """Unit handle direction, world RAS (= -y of the pose)."""
        return -self.pose_ras[:3, 1]

    def to_dict(self):
        """JSON-ready ``coil`` block (lists of floats, RAS mm, SimNIBS axes)."""
        return {
            "convention": "simnibs",
            "axes": "z = coil normal into the head, y away from the handle (handle = -y), x = y x z; world RAS mm",
            "centre_ras_mm": self.pose_ras[:3, 3].tolist(),
            "matrix": self.pose_ras.tolist(),
            "handle_direction": self.handle_ras.tolist(),
            "handle_rule": self.handle_rule,
            "scalp_ras_mm": self.scalp_ras_mm.tolist(),
            "scalp_to_target_mm": self.scalp_to_target_mm,
            "scalp_to_cortex_mm": self.scalp_to_cortex_mm,
        }


def place_coil(
    target_ras_mm,
    mesh,
    *,
    handle="auto",
    method="normal",
    z_axis="normal",
    distance_mm=0.0,
    normal_radius_mm=10.0,
    head_axes_ras=None,
    midline_ras_mm=None,
    brain_mask_img=None,
    cortex_radius_mm=0.0,
):
    """Scalp point, coil pose and depths for a target.

    Parameters
    ----------
    target_ras_mm : array-like, shape (3,)
        Cortical target, world RAS mm of the T1 the mesh came from.
    mesh : SurfaceMesh
        Scalp surface of that T1.
    handle : str, float or array-like of shape (3,)
        A ``handle_direction`` rule ("auto", "dlpfc", "midline"), an angle in
        degrees (see ``handle_direction``), or an explicit handle vector in
        world RAS (e.g. a mapped point 20 mm along the handle minus the
        centre).  It is projected into the coil plane.
    method : {"normal", "closest"}
        See ``scalp_point``.
    z_axis : {"normal", "target"}
        "normal": z = minus the smoothed scalp normal (coil flat on the scalp,
        as SimNIBS does); "target": z = unit vector from the centre to the
        target.  With method "normal" and no offset both coincide.
    distance_mm : float
        Coil centre offset outward from the scalp along the normal (hair,
        casing), mm; default 0.
    normal_radius_mm : float
        Scalp normal smoothing radius (mm).
    head_axes_ras, midline_ras_mm :
        Head frame for the handle rules (see ``handle_direction``); the
        midline point defaults to the area-weighted centroid of the mesh.
    brain_mask_img : nibabel image, optional
        Cortex mask for ``scalp_to_cortex_mm`` (measured along the coil axis z).
    cortex_radius_mm : float
        ``radius_mm`` of ``scalp_to_cortex_mm``: cortex within this distance
        of the axis counts.

    Returns
    -------
    CoilPlacement

    Raises
    ------
    OrientationError
        Target outside the head, target at the coil centre with
        ``z_axis="target"``, or handle parallel to the coil normal.
    InputError
        Unknown method, z axis or handle rule.
    """
    target = as_point(target_ras_mm, "target_ras_mm")
    if z_axis not in _Z_AXES:
        raise InputError(f"z_axis must be one of {_Z_AXES}; got {z_axis!r}")
    scalp, normal = scalp_point(target, mesh, method=method, normal_radius_mm=normal_radius_mm)
    centre = scalp + float(distance_mm) * normal
    z = -normal if z_axis == "normal" else _unit(target - centre, "centre-to-target direction")
    if isinstance(handle, str) or np.ndim(handle) == 0:
        midline = mesh.centroid_ras_mm if midline_ras_mm is None else midline_ras_mm
        handle_ras = handle_direction(target, handle, midline_ras_mm=midline, head_axes_ras=head_axes_ras)
        rule = handle if isinstance(handle, str) else f"{float(handle):g} deg from posterior toward lateral"
    else:
        handle_ras, rule = handle, "explicit"
    pose = pose_from_handle(centre, z, handle_ras)
    cortex_mm = None if brain_mask_img is None else scalp_to_cortex_mm(scalp, target, brain_mask_img, axis_ras=z,
                                                                       radius_mm=cortex_radius_mm)
    return CoilPlacement(pose, scalp, normal, rule, float(np.linalg.norm(target - scalp)), cortex_mm)


def coil_pose(target_ras_mm, mesh, **options):
    """SimNIBS 4x4 coil pose (world RAS mm) for a target: ``place_coil(...).pose_ras``.

    Parameters
    ----------
    target_ras_mm : array-like, shape (3,)
    mesh : SurfaceMesh
    **options
        Keyword options of ``place_coil`` (handle, method, z_axis,
        distance_mm, normal_radius_mm, head_axes_ras, midline_ras_mm).

    Returns
    -------
    ndarray, shape (4, 4)
    """
    return place_coil(target_ras_mm, mesh, **options).pose_ras
