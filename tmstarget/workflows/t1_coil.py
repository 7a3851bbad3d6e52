"""The coil on a T1 in its own world: the head frame from the registration, and T1s without a scalp or face.

:func:`head_frame` gives the head's axes and midline in the T1 from the T1 -> MNI registration
(the handle rules need them when the T1 world is not MNI-aligned).

:func:`coils_on_t1` wraps :func:`tmstarget.analysis.engine.place_coils` with the checks of
:mod:`tmstarget.anatomy.t1`: a T1 without a scalp gets no coil at all (:data:`NO_SCALP_REASON`);
on a defaced T1 each candidate whose scalp point lies by the removed face loses its coil
(:meth:`~tmstarget.anatomy.t1.FaceCheck.coil_refusal`). Every refusal is a QC warning (printed
in the run summary), and ``anatomy.t1_check`` in ``target.json`` holds the measurements and,
under ``coil``, why the target has none. Without the target's coil no navigation file is written.

:class:`T1Anatomy` holds what the coil stage reads from the T1 (the image, its head mask, the scalp
check, the scalp surface, the tissue segmentation under way): the native workflow prepares it while
the registrations run, so the coil stage only places coils.
"""

from dataclasses import dataclass
from pathlib import Path

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


@dataclass
class T1Anatomy:
    """What the coil stage needs from one T1, prepared ahead of it (:func:`prepare_t1_anatomy`).

    Attributes
    ----------
    t1_path : Path
        The T1 file (the cache keys on its bytes).
    img : nibabel image
        The T1 as :func:`tmstarget.ingest.read.read_image` reads ``t1_path``.
    head : nibabel image
        Its :func:`tmstarget.anatomy.scalp.head_mask` (the scalp check, the face check and the scalp
        surface all start from it).
    scalp : tmstarget.anatomy.t1.ScalpCheck
    mesh : SurfaceMesh or None
        The scalp surface once :meth:`compute_scalp_surface` ran (None for a T1 without a scalp).
    tissue : IsolatedCall-like or None
        The tissue segmentation once :meth:`start_tissue` started it (``result()`` waits for it).
    """

    t1_path: Path
    img: object
    head: object
    scalp: object
    mesh: object = None
    tissue: object = None

    def compute_scalp_surface(self):
        """The scalp surface (:func:`~tmstarget.coil.plan_coils.cached_scalp_surface`), when the T1 has a scalp."""
        from tmstarget.coil.plan_coils import cached_scalp_surface

        if self.scalp.scalp and self.mesh is None:
            self.mesh = cached_scalp_surface(self.t1_path, self.img, head=self.head)

    def start_tissue(self, t1_to_mni):
        """Start the tissue segmentation through ``t1_to_mni`` in a process of its own (from the cache when
        there), when the T1 has a scalp (:func:`~tmstarget.coil.plan_coils.start_segment_t1`)."""
        from tmstarget.coil.plan_coils import start_segment_t1

        if self.scalp.scalp and self.tissue is None:
            self.tissue = start_segment_t1(self.t1_path, self.img, t1_to_mni)

    def cancel(self):
        """End a tissue segmentation still running."""
        if self.tissue is not None:
            self.tissue.cancel()


def prepare_t1_anatomy(t1_path, t1_img=None):
    """Read a T1 (unless ``t1_img`` is that read), compute its head mask and check its scalp.

    Parameters
    ----------
    t1_path : Path
    t1_img : nibabel image, optional
        ``read_image(t1_path, "T1")`` when already done.

    Returns
    -------
    T1Anatomy
    """
    from tmstarget.anatomy.scalp import head_mask
    from tmstarget.ingest.read import read_image

    img = read_image(t1_path, "T1") if t1_img is None else t1_img
    head = head_mask(img)
    return T1Anatomy(Path(t1_path), img, head, check_scalp(img, head))


def coils_on_t1(result, t1_path, t1_to_mni, progress=None, anatomy=None):
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
    anatomy : T1Anatomy, optional
        Of ``t1_path``, prepared ahead (:func:`prepare_t1_anatomy`); else prepared here.

    Returns
    -------
    coils : list of (dict or None), or None
        One ``coil`` block per candidate (None where refused); None when the T1 has no scalp.
    anatomy : dict
        The ``anatomy`` block, with ``t1_check``.
    """
    from tmstarget.coil.plan_coils import anatomy_block, place_coils

    def say(message):
        if progress is not None:
            progress(message)

    anatomy_of_t1 = prepare_t1_anatomy(t1_path) if anatomy is None else anatomy
    t1_img, scalp = anatomy_of_t1.img, anatomy_of_t1.scalp
    face = check_face(t1_img, t1_to_mni, anatomy_of_t1.head) if scalp.scalp else None
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
    anatomy_of_t1.compute_scalp_surface()
    tissue = None if anatomy_of_t1.tissue is None else anatomy_of_t1.tissue.result()
    _, coils, anatomy = place_coils(result, t1_path, head_axes_ras=axes, midline_ras_mm=midline, t1_to_mni=t1_to_mni,
                                    t1_img=t1_img, mesh=anatomy_of_t1.mesh, tissue=tissue)
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
