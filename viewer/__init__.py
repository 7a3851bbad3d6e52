"""The tmstarget desktop viewer (``tmstarget view``; installed as ``tmstarget.viewer`` from ``viewer/``).

Modules: :mod:`~tmstarget.viewer.content` (what a plan shows, as data),
:mod:`~tmstarget.viewer.scene` (the 3D scene in pyvista, off-screen too: the
report's figure), :mod:`~tmstarget.viewer.app` (the Qt window: ``PlanViewer``
widget, ``ViewerWindow``), :mod:`~tmstarget.viewer.slices`,
:mod:`~tmstarget.viewer.panels`, :mod:`~tmstarget.viewer.adjust`,
:mod:`~tmstarget.viewer.live`, :mod:`~tmstarget.viewer.command` (the command
line). Importing this package loads neither Qt nor pyvista.
"""
