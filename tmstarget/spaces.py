"""World frames, coil poses and NIfTI affines, the geometry every writer uses.

Conventions (``shared/specs/navigation-formats.md`` §1–§2):

* World coordinates are **RAS mm** (NIfTI world; +x Right, +y Anterior,
  +z Superior).  LPS (DICOM/ITK: +x Left, +y Posterior, +z Superior) appears
  only at file boundaries.  ``D = diag(-1, -1, 1, 1)`` converts both ways:
  ``p_LPS = D·p_RAS`` and, for a pose, ``M_LPS = D·M_RAS`` (rows 0 and 1
  negated).  ``D`` is a 180° rotation about z, so it never mirrors a pose.
* A coil pose is a 4×4 matrix ``M`` whose columns 0–2 are the unit coil axes
  in world coordinates and column 3 the coil centre (mm), in the **SimNIBS
  axis convention**: z = coil normal *into* the head, y points *away from*
  the handle, x = y × z.  The handle direction is therefore
  ``handle_ras = -pose_ras[:3, 1]``; y is never "the handle".
* A world-frame change multiplies on the left (``W·M``), a coil-axis
  convention change on the right (``M·K``):
  ``M_file = W·M_sim·K`` and ``M_sim = W⁻¹·M_file·K⁻¹``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from tmstarget.errors import InvalidPoseError, OrientationError, XformMismatchError

__all__ = [
    "D",
    "D3",
    "COIL_AXES",
    "XFORM_NAMES",
    "XformCheck",
    "ras2lps",
    "lps2ras",
    "validate_pose",
    "orthonormalize_pose",
    "pose_from_file",
    "pose_to_file",
    "pose_from_axes",
    "coil_axes_matrix",
    "handle_ras",
    "normal_ras",
    "angle_between_deg",
    "rotation_angle_deg",
    "pose_distance_mm",
    "pose_difference",
    "check_qform_sform",
    "grid_corners",
    "qform_sform_difference_mm",
    "xforms_agree",
    "QFORM_SFORM_TOLERANCE_MM",
    "map_points_ras",
]


#: RAS <-> LPS flip for homogeneous points and poses (its own inverse).
D = np.diag([-1.0, -1.0, 1.0, 1.0])
#: The 3×3 part of :data:`D`, for directions and rotations.
D3 = D[:3, :3]

_K_LOCALITE = np.array(
    [
        [0.0, 0.0, 1.0],  # x_Localite = z_sim (normal, into the head)
        [0.0, -1.0, 0.0],  # y_Localite = -y_sim (toward the handle)
        [1.0, 0.0, 0.0],  # z_Localite = x_sim
    ]
)
_K_BRAINSIGHT = np.diag([-1.0, 1.0, -1.0])  # x_B = -x, y_B = y, z_B = -z (out of head)
_K_ANT_NATIVE = np.array(
    [
        [0.0, -1.0, 0.0],  # ANT x = toward the handle (-y_sim)
        [-1.0, 0.0, 0.0],  # ANT y = -x_sim
        [0.0, 0.0, -1.0],  # ANT z = out of the head
    ]
)
_K_SOFTAXIC = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])

#: Coil-axis convention matrices K (3×3, proper rotations), spec §2.2.
#: ``M_file = W·M_sim·K``.  "ant" is ANT's native convention ([U]: the
#: ``.mrk`` files tmstarget writes declare "simnibs" and use the identity);
#: "softaxic" is read-only and is *not* its own inverse.
COIL_AXES = {
    "simnibs": np.eye(3),
    "localite": _K_LOCALITE,
    "brainsight": _K_BRAINSIGHT,
    "ant": _K_ANT_NATIVE,
    "softaxic": _K_SOFTAXIC,
}

#: NIfTI xform codes and the names navigators use for them.
XFORM_NAMES = {1: "Scanner", 2: "Aligned", 3: "Talairach", 4: "MNI-152", 5: "Other-Template"}

POSE_TOL = 1e-6  # writer rule, spec §5.3
#: qform and sform agree when every field-of-view corner maps within this distance (spec §5.2).
QFORM_SFORM_TOLERANCE_MM = 0.1
READ_REJECT_TOL = 5e-3  # reader rule, spec §6
READ_WARN_TOL = 1e-3


def _as_float_array(value, what):
    try:
        arr = np.array(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InvalidPoseError(f"{what} must be numeric; got {value!r}") from exc
    return arr


def ras2lps(value):
    """Convert points (``(..., 3)``) or poses (``(..., 4, 4)``) from RAS to LPS.

    Points negate x and y; poses are left-multiplied by ``D`` (rows 0 and 1
    negated: the position and the x/y components of every axis).

    >>> ras2lps([-38.0, 44.0, 30.0]).tolist()
    [38.0, -44.0, 30.0]
    """
    arr = np.array(value, dtype=float)
    if arr.ndim >= 2 and arr.shape[-2:] == (4, 4):
        return D @ arr
    if arr.shape[-1:] == (3,):
        out = arr.copy()
        out[..., :2] *= -1.0
        return out
    raise OrientationError(
        f"ras2lps/lps2ras expects points of shape (..., 3) or poses of shape (..., 4, 4); "
        f"got shape {arr.shape}"
    )


def lps2ras(value):
    """Convert points or poses from LPS to RAS (``D`` is its own inverse)."""
    return ras2lps(value)


def _finite_4x4(pose, what, *, bottom_tol):
    """``pose`` as a finite float 4×4 whose bottom row is [0, 0, 0, 1] within ``bottom_tol``."""
    arr = _as_float_array(pose, what)
    if arr.shape != (4, 4):
        raise InvalidPoseError(f"{what}: expected a 4x4 matrix, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InvalidPoseError(f"{what}: matrix contains NaN or infinite values")
    if np.max(np.abs(arr[3] - [0.0, 0.0, 0.0, 1.0])) > bottom_tol:
        raise InvalidPoseError(f"{what}: bottom row must be [0, 0, 0, 1]; got {arr[3].tolist()}")
    return arr


def validate_pose(pose, *, tol=POSE_TOL, what="pose"):
    """Check that ``pose`` is a rigid 4×4 transform and return it as a float copy.

    Parameters
    ----------
    pose : array-like, shape (4, 4)
        Pose matrix (any axis convention, any world frame).
    tol : float
        Maximum allowed ``|RᵀR − I|`` and ``|det R − 1|`` (spec §5.3: 1e-6).
    what : str
        Name used in error messages (e.g. the marker name).

    Raises
    ------
    InvalidPoseError
        Wrong shape, non-finite values, bottom row not ``[0, 0, 0, 1]``,
        det R ≤ 0 (mirror), shear or scaling beyond ``tol``.
    """
    arr = _finite_4x4(pose, what, bottom_tol=tol)
    rot = arr[:3, :3]
    det = float(np.linalg.det(rot))
    if det <= 0:
        raise InvalidPoseError(
            f"{what}: rotation has det = {det:.6g} <= 0 (a mirrored, left-handed "
            "coil frame); a missing axis flip or a wrong coil convention is likely"
        )
    ortho = float(np.max(np.abs(rot.T @ rot - np.eye(3))))
    if ortho > tol or abs(det - 1.0) > tol:
        raise InvalidPoseError(
            f"{what}: rotation is not orthonormal (max |R^T R - I| = {ortho:.3g}, "
            f"det = {det:.6g}; tolerance {tol:g}): shear or scaling is not a coil pose"
        )
    return arr


def orthonormalize_pose(pose, *, reject_tol=READ_REJECT_TOL, warn_tol=READ_WARN_TOL, what="pose"):
    """Reader leniency (spec §6): accept small rounding, return the nearest rotation.

    Accepts ``max|RᵀR − I| ≤ reject_tol`` and det > 0, warns above ``warn_tol``,
    then replaces R by its nearest rotation ``U·Vᵀ`` (SVD).  Files written
    with 3–4 decimals need this; larger errors are refused.

    Raises
    ------
    InvalidPoseError
        Non-finite values, det ≤ 0 or orthonormality error above ``reject_tol``.
    """
    arr = _finite_4x4(pose, what, bottom_tol=1e-6)
    rot = arr[:3, :3]
    det = float(np.linalg.det(rot))
    if det <= 0:
        raise InvalidPoseError(
            f"{what}: rotation has det = {det:.6g} <= 0 (mirrored coil frame): refused"
        )
    ortho = float(np.max(np.abs(rot.T @ rot - np.eye(3))))
    if ortho > reject_tol:
        raise InvalidPoseError(
            f"{what}: rotation is not orthonormal (max |R^T R - I| = {ortho:.3g} > "
            f"{reject_tol:g}): "
            "shear or scaling, refused"
        )
    if ortho > warn_tol:
        warnings.warn(
            f"{what}: rotation orthonormality error {ortho:.3g} > {warn_tol:g} "
            "(few decimals in the file?); replaced by the nearest rotation",
            stacklevel=2,
        )
    u, _, vt = np.linalg.svd(rot)
    out = arr.copy()
    out[:3, :3] = u @ vt
    out[3] = [0.0, 0.0, 0.0, 1.0]
    return out


def coil_axes_matrix(convention):
    """Return the 4×4 coil-axis convention matrix K for ``convention`` (spec §2.2)."""
    try:
        k3 = COIL_AXES[convention]
    except KeyError:
        raise OrientationError(
            f"unknown coil-axis convention {convention!r}; expected one of {sorted(COIL_AXES)}"
        ) from None
    k = np.eye(4)
    k[:3, :3] = k3
    return k


def _world_matrix(world):
    if world == "RAS":
        return np.eye(4)
    if world == "LPS":
        return D.copy()
    raise OrientationError(f"world frame must be 'RAS' or 'LPS'; got {world!r}")


def pose_to_file(pose_ras, *, world, axes):
    """SimNIBS/RAS pose → file pose: ``M_file = W·M_sim·K``.

    Parameters
    ----------
    pose_ras : array-like (4, 4)
        Pose in SimNIBS axes, RAS world, mm (validated).
    world : {"RAS", "LPS"}
        The file's world frame.
    axes : str
        A key of :data:`COIL_AXES`.
    """
    pose = validate_pose(pose_ras)
    return _world_matrix(world) @ pose @ coil_axes_matrix(axes)


def pose_from_file(pose_file, *, world, axes):
    """File pose → SimNIBS/RAS pose: ``M_sim = W⁻¹·M_file·K⁻¹`` (no validation)."""
    arr = np.array(pose_file, dtype=float)
    w = _world_matrix(world)
    k = coil_axes_matrix(axes)
    return np.linalg.inv(w) @ arr @ np.linalg.inv(k)


def pose_from_axes(centre_ras_mm, y_ras, z_ras):
    """Raw 4×4 with SimNIBS axes ``y``, ``z``, ``x = y × z`` and ``centre`` (RAS mm).

    Not checked: readers pass it through :func:`orthonormalize_pose`, the coil
    placement builds ``y`` and ``z`` orthonormal.
    """
    mat = np.eye(4)
    mat[:3, 0] = np.cross(y_ras, z_ras)
    mat[:3, 1] = y_ras
    mat[:3, 2] = z_ras
    mat[:3, 3] = centre_ras_mm
    return mat


def handle_ras(pose_ras):
    """Unit handle direction of a SimNIBS pose: ``-pose_ras[:3, 1]`` (RAS)."""
    return -np.asarray(pose_ras, dtype=float)[:3, 1]


def normal_ras(pose_ras):
    """Unit coil normal (into the head) of a SimNIBS pose: ``pose_ras[:3, 2]``."""
    return np.asarray(pose_ras, dtype=float)[:3, 2].copy()


def angle_between_deg(u, v):
    """Angle in degrees between two 3-vectors (robust near 0° and 180°)."""
    u = np.asarray(u, dtype=float)
    v = np.asarray(v, dtype=float)
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    if nu == 0 or nv == 0:
        raise OrientationError("angle between vectors: a zero-length vector has no direction")
    return math.degrees(math.atan2(np.linalg.norm(np.cross(u, v)), float(np.dot(u, v))))


def rotation_angle_deg(pose_a, pose_b):
    """Angle (degrees) of the rotation taking pose_a's axes onto pose_b's axes."""
    ra = np.asarray(pose_a, dtype=float)[:3, :3]
    rb = np.asarray(pose_b, dtype=float)[:3, :3]
    rel = ra.T @ rb
    # angle from the quaternion-like formula, stable for small angles
    skew = np.array([rel[2, 1] - rel[1, 2], rel[0, 2] - rel[2, 0], rel[1, 0] - rel[0, 1]])
    return math.degrees(math.atan2(np.linalg.norm(skew) / 2.0, (np.trace(rel) - 1.0) / 2.0))


def pose_distance_mm(pose_a, pose_b):
    """Euclidean distance (mm) between the centres of two poses."""
    a = np.asarray(pose_a, dtype=float)
    b = np.asarray(pose_b, dtype=float)
    return float(np.linalg.norm(a[:3, 3] - b[:3, 3]))


def pose_difference(pose_a, pose_b):
    """Distance and angles between two SimNIBS poses.

    Returns
    -------
    dict
        ``distance_mm`` (centres), ``angle_deg`` (total rotation),
        ``normal_angle_deg`` (between z axes) and ``handle_angle_deg``
        (between handle directions, ``-y``).
    """
    return {
        "distance_mm": pose_distance_mm(pose_a, pose_b),
        "angle_deg": rotation_angle_deg(pose_a, pose_b),
        "normal_angle_deg": angle_between_deg(normal_ras(pose_a), normal_ras(pose_b)),
        "handle_angle_deg": angle_between_deg(handle_ras(pose_a), handle_ras(pose_b)),
    }


# --------------------------------------------------------------------------
# qform / sform


@dataclass(frozen=True)
class XformCheck:
    """Outcome of :func:`check_qform_sform`.

    Attributes
    ----------
    affine : ndarray (4, 4)
        The voxel → RAS mm affine the world coordinates refer to.
    xform : str
        ``"qform=sform"`` (both present and every field-of-view corner within
        :data:`QFORM_SFORM_TOLERANCE_MM`; the sform is used), ``"qform"`` or
        ``"sform"`` (only that one present, or chosen by the user).
    code : int
        NIfTI xform code of the affine used (1 scanner … 5 other template).
    qform_code, sform_code : int
    chosen : bool
        True when the user explicitly chose between differing transforms.
    max_difference_mm : float
        Largest displacement between qform and sform over the field-of-view
        corners (0 when only one is present).
    agree : bool (property)
        Navigators cannot tell the two apart (one code is 0, or within tolerance).
    """

    affine: np.ndarray
    xform: str
    code: int
    qform_code: int
    sform_code: int
    chosen: bool
    max_difference_mm: float
    qform: np.ndarray
    sform: np.ndarray

    @property
    def agree(self):
        """True when only one transform is present or both map the field of view within the tolerance."""
        return min(self.qform_code, self.sform_code) <= 0 or self.max_difference_mm <= QFORM_SFORM_TOLERANCE_MM

    @property
    def affine_used(self):
        """The header transform behind :attr:`affine`: ``"sform"`` or ``"qform"``.

        ``"qform=sform"`` (agreement within :data:`QFORM_SFORM_TOLERANCE_MM`)
        uses the sform.
        """
        return "sform" if self.xform == "qform=sform" else self.xform

    def as_dict(self):
        return {
            "xform": self.xform,
            "affine_used": self.affine_used,
            "code": self.code,
            "code_name": XFORM_NAMES.get(self.code, "Unknown"),
            "qform_code": self.qform_code,
            "sform_code": self.sform_code,
            "chosen_by_user": self.chosen,
            "qform_sform_max_difference_mm": self.max_difference_mm,
            "qform_sform_tolerance_mm": QFORM_SFORM_TOLERANCE_MM,
        }


def grid_corners(shape):
    """The 8 corner voxels of a grid of ``shape`` (first 3 axes), homogeneous ``(8, 4)`` ijk1."""
    dims = [max(int(n) - 1, 0) for n in shape[:3]]
    return np.array(
        [[i, j, k, 1.0] for i in (0, dims[0]) for j in (0, dims[1]) for k in (0, dims[2])]
    )


def qform_sform_difference_mm(qform, sform, shape):
    """Largest distance (mm) between where ``qform`` and ``sform`` put a corner of the field of view of ``shape``
    (the outer faces of the corner voxels)."""
    corners = grid_corners(np.asarray(shape[:3]) + 1) - [0.5, 0.5, 0.5, 0.0]
    return float(np.max(np.linalg.norm((corners @ (np.asarray(qform) - np.asarray(sform)).T)[:, :3], axis=1)))


def xforms_agree(img):
    """True when ``img`` has both a qform and an sform (codes > 0) that agree (spec §5.2).

    They agree when every corner of the field of view maps within
    :data:`QFORM_SFORM_TOLERANCE_MM` (0.1 mm): float rounding in real scanner
    exports reaches about 0.01 mm, navigation accuracy is 2-5 mm.
    """
    header = img.header
    if int(header["qform_code"]) <= 0 or int(header["sform_code"]) <= 0:
        return False
    diff = qform_sform_difference_mm(header.get_qform(), header.get_sform(), img.shape[:3])
    return diff <= QFORM_SFORM_TOLERANCE_MM


def _is_sheared(affine, tol=1e-4):
    cols = affine[:3, :3]
    norms = np.linalg.norm(cols, axis=0)
    if np.any(norms == 0) or not np.all(np.isfinite(cols)):
        return True
    unit = cols / norms
    gram = unit.T @ unit
    return bool(np.max(np.abs(gram - np.eye(3))) > tol)


def check_qform_sform(img, choose=None):
    """Check that a T1's qform and sform agree, or apply the user's choice.

    Rules (spec §1.3 and §5.2):

    * both codes 0 → refused (no world frame);
    * a sform with code > 0 that is sheared or non-orthogonal → refused,
      whatever ``choose`` says;
    * exactly one code > 0 → that transform;
    * both codes > 0 and every corner of the field of view mapped within
      :data:`QFORM_SFORM_TOLERANCE_MM` (0.1 mm) by both → they agree
      (``"qform=sform"``): the sform is used and the measured difference
      recorded (``max_difference_mm``), unless ``choose`` names one;
    * both codes > 0 and further apart → :class:`XformMismatchError` unless
      ``choose`` is ``"qform"`` or ``"sform"``.

    Parameters
    ----------
    img : nibabel.Nifti1Image or Nifti2Image
        The T1 loaded in the navigator.
    choose : {None, "qform", "sform"}
        Which transform the world coordinates refer to when they differ.

    Returns
    -------
    XformCheck

    Raises
    ------
    XformMismatchError
        qform and sform differ and ``choose`` is None.
    OrientationError
        No transform, sheared sform, or ``choose`` names a missing transform.
    """
    if choose not in (None, "qform", "sform"):
        raise OrientationError(f"choose must be None, 'qform' or 'sform'; got {choose!r}")
    header = getattr(img, "header", None)
    if header is None or not hasattr(header, "get_qform"):
        raise OrientationError(
            f"expected a NIfTI image with a qform and sform; got {type(img).__name__}"
        )
    qform, qcode = header.get_qform(coded=True)
    sform, scode = header.get_sform(coded=True)
    qcode = int(qcode or 0)
    scode = int(scode or 0)
    qform = np.array(header.get_qform(), dtype=float)
    sform = np.array(header.get_sform(), dtype=float)
    shape = img.shape

    if qcode == 0 and scode == 0:
        raise OrientationError(
            "the T1 has qform_code = sform_code = 0: it has no world frame, so no navigator "
            "can place coordinates in it reliably; fix the header (e.g. reconvert the DICOM)"
        )
    if scode > 0 and _is_sheared(sform):
        raise OrientationError(
            f"the T1 sform (code {scode}) is sheared or non-orthogonal; navigators handle "
            "this differently (ITK falls back to the qform, nibabel uses the sform), so "
            "tmstarget refuses it even when an affine is chosen; resample or rewrite the "
            "header so the sform is a rotation with voxel sizes"
        )

    def decided(which, label, chosen, diff):
        """The XformCheck using ``which`` ("qform"/"sform"), recorded as ``label``."""
        return XformCheck(
            affine=qform if which == "qform" else sform,
            xform=label,
            code=qcode if which == "qform" else scode,
            qform_code=qcode,
            sform_code=scode,
            chosen=chosen,
            max_difference_mm=diff,
            qform=qform,
            sform=sform,
        )

    if qcode == 0 or scode == 0:
        present = "qform" if qcode > 0 else "sform"
        if choose is not None and choose != present:
            raise OrientationError(
                f"--affine {choose} was chosen but the T1 has no {choose} "
                f"({choose}_code = 0); only the {present} is present"
            )
        return decided(present, present, choose is not None, 0.0)
    diff = qform_sform_difference_mm(qform, sform, shape)
    if choose is None:
        if diff <= QFORM_SFORM_TOLERANCE_MM:
            return decided("sform", "qform=sform", False, diff)
        raise XformMismatchError(
            f"the T1 qform (code {qcode}) and sform (code {scode}) differ by up to "
            f"{diff:.2f} mm over the field of view (more than {QFORM_SFORM_TOLERANCE_MM} mm); navigators disagree "
            "about which one they use (nibabel and SimNIBS: sform; Brainsight <= 2.5.2 and ANT visor2: qform; "
            "ITK/Slicer: depends on the codes), so the same coordinates could land in "
            "different places on the head. Fix the T1 header so both agree, or state which "
            "affine the plan's coordinates refer to with --affine qform|sform"
        )
    return decided(choose, choose, True, diff)


def itk_nifti_xform(qform_code, sform_code):
    """Which transform ITK (and so Slicer) uses for a NIfTI with these codes.

    From spec §1.3 [V-exp, version-dependent]: (1,1)→sform, (1,2)→qform,
    (2,1)→sform, (0,1)→sform, (1,0)→qform.  Returns ``"sform"`` or ``"qform"``.
    """
    if sform_code <= 0:
        return "qform"
    if qform_code <= 0:
        return "sform"
    if qform_code == 1 and sform_code == 2:
        return "qform"
    return "sform"


# --------------------------------------------------------------------------
# ITK/ANTs point transforms (spec §4)


def map_points_ras(points_ras, transforms, invert=None):
    """Map RAS points through ITK/ANTs transform files.

    ITK physical space is LPS, so points are converted RAS→LPS, passed to
    ``ants.apply_transforms_to_points`` with an explicit ``whichtoinvert``
    (never ``None``: antspyx then guesses), and converted back.

    Parameters
    ----------
    points_ras : array-like (N, 3)
        Points, RAS mm.
    transforms : list of str or Path
        Transform files, applied first listed first (``p -> B(A(p))`` for
        ``[A, B]``), as ``antsApplyTransformsToPoints -t A -t B``.  A
        registration's transform maps points *fixed → moving*.
    invert : list of bool, optional
        Per transform; default all False.  Only linear transforms can be
        inverted (use the InverseWarp file for warps).

    Returns
    -------
    ndarray (N, 3)
        Mapped points, RAS mm.
    """
    import ants  # lazy: heavy import
    import pandas as pd

    pts = np.atleast_2d(np.asarray(points_ras, dtype=float))
    if pts.shape[-1] != 3:
        raise OrientationError(f"points must have shape (N, 3); got {pts.shape}")
    transforms = [str(t) for t in transforms]
    if invert is None:
        invert = [False] * len(transforms)
    invert = [bool(v) for v in invert]
    if len(invert) != len(transforms):
        raise OrientationError(f"invert has {len(invert)} flags for {len(transforms)} transforms")
    lps = ras2lps(pts)
    df = pd.DataFrame({"x": lps[:, 0], "y": lps[:, 1], "z": lps[:, 2]})
    out = ants.apply_transforms_to_points(3, df, transforms, whichtoinvert=invert)
    return lps2ras(out[["x", "y", "z"]].to_numpy(dtype=float))
