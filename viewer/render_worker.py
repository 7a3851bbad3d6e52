"""The report's 3D view from a child process started early: ``python -m tmstarget.viewer.render_worker``.

Importing pyvista and VTK, opening an off-screen OpenGL context and compiling the scene's shaders
cost about 1.5-2 s of one core before the first picture (issue 19). A command that will write a
report (``tmstarget plan``) starts this worker first thing, so that cost overlaps the analysis; when
the plan folder exists the report sends one request and draws its other figures while the worker
renders (:class:`tmstarget.cli._common.SceneRenderer` is the other end). It starts at a lower
priority (:data:`WARM_UP_NICENESS`) so that its start-up only takes CPU the analysis leaves idle.

Protocol (binary pipes): each request is one JSON line on stdin, ``{"plan": PLAN_DIR, "size": [W, H]}``;
each answer on stdout is one JSON line, ``{"ok": true, "length": N}`` followed by N bytes of PNG, or
``{"ok": false, "error": "..."}``. The worker exits at the end of stdin. Anything a library prints
goes to stderr, never into the answers.
"""

from __future__ import annotations

import json
import os
import select
import sys

#: Niceness added while the worker starts up and waits: its imports and warm-up render take idle CPU only,
#: never the plan's analysis. When the request comes the worker returns to its parent's priority where the
#: system allows it (raising priority needs CAP_SYS_NICE; otherwise it stays lower: on a machine running
#: only the plan that costs nothing, the plan then waits for the picture with its cores idle).
WARM_UP_NICENESS = 10
#: ``TMSTARGET_RENDER_NICE=0`` leaves the worker at its parent's priority (for measurements).
NICE_VARIABLE = "TMSTARGET_RENDER_NICE"


def _warm_up():
    """Load pyvista/VTK and render a small scene with every kind of actor the report's view has (translucent
    head, brain coloured by a map with its scalar bar, markers, labels, coil): the real render then finds the
    libraries loaded and the shaders compiled."""
    import nibabel as nib
    import numpy as np

    from tmstarget.anatomy.scalp import mask_surface
    from tmstarget.viewer.content import Marker, SceneData
    from tmstarget.viewer.scene import render_png

    shape = (40, 48, 40)
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = -np.array(shape) * 2.0
    ijk = np.indices(shape).transpose(1, 2, 3, 0)
    world = ijk * 4.0 + affine[:3, 3]
    radius = np.sqrt(((world / [70.0, 90.0, 75.0]) ** 2).sum(axis=-1))
    head = mask_surface(nib.Nifti1Image((radius < 1.0).astype(np.uint8), affine), smoothing_mm=4.0)
    brain_mask = radius < 0.8
    brain = mask_surface(nib.Nifti1Image(brain_mask.astype(np.uint8), affine), smoothing_mm=4.0)
    map_img = nib.Nifti1Image(np.where(brain_mask, world[..., 0] / 50.0, 0.0).astype(np.float32), affine)
    target = np.array([0.0, 0.0, 55.0])
    pose = np.eye(4)
    pose[:3, :3] = [[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]]  # z into the head, from the top
    pose[:3, 3] = [0.0, 0.0, 75.0]
    data = SceneData(None, None, head, "warm-up", brain, map_img, "warm-up", "", target, pose, 20.0,
                     [Marker("target", "target", target), Marker("#2", "candidate", target + 8.0),
                      Marker("beam-f3", "classic", target - 8.0)])
    render_png(data, size=(160, 120), threshold=0.2)


def _render(request):
    from tmstarget.outputs.plan import load_plan
    from tmstarget.outputs.report_raster import png_bytes
    from tmstarget.viewer.scene import render_png

    return png_bytes(render_png(load_plan(request["plan"]), size=tuple(request.get("size", (640, 480)))))


def _pending(stream):
    """A request is already waiting on ``stream`` (skip the warm-up: render it straight away)."""
    try:
        return bool(select.select([stream], [], [], 0)[0])
    except (OSError, ValueError):
        return False


def main():
    """Serve render requests from stdin until it closes (see the module docstring)."""
    priority = os.getpriority(os.PRIO_PROCESS, 0)
    if os.environ.get(NICE_VARIABLE, "1") != "0":
        os.setpriority(os.PRIO_PROCESS, 0, priority + WARM_UP_NICENESS)
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # VTK or a library printing to stdout must not corrupt the answers
    requests = sys.stdin.buffer
    if not _pending(requests):
        try:
            _warm_up()
        except Exception:  # noqa: BLE001 - only a head start: the real render reports its own failure
            pass
    for line in requests:
        try:  # the plan waits for this picture now: back to its priority where the system lets a process rise
            os.setpriority(os.PRIO_PROCESS, 0, priority)
        except OSError:
            pass
        try:
            png = _render(json.loads(line))
            answers.write(json.dumps({"ok": True, "length": len(png)}).encode() + b"\n" + png)
        except Exception as exc:  # noqa: BLE001 - the report says why it has no 3D view
            answers.write(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}).encode() + b"\n")
        answers.flush()


if __name__ == "__main__":
    main()
