"""The markers a plan exports and the head checks they pass (spec §5.3).

* :func:`plan_markers`: the target, then each candidate with a coil pose.
* :func:`with_cortex_markers`: each coil pose followed by its cortical
  target, for formats that can show both (``"<name> coil"`` /
  ``"<name> cortex"``).
* :func:`head_centroid_ras` / :func:`check_head_geometry`: centres within the
  T1's field of view + 50 mm, coil normals pointing into the head.
"""

from __future__ import annotations

import numpy as np

from tmstarget.errors import OrientationError
from tmstarget.navigation._common import NavTarget

__all__ = ["plan_markers", "with_cortex_markers", "head_centroid_ras", "check_head_geometry", "FOV_MARGIN_MM"]

FOV_MARGIN_MM = 50.0


def plan_markers(plan, *, all_candidates=False):
    """Markers to export: the target first, then each candidate with a pose.

    A candidate with the target's name (rank 1 repeated) is not exported
    twice.  With ``all_candidates`` position-only candidates are included too
    (plain CSV/JSON).
    """
    out = [plan.target]
    names = {plan.target.name}
    for cand in plan.candidates:
        if cand.name in names:
            continue
        if cand.has_pose or all_candidates:
            out.append(cand)
            names.add(cand.name)
    return out


def with_cortex_markers(markers, mode):
    """Each coil marker followed by its cortical target, for a format that can show both.

    A marker with a pose and a known cortical target (``info["cortex_ras_mm"]``)
    becomes ``"<name> coil"`` (the pose) and ``"<name> cortex"`` (kind
    ``"cortex"``): with ``mode="pose"`` the coil's orientation placed at the
    cortical target (for formats whose markers are all poses; the marker then
    lies on the coil axis, along z, when the coil is aimed at the target), with
    ``mode="point"`` the position alone.  ``mode=None`` returns ``markers``
    unchanged, as do markers without a pose (their position is the target).
    """
    if mode not in (None, "pose", "point"):
        raise ValueError(f"mode must be None, 'pose' or 'point'; got {mode!r}")
    if mode is None:
        return list(markers)
    out = []
    for m in markers:
        cortex = m.info.get("cortex_ras_mm")
        if not m.has_pose or cortex is None:
            out.append(m)
            continue
        out.append(NavTarget(f"{m.name} coil", m.pose_ras, kind=m.kind, info=m.info))
        info = {"coil_marker": f"{m.name} coil", "cortex_ras_mm": list(cortex)}
        if mode == "pose":
            pose = m.pose_ras.copy()
            pose[:3, 3] = cortex
            out.append(NavTarget(f"{m.name} cortex", pose, kind="cortex", info=info))
        else:
            out.append(NavTarget(f"{m.name} cortex", None, position_ras_mm=cortex, kind="cortex", info=info))
    return out


def head_centroid_ras(t1_path, affine):
    """Intensity-thresholded centroid of the head in the T1 (RAS mm).

    Voxels above 20 % of the 99th intensity percentile count as head.
    """
    import nibabel as nib

    img = nib.load(str(t1_path))
    data = np.asanyarray(img.dataobj)
    if data.ndim > 3:
        data = data[..., 0]
    data = np.nan_to_num(data.astype(np.float32, copy=False), nan=0.0)
    sample = data[::2, ::2, ::2]
    hi = float(np.percentile(sample, 99))
    if not hi > 0:
        raise OrientationError(
            "cannot find the head in the T1 (99th intensity percentile <= 0) to check that "
            "coil normals point into the head",
            path=t1_path,
        )
    mask = data > 0.2 * hi
    total = float(mask.sum())
    ijk = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        counts = mask.sum(axis=other)
        ijk.append(float((np.arange(counts.size) * counts).sum()) / total)
    return (affine @ np.array(ijk + [1.0]))[:3]


def check_head_geometry(markers, t1ref, centroid_ras=None, cortex_ras=None):
    """Spec §5.3: centres within the FOV + 50 mm; normals into the head.

    Parameters
    ----------
    markers : list of NavTarget
    t1ref : T1Reference
    centroid_ras : array (3,), optional
        Head centroid; needed when any marker has a pose.
    cortex_ras : dict name → array (3,), optional
        Cortical target per marker: the normal must also point toward it.
    """
    lo, hi = t1ref.fov_bounds_ras()
    for m in markers:
        pos = m.position_ras_mm
        if np.any(pos < lo - FOV_MARGIN_MM) or np.any(pos > hi + FOV_MARGIN_MM):
            raise OrientationError(
                f"marker {m.name!r} at RAS {np.round(pos, 2).tolist()} lies outside the T1 field "
                f"of view (+{FOV_MARGIN_MM:.0f} mm: {np.round(lo, 1).tolist()} to "
                f"{np.round(hi, 1).tolist()}): wrong T1 or wrong frame?"
            )
        if not m.has_pose:
            continue
        z = m.pose_ras[:3, 2]
        if centroid_ras is not None and float(np.dot(z, centroid_ras - pos)) <= 0:
            raise OrientationError(
                f"marker {m.name!r}: the coil normal (z) {np.round(z, 4).tolist()} points away "
                "from "
                f"the head centre {np.round(centroid_ras, 1).tolist()}; a flipped axis or a wrong "
                "coil convention is likely"
            )
        target = (cortex_ras or {}).get(m.name)
        if target is not None and np.linalg.norm(target - pos) > 1.0:
            if float(np.dot(z, target - pos)) <= 0:
                raise OrientationError(
                    f"marker {m.name!r}: the coil normal (z) points away from its cortical "
                    f"target {np.round(target, 2).tolist()}"
                )
