"""The coil on a T1 in its own world: the head frame from the registration, and T1s without a scalp or face.

:func:`head_frame` gives the head's axes and midline in the T1 from the T1 -> MNI registration
(the handle rules need them when the T1 world is not MNI-aligned).

:func:`coils_on_t1` wraps :func:`tmstarget.analysis.engine.place_coils` with the checks of
:mod:`tmstarget.anatomy.t1`: a T1 without a scalp gets no coil at all (:data:`NO_SCALP_REASON`);
on a defaced T1 each candidate whose scalp point lies by the removed face loses its coil
(:meth:`~tmstarget.anatomy.t1.FaceCheck.coil_refusal`). Every refusal is a QC warning (printed
in the run summary), and ``anatomy.t1_check`` in ``target.json`` holds the measurements and,
under ``coil``, why the target has none. Without the target's coil no navigation file is written.
"""

import numpy as np

from tmstarget.anatomy.registration import map_points
from tmstarget.anatomy.t1 import check_face, check_scalp
from tmstarget.errors import InputError

#: Why a plan on a brain-extracted T1 has no coil.
NO_SCALP_REASON = ("the T1 has no scalp (brain-extracted: no skull or scalp around the brain), so there is no "
                   "head surface to place the coil on: no coil pose and no navigation files; give the whole-head "
                   "T1 to place the coil")


def head_frame(t1_to_mni):
    """Head axes and a midline point in T1 world from the registration.

    Returns
    -------
    head_axes_ras : ndarray, shape (3, 3)
        Columns: the head's Right, Anterior, Superior unit vectors in T1 RAS
        (MNI axes mapped into the T1, orthonormalised).
    midline_ras_mm : ndarray, shape (3,)
        MNI (0, 0, 0) mapped into the T1 (on the midsagittal plane).
    """
    mni = np.array([[0.0, 0, 0], [40.0, 0, 0], [0, 40.0, 0], [0, 0, 40.0]])
    t1 = map_points(mni, t1_to_mni, "inverse")
    axes = (t1[1:] - t1[0]).T
    u, _, vt = np.linalg.svd(axes)
    rotation = u @ vt
    if np.linalg.det(rotation) < 0:
        raise InputError("the T1 -> MNI registration flips left and right; check the T1 orientation")
    return rotation, t1[0]


def coils_on_t1(result, t1_path, t1_to_mni, progress=None):
    """Coil blocks (None where refused) and the anatomy block of a plan in a T1's world.

    Parameters
    ----------
    result : PlanResult
        In the world of ``t1_path`` (``space == "T1w"``).
    t1_path : Path
    t1_to_mni : Transform
        Registration of that T1: for the face check and the head frame of the handle rules
        (:func:`head_frame`).
    progress : callable, optional
        Called with a message before the coils are placed.

    Returns
    -------
    coils : list of (dict or None), or None
        One ``coil`` block per candidate (None where refused); None when the T1 has no scalp.
    anatomy : dict
        The ``anatomy`` block, with ``t1_check``.
    """
    from tmstarget.coil.plan_coils import anatomy_block, place_coils
    from tmstarget.ingest.read import read_image

    def say(message):
        if progress is not None:
            progress(message)

    t1_img = read_image(t1_path, "T1")
    scalp = check_scalp(t1_img)
    face = check_face(t1_img, t1_to_mni) if scalp.scalp else None
    warnings = result.qc.setdefault("warnings", [])
    check = {**scalp.to_dict(), **(face.to_dict() if face is not None else {"face": "not checked (no scalp)"})}
    if not scalp.scalp:
        say("no coil: the T1 has no scalp")
        warnings.append(NO_SCALP_REASON)
        anatomy = anatomy_block(t1_path, t1_img, result.space)
        anatomy["t1_check"] = {**check, "coil": NO_SCALP_REASON}
        return None, anatomy
    say("segmenting the T1 (grey/white matter, CSF) and placing the coil on its scalp")
    axes, midline = head_frame(t1_to_mni)
    _, coils, anatomy = place_coils(result, t1_path, head_axes_ras=axes, midline_ras_mm=midline, t1_to_mni=t1_to_mni,
                                    t1_img=t1_img)
    if face.defaced:
        warnings.append("the T1 has no face (defaced): coils are placed only where the scalp is intact")
    for k, (candidate, coil) in enumerate(zip(result.candidates, coils)):
        reason = face.coil_refusal(coil["scalp_ras_mm"])
        if reason is not None:
            coils[k] = None
            what = "the target" if k == 0 else f"candidate {candidate.name}"
            warnings.append(f"no coil for {what}: {reason}" + ("; no navigation files" if k == 0 else ""))
            if k == 0:
                check["coil"] = f"not placed: {reason}"
    anatomy["t1_check"] = check
    return coils, anatomy
