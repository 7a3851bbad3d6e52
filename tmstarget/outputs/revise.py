"""A new version of a plan with its coil adjusted: :func:`revise_plan` (``tmstarget.revise_plan``).

The original folder is never touched: the revision is a new plan folder (maps, masks, T1, transforms
copied) whose target coil is recomputed on the plan's T1 (:class:`tmstarget.coil.adjust.PlanHead`) and
whose navigation files are written again and verified by reading each back
(:func:`tmstarget.navigation.export.export_plan`). ``provenance.revision`` in its ``target.json`` records
the parent (its ``target.json`` sha256 and version), what changed and why.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path

import numpy as np

from tmstarget.errors import InputError


def revise_plan(plan_dir, output, *, handle_angle_deg=None, scalp_point_ras_mm=None, pose=None, reason,
                navigation="all", gap_mm=None, force=False, head=None, writers=()):
    """Write a new version of a plan with the target's coil moved, rotated or set to a pose.

    Parameters
    ----------
    plan_dir : str or Path
        The plan folder (``tmstarget plan --output``); left byte-identical.
    output : str or Path
        The new plan folder; never ``plan_dir`` or a folder inside it.
    handle_angle_deg : float, optional
        New handle angle in the convention of :mod:`tmstarget.coil.adjust` (degrees from the head's
        posterior direction toward the target's lateral side, about the coil normal; 45 = the DLPFC
        rule). Default: the current angle.
    scalp_point_ras_mm : array-like, shape (3,), optional
        Move the coil along the scalp: its centre goes to the scalp point nearest this point (world
        RAS mm of the plan's T1), tangent to the scalp there; the depth is measured again along its axis.
        Default: the current scalp point.
    pose : array-like, shape (4, 4), optional
        An explicit SimNIBS pose (world RAS mm; z into the head, handle = -y); not with the two above.
    reason : str
        Why (recorded in provenance).
    navigation : str or iterable of str, default="all"
        Navigation formats written into ``output/navigation/`` (as ``Plan.save``); None for none.
    gap_mm : float, optional
        Coil centre height above the scalp for a moved or rotated coil; default: the current coil's.
    force : bool, default=False
        Replace a non-empty ``output``.
    head : tmstarget.coil.adjust.PlanHead, optional
        The plan's head already loaded (saves the tissue segmentation when revising repeatedly).
    writers : iterable of callable
        More files for the new folder, as ``Plan.save(writers=...)``: e.g.
        :class:`tmstarget.outputs.report.ReportWriter` for its ``report.html`` (the parent's report is
        never copied: it shows the parent's coil).

    Returns
    -------
    tmstarget.Plan
        The new plan, as saved.

    Raises
    ------
    InputError
        No change asked, ``pose`` with another change, no reason, a plan without coil, or a bad pose.
    OutputError
        ``output`` is the plan folder or inside it, or is not empty (without ``force``).
    """
    from tmstarget._fileio import sha256_file
    from tmstarget.coil.adjust import PlanHead
    from tmstarget.outputs.plan import load_plan

    plan_dir = Path(plan_dir)
    if not isinstance(reason, str) or not reason.strip():
        raise InputError("a revision needs a reason (recorded in provenance)", key="reason")
    if pose is not None and (handle_angle_deg is not None or scalp_point_ras_mm is not None):
        raise InputError("give either an explicit pose or a handle angle and/or scalp point, not both", key="pose")
    if pose is None and handle_angle_deg is None and scalp_point_ras_mm is None:
        raise InputError("nothing to revise: give handle_angle_deg, scalp_point_ras_mm or pose")
    if handle_angle_deg is not None and (isinstance(handle_angle_deg, bool) or not np.isfinite(handle_angle_deg)):
        raise InputError(f"handle_angle_deg must be a finite number; got {handle_angle_deg!r}", key="handle_angle_deg")
    plan = load_plan(plan_dir) if head is None else head.plan
    if plan.coil is None:
        raise InputError(f"the plan has no coil to revise ({plan.document.get('coil_reason')})",
                         path=plan_dir / "target.json", key="coil")
    head = PlanHead(plan_dir, plan) if head is None else head
    old = np.asarray(plan.coil["matrix"], dtype=float)
    old_scalp = np.asarray(plan.coil["scalp_ras_mm"], dtype=float)
    changes = {}
    if pose is not None:
        new_pose = _pose_4x4(pose)
        rule = "explicit pose"
        changes["pose"] = new_pose.tolist()
    else:
        if gap_mm is None:
            gap_mm = float((old[:3, 3] - old_scalp) @ -old[:3, 2])
        angle = head.frame.angle_of(old, head.target_ras_mm) if handle_angle_deg is None else float(handle_angle_deg)
        point = old_scalp if scalp_point_ras_mm is None else scalp_point_ras_mm
        if scalp_point_ras_mm is None:  # rotation only: about the current axis, centre kept
            from tmstarget.coil.placement import pose_from_handle

            new_pose = pose_from_handle(old[:3, 3], old[:3, 2], head.frame.handle(old[:3, 2], angle,
                                                                                  head.target_ras_mm))
        else:
            new_pose = head.pose_at(point, angle, gap_mm=gap_mm)
        rule = f"{angle:g} deg (revised; tmstarget.coil.adjust convention)"
        if handle_angle_deg is not None:
            changes["handle_angle_deg"] = angle
        if scalp_point_ras_mm is not None:
            changes["scalp_point_ras_mm"] = [float(v) for v in scalp_point_ras_mm]
    block = head.place(new_pose, rule)
    document = json.loads(json.dumps(plan.document))
    parent_sha = sha256_file(plan_dir / "target.json")
    parent_revision = document["provenance"].get("revision")
    version = 2 if parent_revision is None else int(parent_revision["version"]) + 1
    changes["previous"] = {key: plan.coil.get(key) for key in ("matrix", "scalp_ras_mm", "scalp_to_cortex_mm")}
    changes["previous"]["handle_angle_deg"] = head.frame.angle_of(old, head.target_ras_mm)
    document["coil"] = block
    if document["candidates"] and "coil" in document["candidates"][0]:
        document["candidates"][0]["coil"] = block
    from tmstarget.coil.plan_coils import coil_warnings

    # the target's coil warnings now describe the revised coil (the candidates' are unchanged)
    old_warnings = coil_warnings(plan.coil, "the target", plan.protocol.coil, True) if "within_max_depth" in plan.coil \
        else []
    warnings = document["qc"].setdefault("warnings", [])
    document["qc"]["warnings"] = [w for w in warnings if w not in old_warnings] + coil_warnings(
        block, "the target", plan.protocol.coil, True)
    document["provenance"]["revision"] = {
        "version": version,
        "parent_target_json_sha256": parent_sha,
        "parent_version": 1 if parent_revision is None else parent_revision["version"],
        "parent_history": ([] if parent_revision is None else
                           [*parent_revision.get("parent_history", []), {k: v for k, v in parent_revision.items()
                                                                          if k != "parent_history"}]),
        "changes": changes,
        "reason": reason.strip(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tmstarget_version": _version(),
    }
    # a new Plan (the head's stays the parent); the parent folder is an input: never written into or held
    revised = dataclasses.replace(plan, document=json.loads(json.dumps(document, allow_nan=False)),
                                  inputs=(plan_dir,))
    revised.save(output, force=force, navigation=navigation, writers=writers)
    return revised


def _pose_4x4(pose):
    from tmstarget.errors import OrientationError
    from tmstarget.spaces import validate_pose

    try:
        matrix = np.asarray(pose, dtype=float)
    except (TypeError, ValueError):
        raise InputError("pose must be a 4x4 matrix of numbers", key="pose") from None
    if matrix.shape != (4, 4):
        raise InputError(f"pose must be a 4x4 matrix; got shape {matrix.shape}", key="pose")
    try:
        return validate_pose(matrix, what="pose")
    except OrientationError as exc:
        raise InputError(exc.message, key="pose") from None


def _version():
    from tmstarget import __version__

    return __version__
