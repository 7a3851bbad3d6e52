"""Adjusting the coil in the viewer: rotate the handle, slide the coil along the scalp, re-seat it flat.

Pure geometry on SimNIBS poses (world RAS mm; z = coil normal into the head,
``handle_ras = -pose_ras[:3, 1]``) and the plan's scalp surface
(:class:`tmstarget.anatomy.scalp.SurfaceMesh`); no drawing. The viewer calls
these on every key press or slider move and shows :func:`pose_readout`.
"""

from __future__ import annotations

import numpy as np

from tmstarget.spaces import angle_between_deg


def rotate_handle(pose_ras, angle_deg):
    """Turn the coil about its normal by ``angle_deg`` (positive: counter-clockwise seen from outside the head).

    Parameters
    ----------
    pose_ras : ndarray, shape (4, 4)
        SimNIBS pose.
    angle_deg : float
        Rotation about the outward normal ``-z`` (right-handed about ``-z``).

    Returns
    -------
    ndarray, shape (4, 4)
        Same centre and normal; x and y (so the handle) turned.
    """
    pose = np.asarray(pose_ras, dtype=float).copy()
    axis = -pose[:3, 2]
    theta = np.deg2rad(float(angle_deg))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(theta) * k + (1 - np.cos(theta)) * (k @ k)  # Rodrigues
    pose[:3, 0] = rotation @ pose[:3, 0]
    pose[:3, 1] = rotation @ pose[:3, 1]
    return pose


def slide_coil(pose_ras, head, dx_mm=0.0, dy_mm=0.0):
    """Slide the coil along the scalp by (dx, dy) mm in its own plane, keeping its orientation.

    The centre moves by ``dx * x + dy * y`` and is put back on the scalp (its
    closest point); the coil keeps its axes, as a coil slid by hand keeps its
    tilt: :func:`pose_readout` then shows its angle from the scalp normal and
    :func:`seat_flat` lays it flat again.

    Parameters
    ----------
    pose_ras : ndarray, shape (4, 4)
    head : SurfaceMesh
        Scalp of the plan's T1.
    dx_mm, dy_mm : float
        Along the coil's x axis (between the wings) and y axis (away from the handle).

    Returns
    -------
    ndarray, shape (4, 4)
    """
    from tmstarget.anatomy.scalp import closest_point

    pose = np.asarray(pose_ras, dtype=float).copy()
    moved = pose[:3, 3] + float(dx_mm) * pose[:3, 0] + float(dy_mm) * pose[:3, 1]
    pose[:3, 3] = closest_point(moved, head)[0]
    return pose


def seat_flat(pose_ras, head, normal_radius_mm=10.0):
    """Lay the coil flat on the scalp at its centre: z = minus the smoothed scalp normal, handle kept in-plane."""
    from tmstarget.anatomy.scalp import surface_normal
    from tmstarget.coil.placement import pose_from_handle

    pose = np.asarray(pose_ras, dtype=float)
    normal = surface_normal(pose[:3, 3], head, radius_mm=normal_radius_mm)
    return pose_from_handle(pose[:3, 3], -normal, -pose[:3, 1])


def axis_depth_mm(pose_ras, surface):
    """Distance (mm) along the coil axis from the centre to where it first enters ``surface``; None if never."""
    from tmstarget.anatomy.scalp import ray_hits

    if surface is None:
        return None
    pose = np.asarray(pose_ras, dtype=float)
    hits = ray_hits(pose[:3, 3], pose[:3, 2], surface)
    hits = hits[hits > 0]
    return float(hits.min()) if len(hits) else None


def pose_readout(pose_ras, head, brain, target_ras_mm, reference_pose_ras=None, normal_radius_mm=10.0):
    """What the viewer shows while the coil is adjusted.

    Parameters
    ----------
    pose_ras : ndarray, shape (4, 4)
    head, brain : SurfaceMesh
        Scalp and brain outline (brain may be None).
    target_ras_mm : array-like, shape (3,)
    reference_pose_ras : ndarray, optional
        The plan's pose, for the handle turn and the move.
    normal_radius_mm : float
        Smoothing radius of the scalp normal.

    Returns
    -------
    dict
        ``centre_ras_mm``; ``angle_from_normal_deg`` (coil axis vs the inward
        scalp normal); ``depth_mm`` (along the axis to the brain outline, None
        without one); ``target_off_axis_mm`` (distance of the target from the
        axis); with a reference, ``handle_turn_deg`` (signed, counter-clockwise
        seen from outside) and ``moved_mm``.
    """
    from tmstarget.anatomy.scalp import surface_normal

    pose = np.asarray(pose_ras, dtype=float)
    centre, z = pose[:3, 3], pose[:3, 2]
    normal = surface_normal(centre, head, radius_mm=normal_radius_mm)
    offset = np.asarray(target_ras_mm, dtype=float) - centre
    out = {
        "centre_ras_mm": centre.tolist(),
        "angle_from_normal_deg": angle_between_deg(z, -normal),
        "depth_mm": axis_depth_mm(pose, brain),
        "target_off_axis_mm": float(np.linalg.norm(offset - (offset @ z) * z)),
    }
    if reference_pose_ras is not None:
        ref = np.asarray(reference_pose_ras, dtype=float)
        a, b = -ref[:3, 1], -pose[:3, 1]  # handles
        outward = -z
        a, b = a - (a @ outward) * outward, b - (b @ outward) * outward
        out["handle_turn_deg"] = float(np.degrees(np.arctan2(np.cross(a, b) @ outward, a @ b)))
        out["moved_mm"] = float(np.linalg.norm(centre - ref[:3, 3]))
    return out
