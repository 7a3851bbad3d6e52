"""Compare what a navigator recorded with what was planned.

For each recorded pose or sample: the distance (mm) from the planned coil
centre (or, for a position-only plan, the planned target point), the total
rotation angle (°) between the recorded and planned coil frames, and the
angles between their normals and handle directions.
"""

from __future__ import annotations

import numpy as np

from tmstarget.errors import NavigationFormatError
from tmstarget.navigation._common import load_t1_reference
from tmstarget.navigation.export import load_plan
from tmstarget.navigation.formats import read_navigation_file
from tmstarget.spaces import angle_between_deg, rotation_angle_deg

__all__ = ["compare_recorded", "COMPARE_COLUMNS"]

COMPARE_COLUMNS = [
    "index",
    "name",
    "kind",
    "distance_mm",
    "angle_deg",
    "normal_angle_deg",
    "handle_angle_deg",
    "distance_to_cortical_target_mm",
    "didt_a_per_s",
    "onset_ms",
]


def compare_recorded(plan_dir, recorded_file, *, t1_choice=None, fmt=None, assume=None):
    """Distance and angle of each recorded pose/sample from the planned pose.

    Parameters
    ----------
    plan_dir : str or Path
        Plan folder (``target.json`` and its T1, whose sha256 is checked).
    recorded_file : str or Path
        Any readable navigation file (Localite TriggerMarkers or
        InstrumentMarkers, Brainsight samples, ANT, Slicer, ...).
    t1_choice : {None, "qform", "sform"}
        As for export, when the T1's qform and sform differ.
    fmt : str, optional
        Format key when it cannot be detected from the file.
    assume : {None, "LPS", "RAS"}
        For Slicer files without ``coordinateSystem``.

    Returns
    -------
    list of dict
        One per recorded marker, keys :data:`COMPARE_COLUMNS`; angles are
        None when the recorded marker or the plan has no orientation.

    Raises
    ------
    NavigationFormatError
        The file names a different T1 (sha256) than the plan, or holds no
        poses.
    """
    plan = load_plan(plan_dir)
    t1ref = load_t1_reference(plan.t1_path, t1_choice, expected_sha256=plan.t1_sha256)
    nav = read_navigation_file(recorded_file, fmt, t1=t1ref, assume=assume)
    if nav.t1_sha256 and nav.t1_sha256 != t1ref.sha256:
        raise NavigationFormatError(
            f"the recorded file refers to T1 sha256 {nav.t1_sha256}, but the plan's T1 is "
            f"{t1ref.sha256}: the positions are in another image's world",
            path=recorded_file,
        )
    if not nav.targets:
        raise NavigationFormatError(
            "no recorded poses or positions in the file", path=recorded_file
        )
    planned = plan.target
    cortex = planned.info.get("cortex_ras_mm")
    cortex = None if cortex is None else np.asarray(cortex, dtype=float)
    rows = []
    for i, rec in enumerate(nav.targets):
        row = dict.fromkeys(COMPARE_COLUMNS)
        row.update(index=i, name=rec.name, kind=rec.kind)
        row["distance_mm"] = float(np.linalg.norm(rec.position_ras_mm - planned.position_ras_mm))
        if cortex is not None:
            row["distance_to_cortical_target_mm"] = float(
                np.linalg.norm(rec.position_ras_mm - cortex)
            )
        if rec.has_pose and planned.has_pose:
            row["angle_deg"] = rotation_angle_deg(planned.pose_ras, rec.pose_ras)
            row["normal_angle_deg"] = angle_between_deg(planned.normal_ras, rec.normal_ras)
            row["handle_angle_deg"] = angle_between_deg(planned.handle_ras, rec.handle_ras)
        info = rec.info or {}
        row["didt_a_per_s"] = info.get("didt_a_per_s")
        row["onset_ms"] = info.get("onset_ms")
        rows.append(row)
    return rows
