"""fMRIPrep inputs in the T1's world: an MNI plan re-expressed in fMRIPrep's native T1w with its own transforms.

No registration is run here: fMRIPrep's ``from-T1w_to-MNI152NLin2009cAsym`` and
``from-MNI152NLin2009cAsym_to-T1w`` files map the candidates, after a check
that they are not swapped (:func:`check_fmriprep_transforms`).
:func:`choose_fmriprep_space` decides between T1w and MNI152NLin2009cAsym.
"""

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from tmstarget.anatomy.registration import FMRIPREP_SPACE as MNI_SPACE
from tmstarget.anatomy.registration import map_points, warp_image
from tmstarget.errors import InputError
from tmstarget.workflows.native import T1_SPACE
from tmstarget.workflows.t1_coil import head_frame

_FMRIPREP_T1W = "_desc-preproc_T1w.nii"


@dataclass(frozen=True)
class FmriprepAnatomy:
    """fMRIPrep's native T1w and its transforms to and from MNI152NLin2009cAsym.

    Attributes
    ----------
    t1_path : Path
        ``sub-<l>[_ses-<s>]_desc-preproc_T1w.nii.gz``; its world is "T1w".
    t1_to_mni : Transform
        ``T1w -> MNI152NLin2009cAsym``: ``fwd_files`` is
        ``*_from-T1w_to-MNI152NLin2009cAsym_mode-image_xfm.h5`` (resamples T1w
        images onto MNI, so as a point map it takes **MNI points into the
        T1w**), ``inv_files`` is ``*_from-MNI152NLin2009cAsym_to-T1w_mode-image_xfm.h5``.
    qc : dict
        File names and the result of :func:`check_fmriprep_transforms`.
    """

    t1_path: Path
    t1_to_mni: object
    qc: dict


def find_fmriprep_anatomy(fmriprep_dir, participant):
    """The native T1w of one participant and both of its MNI transforms, if fMRIPrep wrote them.

    Looks under ``<fmriprep_dir>/sub-<label>`` (any session folder) for a
    ``*_desc-preproc_T1w.nii[.gz]`` without a ``space-`` entity and, beside it
    with the same name prefix, ``<prefix>_from-T1w_to-MNI152NLin2009cAsym_mode-image_xfm.h5``
    and ``<prefix>_from-MNI152NLin2009cAsym_to-T1w_mode-image_xfm.h5``.

    Parameters
    ----------
    fmriprep_dir : Path
        fMRIPrep derivatives folder.
    participant : str
        Label with or without ``sub-``.

    Returns
    -------
    (FmriprepAnatomy or None, str or None)
        The anatomy (its ``qc`` without a transform check yet) and None; or
        None and why it is not usable (nothing found, a transform missing,
        several complete candidates).
    """
    from tmstarget.anatomy.registration import read_fmriprep_transforms
    from tmstarget.ingest.fmriprep import parse_entities, participant_label

    label = participant_label(participant)
    sub_dir = Path(fmriprep_dir) / f"sub-{label}"
    native = [p for p in sorted(sub_dir.rglob(f"sub-{label}*{_FMRIPREP_T1W}*"))
              if "space" not in parse_entities(p.name)]
    if not native:
        return None, f"no native sub-{label}*_desc-preproc_T1w.nii.gz (without space-) under sub-{label}/"
    complete, missing = [], []
    for t1 in native:
        prefix = t1.name[:t1.name.index(_FMRIPREP_T1W)]
        files = [t1.parent / f"{prefix}_from-{a}_to-{b}_mode-image_xfm.h5"
                 for a, b in ((T1_SPACE, MNI_SPACE), (MNI_SPACE, T1_SPACE))]
        absent = [f.name for f in files if not f.is_file()]
        if absent:
            missing.append(f"no {' nor '.join(absent)} beside {t1.name}")
        else:
            complete.append((t1, files))
    if not complete:
        return None, "; ".join(missing)
    if len(complete) > 1:
        return None, "several native T1w with transforms (" + ", ".join(t.name for t, _ in complete) + ")"
    t1, files = complete[0]
    qc = {"t1": t1.name, "mni_to_t1w_points": files[0].name, "t1w_to_mni_points": files[1].name}
    return FmriprepAnatomy(t1, read_fmriprep_transforms(files), qc), None


def _correlation(a, b):
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    norm = np.sqrt((a @ a) * (b @ b))
    return float(a @ b / norm) if norm > 0 else 0.0


def check_fmriprep_transforms(anatomy, mni_t1_path):
    """Refuse swapped or mislabelled transform files before any point is mapped.

    fMRIPrep made its MNI-space T1w by resampling the native T1w with the
    ``from-T1w_to-MNI152NLin2009cAsym`` file. The native T1w is warped onto
    the MNI T1w's grid twice: with that file, and with the
    ``from-MNI152NLin2009cAsym_to-T1w`` file in its place (what a swap or a
    mislabelled file does). The first must match the MNI T1w better (Pearson
    correlation over the grid); both files are used whole, as ITK reads them.

    Parameters
    ----------
    anatomy : FmriprepAnatomy
    mni_t1_path : Path
        fMRIPrep's ``*_space-MNI152NLin2009cAsym_desc-preproc_T1w.nii.gz``.

    Returns
    -------
    dict
        ``correlation_as_named`` and ``correlation_swapped``.

    Raises
    ------
    InputError
        The swapped use fits the MNI T1w at least as well as the named one.
    """
    from tmstarget.anatomy.registration import Transform

    mni_t1 = nib.load(mni_t1_path)
    reference = mni_t1.slicer[..., 0] if mni_t1.ndim == 4 else mni_t1
    named = anatomy.t1_to_mni
    swapped = Transform(named.from_space, named.to_space, named.inv_files, named.inv_invert)
    target = reference.get_fdata(dtype=np.float32)
    scores = {}
    for key, transform in (("correlation_as_named", named), ("correlation_swapped", swapped)):
        warped = warp_image(anatomy.t1_path, transform, reference, "forward", "linear")
        scores[key] = round(_correlation(warped.dataobj, target), 4)
    if scores["correlation_swapped"] >= scores["correlation_as_named"]:
        raise InputError(
            f"fMRIPrep transforms look swapped or inverted: the native T1w warped with "
            f"{Path(named.fwd_files[0]).name} matches {Path(mni_t1_path).name} less well (r = "
            f"{scores['correlation_as_named']:.3f}) than with {Path(named.inv_files[0]).name} (r = "
            f"{scores['correlation_swapped']:.3f}); check the files or plan with --space {MNI_SPACE}",
            path=Path(named.fwd_files[0]).parent,
        )
    return scores


def mni_plan_to_t1w(result, t1_to_mni, t1_path=None):
    """Re-express a plan computed in MNI space in the T1w world, without registering again.

    Every candidate's MNI point is mapped into the T1w with
    ``map_points(p, t1_to_mni, "inverse")``, i.e. through the
    ``from-T1w_to-MNI152NLin2009cAsym_mode-image_xfm.h5`` file (points move
    opposite to images, spec §4). The analysis grid is left in MNI space: the
    maps cannot follow a nonlinear transform by an affine, so ``affine``,
    ``voxel_ijk``, maps and masks stay on the MNI grid
    (build the plan with ``build_plan(..., grid_space=MNI_SPACE)``).

    Parameters
    ----------
    result : PlanResult
        With ``space == MNI152NLin2009cAsym``.
    t1_to_mni : Transform
        ``T1w -> MNI152NLin2009cAsym`` (e.g. ``FmriprepAnatomy.t1_to_mni``).
    t1_path : Path, optional
        The T1w file, named in ``qc["coordinates"]``.

    Returns
    -------
    PlanResult
        ``space = "T1w"``, candidates' ``ras_mm`` in T1w world, ``mni_mm`` =
        their MNI points, ``qc["coordinates"]`` saying which frame is which.
    """
    if result.space != MNI_SPACE or t1_to_mni.to_space != MNI_SPACE or t1_to_mni.from_space != T1_SPACE:
        raise InputError(f"expected a plan in {MNI_SPACE} and a {T1_SPACE} -> {MNI_SPACE} transform; got a plan "
                         f"in {result.space} and {t1_to_mni.from_space} -> {t1_to_mni.to_space}")
    mni_pts = np.array([c.ras_mm for c in result.candidates], dtype=float)
    t1_pts = np.atleast_2d(map_points(mni_pts, t1_to_mni, "inverse"))
    candidates = [dataclasses.replace(c, ras_mm=p) for c, p in zip(result.candidates, t1_pts)]
    t1_name = Path(t1_path).name if t1_path is not None else "the T1w"
    qc = {**result.qc, "coordinates": {
        "ras_mm": f"T1w world of {t1_name} (anatomy.t1)",
        "mni_mm": f"{MNI_SPACE}: where the plan was computed",
        "mni_to_t1w": f"points through {Path(t1_to_mni.fwd_files[0]).name} (it resamples T1w images onto MNI, so "
                      "it maps MNI points into the T1w); no registration was run",
        "analysis_grid": f"{MNI_SPACE} grid of the BOLD: voxel_ijk, maps, masks and target_sphere are in MNI space",
    }}
    return dataclasses.replace(result, space=T1_SPACE, candidates=candidates, mni_mm=mni_pts, mni_space=MNI_SPACE,
                               qc=qc)


def place_coils_t1w(result, anatomy):
    """Coils on the native T1w scalp for a result of :func:`mni_plan_to_t1w`.

    :func:`tmstarget.coil.plan_coils.place_coils` on fMRIPrep's native T1w: its
    tissues are segmented with the MNI priors brought in through fMRIPrep's
    transforms (depth to this T1's cortex); the handle rules use :func:`head_frame`.

    Returns
    -------
    (dict, list of dict, dict)
        As :func:`tmstarget.coil.plan_coils.place_coils`: target coil, one coil per
        candidate, anatomy block (``space: "T1w"``, the T1w file and sha256).
    """
    from tmstarget.coil.plan_coils import place_coils

    axes, midline = head_frame(anatomy.t1_to_mni)
    return place_coils(result, anatomy.t1_path, head_axes_ras=axes, midline_ras_mm=midline,
                       t1_to_mni=anatomy.t1_to_mni)


def fmriprep_plan_to_t1w(result, anatomy):
    """MNI plan of fMRIPrep inputs -> target and coils in the T1w world.

    :func:`mni_plan_to_t1w` then :func:`place_coils_t1w`; the T1w file and
    both transforms are added to the plan's inputs (sha256 in provenance) and
    ``anatomy.qc`` to ``qc["coordinates"]``.

    Returns
    -------
    (PlanResult, list of dict, dict)
        The T1w result, one coil block per candidate, the anatomy block.
    """
    moved = mni_plan_to_t1w(result, anatomy.t1_to_mni, anatomy.t1_path)
    moved.qc["coordinates"]["fmriprep"] = anatomy.qc
    moved = dataclasses.replace(moved, input_files={
        **moved.input_files, "t1w_native": anatomy.t1_path,
        "xfm_from_T1w_to_MNI": Path(anatomy.t1_to_mni.fwd_files[0]),
        "xfm_from_MNI_to_T1w": Path(anatomy.t1_to_mni.inv_files[0])})
    _, coils, anatomy_block = place_coils_t1w(moved, anatomy)
    return moved, coils, anatomy_block


def choose_fmriprep_space(fmriprep_dir, participant, requested=None, mni_t1_path=None, explicit_t1=False):
    """Coordinate space of a plan on fMRIPrep inputs, and the anatomy a T1w plan needs.

    Parameters
    ----------
    fmriprep_dir : Path or None
        fMRIPrep derivatives folder (None: explicit MNI-space files).
    participant : str or None
    requested : None, "T1w" or "MNI152NLin2009cAsym"
        None: T1w when fMRIPrep's native T1w and both transforms exist and no
        explicit MNI-space T1 was given, else MNI152NLin2009cAsym.
    mni_t1_path : Path, optional
        fMRIPrep's MNI-space T1w, for :func:`check_fmriprep_transforms`
        (without it the check is skipped and ``qc`` says so).
    explicit_t1 : bool
        The user gave an MNI-space T1 file for the coil.

    Returns
    -------
    (FmriprepAnatomy or None, str)
        The checked anatomy for a T1w plan (None for MNI) and one line saying
        which space is used and why.

    Raises
    ------
    InputError
        T1w requested but not possible (explicit files, an explicit MNI T1,
        missing native T1w or transform), or the transforms fail the check.
    """
    if requested not in (None, T1_SPACE, MNI_SPACE):
        raise InputError(f"space must be {T1_SPACE} or {MNI_SPACE}; got {requested!r}")
    if requested == MNI_SPACE:
        return None, f"{MNI_SPACE} (requested)"
    if fmriprep_dir is None or participant is None:
        if requested == T1_SPACE:
            raise InputError(f"a {T1_SPACE} plan needs an fMRIPrep derivatives folder and a participant "
                             "(its native T1w and transforms); explicit files are planned in MNI space")
        return None, f"{MNI_SPACE} (explicit files)"
    if explicit_t1:
        if requested == T1_SPACE:
            raise InputError(f"the explicit T1 is the MNI-space T1 of an {MNI_SPACE} plan; a {T1_SPACE} plan places "
                             "the coil on fMRIPrep's native T1w: drop the T1 file or plan in MNI space")
        return None, f"{MNI_SPACE} (an MNI-space T1 was given)"
    anatomy, reason = find_fmriprep_anatomy(fmriprep_dir, participant)
    if anatomy is None:
        if requested == T1_SPACE:
            raise InputError(f"cannot plan in {T1_SPACE}: {reason}", path=fmriprep_dir)
        return None, f"{MNI_SPACE} ({reason})"
    from tmstarget.ingest.read import read_image

    read_image(anatomy.t1_path, "T1w")
    qc = dict(anatomy.qc)
    if mni_t1_path is None:
        qc["transform_check"] = "not run: no MNI-space T1w to compare with"
    else:
        qc["transform_check"] = check_fmriprep_transforms(anatomy, mni_t1_path)
    how = "requested" if requested == T1_SPACE else "default"
    note = f"{T1_SPACE} ({how}): world of {anatomy.t1_path.name} through fMRIPrep's transforms"
    return dataclasses.replace(anatomy, qc=qc), note
