"""Adjusting the coil in the viewer: handle angle and scalp point, on the library's :class:`PlanHead`.

No geometry of its own: the pose of a coil tangent to the scalp at a point
with a handle angle is :meth:`tmstarget.coil.adjust.PlanHead.pose_at` (handle
angle convention of :mod:`tmstarget.coil.adjust`: degrees from the head's
posterior direction toward the target's lateral side, about the coil normal),
its depth, angle from the scalp normal and the rest of the ``coil`` block are
:meth:`~tmstarget.coil.adjust.PlanHead.place`, and saving is
:func:`tmstarget.revise_plan` with the same head (no second segmentation).
"""

from __future__ import annotations

import numpy as np


class CoilAdjuster:
    """The coil being adjusted: scalp point and handle angle, with the pose and coil block they give.

    Parameters
    ----------
    head : tmstarget.coil.adjust.PlanHead
        The plan's head (scalp, tissues, head frame), loaded once.

    Attributes
    ----------
    scalp_ras_mm : ndarray, shape (3,)
    handle_angle_deg : float
    pose_ras : ndarray, shape (4, 4)
    block : dict
        The ``coil`` block of the current pose (``scalp_to_cortex_mm``,
        ``handle_angle_deg``, ``angle_from_scalp_normal_deg``, ...).
    """

    def __init__(self, head):
        self.head = head
        coil = head.plan.coil
        self.original_pose = np.asarray(coil["matrix"], dtype=float)
        centre, z = self.original_pose[:3, 3], self.original_pose[:3, 2]
        self.gap_mm = float((centre - np.asarray(coil["scalp_ras_mm"])) @ -z)  # coil centre above the scalp
        self.reset()

    @property
    def changed(self):
        """Whether the pose differs from the plan's (beyond 1e-6 mm / rad)."""
        return not np.allclose(self.pose_ras, self.original_pose, atol=1e-6)

    def _update(self, pose_ras):
        self.pose_ras = pose_ras
        self.block = self.head.place(pose_ras, f"{self.handle_angle_deg:g} deg (viewer)")
        return self.block

    def rotate(self, delta_deg):
        """Turn the handle by ``delta_deg`` (handle angle convention) about the current coil axis (centre and
        normal kept, as :func:`tmstarget.revise_plan` turns it); returns the new coil block."""
        from tmstarget.coil.placement import pose_from_handle

        self.handle_angle_deg = float((self.handle_angle_deg + delta_deg + 180.0) % 360.0 - 180.0)
        z = self.pose_ras[:3, 2]
        handle = self.head.frame.handle(z, self.handle_angle_deg, self.head.target_ras_mm)
        return self._update(pose_from_handle(self.pose_ras[:3, 3], z, handle))

    def move(self, dx_mm=0.0, dy_mm=0.0):
        """Move the coil along the scalp by ``dx_mm`` along its x axis (between the wings) and ``dy_mm`` along y
        (away from the handle); it stays tangent to the scalp. Returns the new coil block."""
        target = self.pose_ras[:3, 3] + float(dx_mm) * self.pose_ras[:3, 0] + float(dy_mm) * self.pose_ras[:3, 1]
        self.scalp_ras_mm = self.head.scalp_at(target)[0]
        self.moved = True
        return self._update(self.head.pose_at(self.scalp_ras_mm, self.handle_angle_deg, self.gap_mm))

    def reset(self):
        """Back to the plan's pose; returns its coil block."""
        coil = self.head.plan.coil
        self.scalp_ras_mm = np.asarray(coil["scalp_ras_mm"], dtype=float)
        self.handle_angle_deg = self.head.frame.angle_of(self.original_pose, self.head.target_ras_mm)
        self.pose_ras, self.block = self.original_pose, self.head.place(self.original_pose, coil["handle_rule"])
        self.moved = False
        return self.block

    def save(self, output, reason, navigation="all", force=False):
        """Write the adjusted coil as a new plan version (:func:`tmstarget.revise_plan`); returns the new Plan."""
        from tmstarget.outputs.revise import revise_plan

        return revise_plan(self.head.plan_dir, output, handle_angle_deg=self.handle_angle_deg,
                           scalp_point_ras_mm=self.scalp_ras_mm if self.moved else None, reason=reason,
                           navigation=navigation, gap_mm=self.gap_mm, force=force, head=self.head)
