"""Adjusting a plan's coil: the handle angle about the coil normal, the coil moved along the scalp, an explicit pose.

The **handle angle** (``handle_angle_deg``, also in ``efield.json``) is measured in the coil plane, about
the coil normal: from the head's posterior direction projected into that plane to the handle (``-y``),
positive toward the lateral side of the target's hemisphere, as the protocol's ``[coil] handle_angle_deg``
(45 = the DLPFC rule). For a left-hemisphere target a positive angle is a right-handed rotation about the
coil's z (into the head); for a right-hemisphere target about -z. A target within ``midline_tolerance_mm``
of the midsagittal plane has no lateral side: positive is then toward the head's left (as for a left
target). So changing the angle by d rotates the pose's x and y axes about z by exactly ``+d`` (left or
midline target) or ``-d`` (right target); the centre and z are unchanged, and equal steps of angle are
equal turns of the coil (the E-field search's 5° steps). The protocol's rule instead turns the handle in
the head's axial plane and then projects it onto the coil plane; on a coil tilted far from the axial
plane the two differ: the sample patient's left-DLPFC coil, placed by the 45° rule with its normal 60°
from vertical, reads 26.4° here (``tmstarget.revise_plan`` on ``tmstarget plan sample_data --participant
01 --protocol sgacc-dlpfc``). Both agree for a coil lying flat on the vertex.

:class:`PlanHead` holds what moving a coil on a plan's T1 needs (scalp surface, tissue segmentation,
head frame), loaded once; :meth:`PlanHead.place` gives the ``coil`` block of a new pose, with the depth
measured as :func:`tmstarget.coil.plan_coils.place_coils` measures it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tmstarget.anatomy.scalp import as_point, closest_point, surface_normal
from tmstarget.coil.placement import CoilPlacement, _unit, pose_from_handle, scalp_to_cortex_mm
from tmstarget.errors import InputError, OrientationError
from tmstarget.spaces import angle_between_deg, validate_pose

#: A target closer than this (mm) to the midsagittal plane counts as midline (as ``handle_direction``).
MIDLINE_TOLERANCE_MM = 10.0


@dataclass(frozen=True)
class HeadFrame:
    """The head's axes and midsagittal plane in the T1 world, for handle angles.

    Attributes
    ----------
    axes_ras : ndarray, shape (3, 3)
        Columns: the head's Right, Anterior, Superior unit vectors in world RAS.
    midline_ras_mm : ndarray, shape (3,)
        A point of the midsagittal plane.
    source : str
        Where the frame came from.
    """

    axes_ras: np.ndarray
    midline_ras_mm: np.ndarray
    source: str

    def side(self, target_ras_mm) -> float:
        """+1 when a positive handle angle turns right-handed about the coil's z (left or midline target), else -1."""
        lateral = float((as_point(target_ras_mm, "target_ras_mm") - self.midline_ras_mm) @ self.axes_ras[:, 0])
        return -1.0 if lateral > MIDLINE_TOLERANCE_MM else 1.0

    def _posterior_in_plane(self, z):
        posterior = -self.axes_ras[:, 1]
        in_plane = posterior - (posterior @ z) * z
        if np.linalg.norm(in_plane) < np.sin(np.deg2rad(5.0)):
            raise OrientationError("the handle angle is undefined for a coil normal within 5° of the head's "
                                   "anterior-posterior axis; give an explicit pose")
        return in_plane / np.linalg.norm(in_plane)

    def handle(self, z_ras, angle_deg, target_ras_mm):
        """Unit handle direction in the plane normal to ``z_ras`` at ``angle_deg`` (module convention)."""
        z = _unit(z_ras, "coil normal z_ras")
        p = self._posterior_in_plane(z)
        a = np.deg2rad(float(angle_deg)) * self.side(target_ras_mm)
        return np.cos(a) * p + np.sin(a) * np.cross(z, p)

    def angle_of(self, pose_ras, target_ras_mm) -> float:
        """The handle angle (degrees, in (-180, 180]) of a SimNIBS pose for a target."""
        pose = np.asarray(pose_ras, dtype=float)
        z, handle = pose[:3, 2], -pose[:3, 1]
        p = self._posterior_in_plane(z)
        angle = np.degrees(np.arctan2(np.cross(p, handle) @ z, p @ handle)) * self.side(target_ras_mm)
        angle = float((angle + 180.0) % 360.0 - 180.0)
        return 180.0 if angle == -180.0 else angle


def plan_transform(plan_dir, document):
    """The plan's T1 -> MNI registration from ``xfm/`` (a native plan), or None for an MNI-space plan.

    Raises
    ------
    InputError
        A plan in a T1's world without its registration in ``xfm/`` (fMRIPrep T1w plans keep it in the
        dataset, not in the plan folder).
    """
    from tmstarget.anatomy.registration import Transform

    if document["space"] != "T1w":
        return None
    found = sorted(Path(plan_dir).glob("xfm/*_from-T1w_to-MNI*_xfm.json"))
    if not found:
        raise InputError("the plan is in a T1's world but holds no T1 -> MNI registration (xfm/*_from-T1w_to-MNI*"
                         "_xfm.json): its head frame and tissue priors cannot be rebuilt", path=Path(plan_dir))
    spec = json.loads(found[0].read_text(encoding="utf-8"))
    lists = {name: ([str(found[0].parent / item["file"]) for item in spec[name]],
                    [bool(item["invert"]) for item in spec[name]]) for name in ("fwd", "inv")}
    return Transform(spec["from"], spec["to"], *lists["fwd"], *lists["inv"])


class PlanHead:
    """The T1 of a plan folder, ready to move its coil: scalp surface, tissue segmentation, head frame.

    Parameters
    ----------
    plan_dir : str or Path
        A plan folder with a coil (``target.json`` ``coil`` not null).
    plan : tmstarget.Plan, optional
        The plan already loaded from ``plan_dir``.

    Attributes
    ----------
    plan : tmstarget.Plan
    t1_img : nibabel.Nifti1Image
    mesh : tmstarget.anatomy.scalp.SurfaceMesh
    tissue : tmstarget.anatomy.tissue.TissueMaps
    frame : HeadFrame
    t1_to_mni : Transform or None
    """

    def __init__(self, plan_dir, plan=None):
        from tmstarget.coil.plan_coils import cached_scalp_surface, cached_segment_t1
        from tmstarget.ingest.read import read_image
        from tmstarget.outputs.plan import load_plan

        self.plan_dir = Path(plan_dir)
        self.plan = load_plan(self.plan_dir) if plan is None else plan
        if self.plan.coil is None:
            raise InputError(f"the plan has no coil to adjust ({self.plan.document.get('coil_reason')})",
                             path=self.plan_dir / "target.json", key="coil")
        t1_path = Path(self.plan.anatomy["t1"])
        t1_path = t1_path if t1_path.is_absolute() else self.plan_dir / t1_path
        if not t1_path.is_file():
            raise InputError("the plan's T1 is missing", path=t1_path)
        self.t1_path = t1_path
        self.t1_img = read_image(t1_path, "T1")
        self.t1_to_mni = plan_transform(self.plan_dir, self.plan.document)
        # the plan's own scalp and tissues, from the T1 cache when this T1 was planned here (the same numbers)
        self.mesh = cached_scalp_surface(t1_path, self.t1_img)
        self.tissue = cached_segment_t1(t1_path, self.t1_img, self.t1_to_mni)
        self.cortex_img = self.tissue.parenchyma_img()
        if self.t1_to_mni is None:
            self.frame = HeadFrame(np.eye(3), np.asarray(self.mesh.centroid_ras_mm, dtype=float),
                                   "T1 world axes (MNI space), midline at the scalp surface's centroid")
        else:
            from tmstarget.workflows.t1_coil import head_frame

            axes, midline = head_frame(self.t1_to_mni)
            self.frame = HeadFrame(axes, midline, "MNI axes through the plan's T1 -> MNI registration (xfm/)")

    @property
    def target_ras_mm(self):
        """The plan's target (the fMRI point), world RAS mm."""
        return np.asarray(self.plan.target.ras_mm, dtype=float)

    def scalp_at(self, point_ras_mm):
        """The scalp point closest to ``point_ras_mm`` and the outward scalp normal there."""
        point, _ = closest_point(as_point(point_ras_mm, "scalp point"), self.mesh)
        return point, surface_normal(point, self.mesh)  # the smoothing of place_coil's default

    def pose_at(self, scalp_point_ras_mm, handle_angle_deg, gap_mm=0.0):
        """Pose of a coil tangent to the scalp at the point nearest ``scalp_point_ras_mm``.

        The centre is ``gap_mm`` outward along the scalp normal, z = minus the smoothed scalp normal,
        the handle at ``handle_angle_deg`` (module convention).
        """
        scalp, normal = self.scalp_at(scalp_point_ras_mm)
        z = -normal
        return pose_from_handle(scalp + float(gap_mm) * normal, z, self.frame.handle(z, handle_angle_deg,
                                                                                     self.target_ras_mm))

    def depth_mm(self, scalp_ras_mm, axis_ras, target_ras_mm=None):
        """Scalp-to-cortex distance (mm) along ``axis_ras`` from ``scalp_ras_mm``, as ``place_coils`` measures it."""
        from tmstarget.coil.plan_coils import CORTEX_RADIUS_MM

        target = self.target_ras_mm if target_ras_mm is None else target_ras_mm
        return scalp_to_cortex_mm(scalp_ras_mm, target, self.cortex_img, axis_ras=axis_ras,
                                  radius_mm=CORTEX_RADIUS_MM)

    def place(self, pose_ras, rule):
        """The ``coil`` block of ``target.json`` for a pose over the plan's target.

        The scalp point is the scalp point nearest the coil centre; the depth is measured from it along
        the coil's z. Besides the usual keys the block gives ``handle_angle_deg`` (module convention),
        ``angle_from_scalp_normal_deg`` (between z and the inward scalp normal there; 0 for a coil
        tangent to the scalp), ``coil_to_scalp_mm`` and ``head_frame``.

        Parameters
        ----------
        pose_ras : array-like, shape (4, 4)
            SimNIBS pose, world RAS mm of the plan's T1.
        rule : str
            How the handle was chosen (``handle_rule`` of the block).
        """
        from tmstarget.coil.plan_coils import coil_block

        pose = validate_pose(np.asarray(pose_ras, dtype=float), what="coil pose")
        target = self.target_ras_mm
        scalp, normal = self.scalp_at(pose[:3, 3])
        z = pose[:3, 2]
        placement = CoilPlacement(pose, scalp, normal, rule, float(np.linalg.norm(target - scalp)),
                                  self.depth_mm(scalp, z))
        block = coil_block(placement, target, self.tissue, self.plan.protocol.coil)
        block["handle_angle_deg"] = self.frame.angle_of(pose, target)
        block["angle_from_scalp_normal_deg"] = angle_between_deg(z, -normal)
        block["coil_to_scalp_mm"] = float((pose[:3, 3] - scalp) @ normal)
        block["head_frame"] = self.frame.source
        return block
