"""Stimulator output for a plan's target from the resting motor threshold: two published rules.

Both start from the resting motor threshold (RMT, % of stimulator output) found at the **motor
hotspot** (given as a scalp point, or as the coil pose a Localite/Brainsight session recorded),
whose scalp-to-cortex distance is measured on the plan's T1 with the plan's own depth code
(:meth:`tmstarget.coil.adjust.PlanHead.depth_mm`: along the coil axis to the outer grey-matter
boundary, median over lines within 3 mm of the axis).

(a) **Scalp-to-cortex distance** (Stokes et al. 2005, J Neurophysiol 94:4520, "an additional 3 % of
    TMS output for every millimetre"; Stokes et al. 2007, Clin Neurophysiol 118:1617):
    ``output = RMT + 3 × (depth_target − depth_M1)``.
(b) **E-field matched**: the output giving the target the |E| the hotspot's cortex receives at RMT,
    in the same spherical-head model and coil: ``output = RMT × |E|_M1 / |E|_target`` (both at
    100 % output; E is linear in the output).

Each is given for the planned and the best pose of ``efield.json``, and, when the protocol
prescribes an intensity (``[prescription] intensity_percent_rmt``, e.g. 120 %), at that intensity.
An output above 100 % is reported as 100 % with the unclipped value and a warning.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tmstarget.errors import InputError

#: Stokes et al. 2005: % of stimulator output per mm of scalp-to-cortex distance.
STOKES_PERCENT_PER_MM = 3.0

STOKES_REFERENCE = ("Stokes MG et al. 2005 J Neurophysiol 94:4520 (3 % of stimulator output per mm of scalp-to-cortex "
                    "distance, motor cortex); Stokes MG et al. 2007 Clin Neurophysiol 118:1617")
STOKES_ASSUMPTIONS = ("the motor threshold grows linearly with scalp-to-cortex distance at the same rate at the target "
                      "as at the motor cortex; same coil, stimulator and pulse as the RMT; depths along the coil axis "
                      "to the outer grey-matter boundary of this T1")
MATCHED_ASSUMPTIONS = ("the target's neurons respond to the same |E| as the motor hotspot's at RMT; |E| at 100 % "
                       "output in a spherical head fitted to the local scalp (no CSF or gyral effects), at the "
                       "hotspot's cortex under the coil and at the plan's cortical target; the same coil model "
                       "and dI/dt for both")


def motor_hotspot(head, *, m1_ras_mm=None, hotspot_file=None):
    """The motor hotspot on the plan's T1: scalp point, coil axis and pose, depth to cortex.

    Parameters
    ----------
    head : tmstarget.coil.adjust.PlanHead
    m1_ras_mm : array-like, shape (3,), optional
        A point at the hotspot (world RAS mm of the plan's T1); the nearest scalp point is used, the
        coil tangent to the scalp there; its handle angle is chosen to maximize |E| at the hotspot's
        cortex (:func:`hotspot_field`: the hotspot is hunted with the coil at its best orientation).
    hotspot_file : str or Path, optional
        Navigation file (Localite, Brainsight, ...) whose first coil pose is the hotspot.

    Returns
    -------
    dict
        ``source``, ``scalp_ras_mm``, ``axis_ras``, ``pose`` (None: best orientation to be searched),
        ``scalp_to_cortex_mm``, ``cortex_ras_mm``.
    """
    if hotspot_file is not None:
        from tmstarget.navigation import read_navigation_file

        nav = read_navigation_file(hotspot_file, t1=head.t1_path)
        posed = [t for t in nav.targets if t.pose_ras is not None]
        if not posed:
            if not nav.targets:
                raise InputError("the hotspot file holds no marker", path=Path(hotspot_file))
            m1_ras_mm, source = nav.targets[0].position_ras_mm, f"{Path(hotspot_file).name}: {nav.targets[0].name}"
        else:
            pose = np.asarray(posed[0].pose_ras, dtype=float)
            scalp, _ = head.scalp_at(pose[:3, 3])
            axis = pose[:3, 2]
            depth = head.depth_mm(scalp, axis)
            return {"source": f"{Path(hotspot_file).name} ({nav.format}): {posed[0].name}",
                    "scalp_ras_mm": scalp, "axis_ras": axis, "pose": pose, "scalp_to_cortex_mm": depth,
                    "cortex_ras_mm": scalp + depth * axis}
    else:
        source = "m1_ras_mm"
    scalp, normal = head.scalp_at(m1_ras_mm)
    depth = head.depth_mm(scalp, -normal)
    return {"source": source, "scalp_ras_mm": scalp, "axis_ras": -normal, "pose": None, "scalp_to_cortex_mm": depth,
            "cortex_ras_mm": scalp - depth * normal}


def hotspot_field(coil, head, hotspot, gap_mm):
    """|E| (V/m, 100 % output) at the hotspot's cortex and the pose giving it."""
    from tmstarget.efield.search import search_poses
    from tmstarget.efield.sphere import efield_at_points, fit_local_sphere

    cortex = hotspot["cortex_ras_mm"]
    if hotspot["pose"] is not None:
        sphere = fit_local_sphere(head.mesh.vertices_ras_mm, hotspot["scalp_ras_mm"])
        e = efield_at_points(coil, hotspot["pose"], cortex[None], sphere)[0]
        if not np.all(np.isfinite(e)):
            raise InputError("the hotspot's cortex lies outside the head sphere fitted at the hotspot")
        return float(np.linalg.norm(e)), hotspot["pose"]
    start = head.pose_at(hotspot["scalp_ras_mm"], 0.0, gap_mm=gap_mm)
    result = search_poses(coil, cortex, head.mesh, start, hotspot["scalp_ras_mm"], radius_mm=0.0, rings=0,
                          gap_mm=gap_mm, reference_ras=-head.frame.axes_ras[:, 1])
    return float(np.linalg.norm(result.best_e_ras_v_per_m)), result.best_pose_ras


def stokes_adjusted_rmt(rmt, target_depth_mm, m1_depth_mm, percent_per_mm=STOKES_PERCENT_PER_MM):
    """The motor threshold moved to the target's depth (Stokes 2005): ``RMT + slope × (depth_target − depth_M1)``.

    Also the plan report's rule (:func:`tmstarget.outputs.evidence.prescribed_intensity`).
    """
    return rmt + percent_per_mm * (target_depth_mm - m1_depth_mm)


def _output(value, prescription, what, warnings):
    entry = {"output_percent": min(value, 100.0)}
    if value > 100.0:
        entry["output_percent_unclipped"] = value
        warnings.append(f"dose {what}: {value:.1f} % of stimulator output needed, above 100 %: clipped to 100 % "
                        "(the target cannot be reached at this intensity)")
    if prescription is not None:
        prescribed = value * prescription / 100.0
        entry["prescribed_output_percent"] = min(prescribed, 100.0)
        if prescribed > 100.0:
            entry["prescribed_output_percent_unclipped"] = prescribed
            warnings.append(f"dose {what} at {prescription:g} % RMT: {prescribed:.1f} % of stimulator output, above "
                            "100 %: clipped to 100 %")
    return entry


def dose_block(coil, head, hotspot, document, rmt, *, gap_mm, prescription=None):
    """The ``dose`` block of ``efield.json`` (see the module docstring).

    Parameters
    ----------
    coil : tmstarget.efield.coils.Coil
    head : tmstarget.coil.adjust.PlanHead
    hotspot : dict
        :func:`motor_hotspot`.
    document : dict
        ``efield.json`` so far (``planned`` and ``best``).
    rmt : float
        Resting motor threshold, % of stimulator output.
    gap_mm : float
    prescription : float, optional
        Prescribed intensity, % RMT.

    Returns
    -------
    dict
    """
    e_m1, pose_m1 = hotspot_field(coil, head, hotspot, gap_mm)
    warnings = []
    best_pose = np.asarray(document["best"]["pose"], dtype=float)
    best_scalp = np.asarray(document["best"]["scalp_ras_mm"], dtype=float)
    depths = {"planned": float(head.plan.coil["scalp_to_cortex_mm"]),
              "best": head.depth_mm(best_scalp, best_pose[:3, 2])}
    stokes, matched = {}, {}
    for pose in ("planned", "best"):
        value = stokes_adjusted_rmt(rmt, depths[pose], hotspot["scalp_to_cortex_mm"])
        stokes[pose] = {"scalp_to_cortex_mm": depths[pose],
                        **_output(value, prescription, f"(a) scalp-to-cortex, {pose} pose", warnings)}
        e_target = float(document[pose]["e_magnitude_v_per_m"])
        matched[pose] = {"e_magnitude_v_per_m": e_target,
                         **_output(rmt * e_m1 / e_target, prescription, f"(b) E-field matched, {pose} pose", warnings)}
    return {
        "rmt_percent": rmt,
        "prescription_percent_rmt": prescription,
        "motor_hotspot": {
            "source": hotspot["source"],
            "scalp_ras_mm": [float(v) for v in hotspot["scalp_ras_mm"]],
            "cortex_ras_mm": [float(v) for v in hotspot["cortex_ras_mm"]],
            "scalp_to_cortex_mm": float(hotspot["scalp_to_cortex_mm"]),
            "pose": np.asarray(pose_m1).tolist(),
            "orientation": "as recorded" if hotspot["pose"] is not None else "the handle angle maximizing |E|",
            "e_v_per_m": e_m1,
        },
        "stokes": {"slope_percent_per_mm": STOKES_PERCENT_PER_MM,
                   "formula": "output = RMT + slope x (scalp_to_cortex_mm - motor_hotspot.scalp_to_cortex_mm)",
                   "reference": STOKES_REFERENCE, "assumptions": STOKES_ASSUMPTIONS, **stokes},
        "efield_matched": {"formula": "output = RMT x motor_hotspot.e_v_per_m / e_magnitude_v_per_m",
                           "assumptions": MATCHED_ASSUMPTIONS, **matched},
        "warnings": warnings,
    }
