"""The TMS coil on the patient's head.

:mod:`tmstarget.coil.placement` places it over a cortical target on the scalp
of the T1 (:mod:`tmstarget.anatomy.scalp`): the scalp point above the target,
the handle direction, the SimNIBS coil pose and the scalp-to-cortex depth.
The E-field module will live here too.
"""
