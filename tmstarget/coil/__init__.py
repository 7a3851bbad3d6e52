"""The TMS coil on the patient's head.

:mod:`tmstarget.coil.placement` places it over a cortical target on the scalp
of the T1 (:mod:`tmstarget.anatomy.scalp`): the scalp point above the target,
the handle direction, the SimNIBS coil pose and the scalp-to-cortex depth.
  :mod:`tmstarget.coil.plan_coils` does it for every candidate of a plan,
with the T1's tissue segmentation. The E-field module will live here too.
"""
