"""Native-space front half of ``plan``: scanner DICOM (or raw NIfTI) + T1 -> runs the engine can plan on.

Order of operations (issue 3 §2):

1. load every functional run (DICOM series via :func:`~tmstarget.ingest.dicom.series.load_series`,
   or a raw NIfTI with its BIDS sidecar) and the T1;
2. estimate rigid head motion of every volume of every run against one
   reference volume (volume 0 of the first run) and realign (trilinear) onto
   that reference grid: all runs end on one EPI grid (world = scanner RAS);
3. coregister the mean realigned EPI to the T1 (rigid) and register the T1 to
   MNI152NLin2009cAsym (affine + SyN at 2 mm);
4. bring the MNI brain mask (nearest neighbour) and the WM/CSF priors into
   EPI space through both transforms and write, per run, the realigned BOLD,
   an fMRIPrep-like confounds TSV (``trans_*`` mm, ``rot_*`` rad,
   ``framewise_displacement`` Power, ``white_matter``, ``csf``) and the mask;
5. return a :class:`~tmstarget.ingest.collect.Selection` whose ``grid`` is a
   :class:`NativeGrid`, so :func:`tmstarget.analysis.engine.plan` runs unchanged on
   the EPI grid; :func:`to_t1w` then re-expresses its result in the T1's world
   with MNI coordinates from the registration.

Transforms follow :mod:`tmstarget.anatomy.registration` (ITK/ANTs conventions, RAS mm
at the interface). No DICOM patient field is read into any file name or output:
files are named from the participant label.
"""

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from tmstarget.errors import InputError
from tmstarget._fileio import write_json_atomic, write_nifti_atomic, write_text_atomic
from tmstarget.ingest.collect import ExplicitRun, Selection
from tmstarget.anatomy.motion import estimate_motion, fd_jenkinson, fd_power, realign, volume_centre_ras_mm
from tmstarget.anatomy.registration import (
    MNI_SPACE, compose, coregister_epi_to_t1, map_points, mni_template, nuisance_masks,
    register_t1_to_mni, save_transform, template_tissue_probabilities, warp_image,
)
from tmstarget.analysis.rois import ball_mask

log = logging.getLogger(__name__)

#: Resolution (mm) of the MNI grid on which native masks are built before warping.
MASK_RESOLUTION_MM = 2
EPI_SPACE = "boldref"
T1_SPACE = "T1w"


@dataclass(frozen=True)
class NativeRun:
    """One raw functional run as given on the command line.

    Attributes
    ----------
    source : Path
        DICOM folder, or a 4-D NIfTI file.
    state : str or None
        State of the whole run (``"rest"``, or a separate-run state); None for
        a blocks-design task run (states from ``events``).
    label : str
        Run label used in file names (``rest_run-1``).
    events : Path, optional
        BIDS events TSV (blocks design).
    sidecar : Path, optional
        BIDS JSON sidecar of a NIfTI source (default: beside it, same stem).
    series : int or str, optional
        SeriesNumber or SeriesInstanceUID when the DICOM folder holds several.
    """

    source: Path
    state: str | None
    label: str
    events: Path | None = None
    sidecar: Path | None = None
    series: int | str | None = None


@dataclass
class NativeSession:
    """What :func:`prepare_native` built.

    Attributes
    ----------
    selection : Selection
        Runs (realigned, in EPI space) with ``grid = NativeGrid``.
    epi_to_t1 : Transform
        ``boldref -> T1w`` (rigid).
    t1_to_mni : Transform
        ``T1w -> MNI152NLin2009cAsym`` (affine + SyN).
    t1_path : Path
        T1 NIfTI the T1w world refers to (a converted copy for a DICOM T1).
    t1_from_dicom : bool
    qc : dict
        Motion summary per run and time per stage (s).
    """

    selection: Selection
    epi_to_t1: object
    t1_to_mni: object
    t1_path: Path
    t1_from_dicom: bool
    qc: dict


def _is_dicom_source(path):
    return Path(path).is_dir()


def _sidecar_beside(nifti_path):
    path = Path(nifti_path)
    stem = path.name[:-7] if path.name.endswith(".nii.gz") else path.stem
    candidate = path.with_name(stem + ".json")
    return candidate if candidate.is_file() else None


def load_image(source, series=None, sidecar=None, what="functional run"):
    """A NIfTI image and its sidecar dict from a DICOM folder or a NIfTI file.

    Parameters
    ----------
    source : Path
        DICOM folder (one series, or ``series`` picks one) or NIfTI file.
    series : int or str, optional
        Only used when the folder holds several series.
    sidecar : Path, optional
        JSON sidecar of a NIfTI file (default: the BIDS sibling, if any).
    what : str
        For error messages.

    Returns
    -------
    (nibabel.Nifti1Image, dict)
    """
    from tmstarget.ingest.dicom.series import find_series, load_series

    source = Path(source)
    if not source.exists():
        raise InputError(f"{what} not found", path=source)
    if _is_dicom_source(source):
        pick = series if series is not None and len(find_series(source)) > 1 else None
        return load_series(source, series=pick)
    try:
        img = nib.load(source)
    except Exception as exc:  # nibabel raises many types for unreadable files
        raise InputError(f"cannot read the {what} as NIfTI: {exc}", path=source) from exc
    sidecar = Path(sidecar) if sidecar is not None else _sidecar_beside(source)
    meta = {}
    if sidecar is not None:
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"sidecar is not readable JSON: {exc}", path=sidecar) from exc
    return img, meta


class NativeGrid:
    """MNI-defined masks on a native EPI grid, built in MNI space and warped in.

    Implements the two methods :func:`tmstarget.analysis.engine.plan` asks its grid
    for. Masks are built on the 2-mm MNI template grid and resampled onto the
    EPI grid through the EPI -> MNI transform: nearest neighbour for binary
    masks, linear then threshold for the grey-matter probability.

    Parameters
    ----------
    reference_img : nibabel image
        3-D image on the EPI grid (world = scanner RAS).
    epi_to_mni : Transform
        ``boldref -> MNI152NLin2009cAsym``.
    """

    def __init__(self, reference_img, epi_to_mni, resolution_mm=MASK_RESOLUTION_MM):
        if epi_to_mni.to_space != MNI_SPACE:
            raise InputError(f"NativeGrid needs a transform into {MNI_SPACE}; got one into {epi_to_mni.to_space}")
        self.reference = reference_img
        self.transform = epi_to_mni
        template = mni_template(resolution_mm)
        self.template_shape = template.shape[:3]
        self.template_affine = template.affine
        self.resolution_mm = resolution_mm
        self._gm_probability = None

    def _to_epi(self, img, interpolation):
        return np.asarray(
            warp_image(img, self.transform, self.reference, direction="inverse", interpolation=interpolation).dataobj
        )

    def grey_matter(self, threshold):
        """Grey matter on the EPI grid: MNI152 GM probability (linear) > ``threshold``."""
        if self._gm_probability is None:
            prob = template_tissue_probabilities(self.resolution_mm)["gm"]
            self._gm_probability = self._to_epi(prob, "linear")
        return self._gm_probability > threshold

    def balls(self, centres_mni_mm, radius_mm):
        """Union of spheres given in MNI mm, built on the MNI grid and warped onto the EPI grid."""
        mask = ball_mask(self.template_shape, self.template_affine, centres_mni_mm, radius_mm)
        img = nib.Nifti1Image(mask.astype(np.uint8), self.template_affine)
        return self._to_epi(img, "nearest") > 0


def _stage(progress, timings, name):
    """Start a stage: announce it and return a function that records its duration."""
    if progress is not None:
        progress(name)
    log.info(name)
    start = time.perf_counter()

    def done():
        timings[name] = round(time.perf_counter() - start, 3)

    return done


def _check_same_grid(images, runs):
    first = images[0]
    for img, run in zip(images[1:], runs[1:]):
        if img.ndim != 4:
            raise InputError(f"expected a 4-D functional run; got shape {img.shape}", path=run.source)
        if img.shape[:3] != first.shape[:3] or not np.allclose(img.affine, first.affine, atol=1e-3):
            raise InputError(
                f"run {run.label} has a different EPI grid than {runs[0].label} ({img.shape[:3]} vs "
                f"{first.shape[:3]}); realignment across runs needs one slice prescription",
                path=run.source,
            )
    if first.ndim != 4 or first.shape[3] < 2:
        raise InputError(f"expected a 4-D functional run with >= 2 volumes; got shape {first.shape}",
                         path=runs[0].source)


def confounds_tsv(params, fd_power_mm, fd_jenkinson_mm, wm, csf, missing=None):
    """fMRIPrep-style confounds table as TSV text (mm, rad; first FD is n/a).

    ``missing`` (bool per volume) adds a ``missing_volume`` column: volumes a
    real-time export never delivered, which planning leaves out.
    """
    header = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z",
              "framewise_displacement", "framewise_displacement_jenkinson", "white_matter", "csf"]
    if missing is not None:
        header.append("missing_volume")
    lines = ["\t".join(header)]
    for t in range(len(params)):
        # repr round-trips exactly: a plan reading this table sees the numbers the estimator produced
        fds = ["n/a", "n/a"] if t == 0 else [repr(float(fd_power_mm[t])), repr(float(fd_jenkinson_mm[t]))]
        values = [repr(float(v)) for v in params[t]] + fds + [repr(float(wm[t])), repr(float(csf[t]))]
        if missing is not None:
            values.append("1" if missing[t] else "0")
        lines.append("\t".join(values))
    return "\n".join(lines) + "\n"


def prepare_native(runs, t1, work_dir, participant, t1_series=None, progress=None, slice_timing=False):
    """Motion-correct, coregister and register raw runs; return a plannable selection.

    Parameters
    ----------
    runs : sequence of NativeRun
        Functional runs (DICOM folders or raw NIfTI), all on one EPI grid.
    t1 : Path
        T1 DICOM folder or NIfTI (whole head).
    work_dir : Path
        Existing folder for intermediate files (realigned runs, confounds,
        masks, transforms). Files are named from ``participant``.
    participant : str
        Participant label (never a DICOM patient field).
    t1_series : int or str, optional
        Series to pick when the T1 DICOM folder holds several.
    progress : callable, optional
        Called with a message at the start of each stage.
    slice_timing : bool
        Correct slice timing (:func:`tmstarget.anatomy.slicetiming.slice_time_correct`,
        to the middle of the TR) before motion estimation; every run needs
        ``SliceTiming`` in its sidecar (DICOM header or BIDS JSON).

    Returns
    -------
    NativeSession

    Raises
    ------
    InputError
        Among others: a T1 covering less than :data:`MIN_T1_EXTENT_MM` along
        an axis (not a whole head), or ``slice_timing`` without SliceTiming.
    """
    if not runs:
        raise InputError("no functional run given (--rest-dicom/--task-dicom, or --rest-bold/--task-bold with --native)")
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    timings = {}
    prefix = f"sub-{participant}"

    done = _stage(progress, timings, f"loading {len(runs)} functional run(s) and the T1")
    loaded = [load_image(r.source, r.series, r.sidecar) for r in runs]
    images = [img for img, _ in loaded]
    _check_same_grid(images, runs)
    t1_img, _ = load_image(t1, t1_series, what="T1")
    if t1_img.ndim != 3:
        raise InputError(f"the T1 must be a 3-D image; got shape {t1_img.shape}", path=t1)
    check_whole_head(t1_img, t1)
    t1_from_dicom = _is_dicom_source(t1)
    t1_path = Path(t1)
    if t1_from_dicom:
        t1_path = write_nifti_atomic(work / f"{prefix}_T1w.nii.gz", t1_img)
    done()

    arrays = [np.asarray(img.dataobj, dtype=np.float32) for img in images]
    if slice_timing:
        done = _stage(progress, timings, "correcting slice timing (Fourier, to the middle of the TR)")
        arrays = [_slice_time_run(data, img, meta, run) for data, (img, meta), run in zip(arrays, loaded, runs)]
        done()

    done = _stage(progress, timings, "estimating head motion (rigid, to volume 0 of the first run)")
    affine = images[0].affine
    lengths = [img.shape[3] for img in images]
    stacked = nib.Nifti1Image(np.concatenate(arrays, axis=3), affine)
    del arrays
    params = estimate_motion(stacked, reference="first")
    realigned = realign(stacked, params).get_fdata(dtype=np.float32)
    del stacked
    bounds = np.cumsum([0] + lengths)
    mean_img = nib.Nifti1Image(realigned[..., :lengths[0]].mean(axis=3), affine)
    done()

    done = _stage(progress, timings, "coregistering the mean EPI to the T1 (rigid)")
    epi_to_t1 = coregister_epi_to_t1(mean_img, t1_img, EPI_SPACE, T1_SPACE, workdir=work / "ants")
    done()

    done = _stage(progress, timings, f"registering the T1 to {MNI_SPACE} (affine + SyN, 2 mm)")
    t1_to_mni = register_t1_to_mni(t1_img, workdir=work / "ants")
    done()

    done = _stage(progress, timings, "bringing the MNI brain mask and WM/CSF priors into EPI space")
    from nilearn import datasets

    epi_to_mni = compose(epi_to_t1, t1_to_mni)
    brain_mni = datasets.load_mni152_brain_mask(resolution=MASK_RESOLUTION_MM)
    brain_mni = nib.Nifti1Image((brain_mni.get_fdata() > 0).astype(np.uint8), brain_mni.affine)
    brain = np.asarray(warp_image(brain_mni, epi_to_mni, mean_img, "inverse", "nearest").dataobj) > 0
    if not brain.any():
        raise InputError("the MNI brain mask warped into EPI space is empty: check the EPI -> T1 -> MNI registration")
    tissue = nuisance_masks(epi_to_mni, mean_img, direction="inverse", resolution_mm=MASK_RESOLUTION_MM)
    wm_mask = np.asarray(tissue["wm"].dataobj) > 0
    csf_mask = np.asarray(tissue["csf"].dataobj) > 0
    mask_path = write_nifti_atomic(work / f"{prefix}_space-{EPI_SPACE}_desc-brain_mask.nii.gz",
                                   nib.Nifti1Image(brain.astype(np.uint8), affine))
    done()

    done = _stage(progress, timings, "writing realigned runs and confounds")
    centre = volume_centre_ras_mm(affine, images[0].shape)
    selected, motion_qc = [], []
    for k, (run, (img, meta)) in enumerate(zip(runs, loaded)):
        part = slice(bounds[k], bounds[k + 1])
        data, run_params = realigned[..., part], params[part]
        stem = f"{prefix}_{run.label}"
        header = img.header.copy()
        header.set_data_dtype(np.float32)
        bold_path = write_nifti_atomic(work / f"{stem}_space-{EPI_SPACE}_desc-realigned_bold.nii.gz",
                                       nib.Nifti1Image(data, affine, header))
        fd_p, fd_j = fd_power(run_params), fd_jenkinson(run_params, centre)
        wm = data[wm_mask].mean(axis=0, dtype=np.float64)
        csf = data[csf_mask].mean(axis=0, dtype=np.float64)
        confounds_path = work / f"{stem}_desc-confounds_timeseries.tsv"
        write_text_atomic(confounds_path, confounds_tsv(run_params, fd_p, fd_j, wm, csf))
        sidecar_path = write_json_atomic(work / f"{stem}_space-{EPI_SPACE}_desc-realigned_bold.json",
                                         {**meta, "SkullStripped": False, "MotionCorrected": True,
                                          "SliceTimingCorrected": bool(slice_timing)})
        selected.append((ExplicitRun(bold=bold_path, confounds=confounds_path, sidecar=sidecar_path,
                                     events=run.events, mask=mask_path, label=run.label), run.state))
        motion_qc.append({"run": run.label, "volumes": int(data.shape[3]),
                          "max_abs_translation_mm": float(np.abs(run_params[:, :3]).max()),
                          "max_abs_rotation_deg": float(np.degrees(np.abs(run_params[:, 3:]).max())),
                          "mean_fd_jenkinson_mm": float(fd_j[1:].mean())})
    done()

    grid = NativeGrid(mean_img, epi_to_mni)
    input_dirs = [Path(r.source) if _is_dicom_source(r.source) else Path(r.source).parent for r in runs]
    input_dirs.append(Path(t1) if t1_from_dicom else Path(t1).parent)
    selection = Selection(selected, t1_path, None, input_dirs, grid=grid)
    qc = {"motion_reference": f"volume 0 of {runs[0].label}", "motion": motion_qc, "stage_seconds": timings}
    return NativeSession(selection, epi_to_t1, t1_to_mni, t1_path, t1_from_dicom, qc)


def write_transforms(session, out_dir, participant):
    """Copy the session's transforms into ``out_dir``, named by their frames.

    Files: ``sub-<label>_from-boldref_to-T1w_{fwd,inv}0.mat`` and
    ``sub-<label>_from-T1w_to-MNI152NLin2009cAsym_{fwd,inv}{0,1}.*``; the
    lists and invert flags are in :class:`~tmstarget.anatomy.registration.Transform`
    terms (``fwd`` resamples ``from`` images onto the ``to`` grid, so as a
    point map it goes ``to -> from``).

    Returns
    -------
    list of Transform
        The copies.
    """
    copies = []
    for transform in (session.epi_to_t1, session.t1_to_mni):
        stem = f"sub-{participant}_from-{transform.from_space}_to-{transform.to_space}"
        copy = save_transform(transform, out_dir, stem)
        lists = {name: [{"file": Path(f).name, "invert": flag}
                        for f, flag in zip(getattr(copy, f"{name}_files"), getattr(copy, f"{name}_invert"))]
                 for name in ("fwd", "inv")}
        write_json_atomic(Path(out_dir) / f"{stem}_xfm.json", {
            "from": transform.from_space, "to": transform.to_space, "convention": "ANTs, LPS; first file applied first",
            "fwd": lists["fwd"], "fwd_note": f"resamples {transform.from_space} images onto a {transform.to_space} grid; "
            f"maps {transform.to_space} points to {transform.from_space}",
            "inv": lists["inv"], "inv_note": f"maps {transform.from_space} points to {transform.to_space}",
        })
        copies.append(copy)
    return copies


def rigid_matrix_ras(transform, affine, shape):
    """4x4 RAS matrix of a rigid point map ``from_space -> to_space``, fitted on the grid's corners.

    Raises if the map is not affine on the grid (residual > 1e-3 mm).
    """
    corners = np.array([[i, j, k] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)],
                       dtype=float)
    src = corners @ affine[:3, :3].T + affine[:3, 3]
    dst = map_points(src, transform, "forward")
    design = np.hstack([src, np.ones((len(src), 1))])
    solution, *_ = np.linalg.lstsq(design, dst, rcond=None)
    matrix = np.eye(4)
    matrix[:3, :] = solution.T
    residual = np.abs(design @ solution - dst).max()
    if residual > 1e-3:
        raise InputError(f"transform {transform.from_space} -> {transform.to_space} is not affine "
                         f"(residual {residual:.3g} mm); expected the rigid coregistration")
    return matrix


def to_t1w(result, epi_to_t1, t1_to_mni):
    """Re-express a plan computed on the EPI grid in the T1's world space.

    The analysis grid keeps its voxels (``voxel_ijk`` unchanged); its affine
    becomes ``epi2t1 @ affine``, so maps and masks overlay the T1. Every
    candidate's ``ras_mm`` is mapped EPI -> T1 with :func:`map_points`
    (coregistration) and then T1 -> MNI (registration) for ``mni_mm``.

    Parameters
    ----------
    result : PlanResult
        From :func:`tmstarget.analysis.engine.plan` on the EPI grid.
    epi_to_t1, t1_to_mni : Transform

    Returns
    -------
    PlanResult
        ``space = "T1w"``, ``mni_mm`` (N, 3) set.
    """
    epi_pts = np.array([c.ras_mm for c in result.candidates], dtype=float)
    t1_pts = np.atleast_2d(map_points(epi_pts, epi_to_t1, "forward"))
    mni_pts = np.atleast_2d(map_points(t1_pts, t1_to_mni, "forward"))
    epi2t1 = rigid_matrix_ras(epi_to_t1, result.affine, result.shape)
    candidates = [dataclasses.replace(c, ras_mm=p) for c, p in zip(result.candidates, t1_pts)]
    qc = {**result.qc, "coordinates": {
        "ras_mm": "T1w world (scanner RAS of the T1 file, see anatomy.t1)",
        "mni_mm": f"{MNI_SPACE}, through the T1 -> MNI registration (affine + SyN)",
        "analysis_grid": "the realigned EPI grid, affine moved into T1w world by the rigid coregistration",
    }}
    return dataclasses.replace(result, space=T1_SPACE, affine=epi2t1 @ result.affine, candidates=candidates,
                               mni_mm=mni_pts, qc=qc)


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


def finish_native_plan(session, protocol, output, participant, force=False, command=None, input_dirs=(),
                       t_r=None, extra_writers=(), progress=None):
    """Plan on a prepared native session and write it: target and coil in T1w world, transforms, T1 copy.

    The shared tail of ``tmstarget plan`` on raw runs and of ``tmstarget watch``.

    Parameters
    ----------
    session : NativeSession
    protocol : Protocol
    output : Path
        Plan folder (written atomically by :func:`tmstarget.outputs.plan_folder.write_plan`).
    participant : str
    extra_writers : sequence of callable
        Called with the staging folder after the plan files (e.g. navigation export).

    Returns
    -------
    dict
        The ``target.json`` document.
    """
    from tmstarget._fileio import write_bytes_atomic
    from tmstarget.outputs.plan_folder import write_plan
    from tmstarget.analysis.engine import place_coils, plan

    def say(message):
        if progress is not None:
            progress(message)

    result = plan(session.selection, protocol, t_r=t_r, progress=progress)
    say("mapping the target EPI -> T1 -> MNI")
    result = to_t1w(result, session.epi_to_t1, session.t1_to_mni)
    result.qc["native"] = session.qc
    say("placing the coil on the T1 scalp")
    axes, midline = head_frame(session.t1_to_mni)
    _, coils, anatomy = place_coils(result, session.t1_path, head_axes_ras=axes, midline_ras_mm=midline)
    t1_name = f"anat/sub-{participant}_T1w.nii.gz"
    writers = [lambda staging: write_transforms(session, staging / "xfm", participant)]
    if session.t1_from_dicom:  # the converted T1 travels with the plan; coordinates refer to it
        anatomy["t1"] = t1_name
        writers.append(lambda staging: write_bytes_atomic(staging / t1_name, session.t1_path.read_bytes()))
    writers += list(extra_writers)
    say("writing outputs")
    return write_plan(result, output, participant, force=force, command=command, input_dirs=input_dirs,
                      coils=coils, anatomy=anatomy, extra_writers=writers)


# ---------------------------------------------------------------------------
# fMRIPrep inputs: an MNI plan re-expressed in the T1w world with fMRIPrep's own transforms
# ---------------------------------------------------------------------------

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
    from tmstarget.ingest.fmriprep import parse_entities, participant_label
    from tmstarget.anatomy.registration import read_fmriprep_transforms

    label = participant_label(participant)
    sub_dir = Path(fmriprep_dir) / f"sub-{label}"
    native = [p for p in sorted(sub_dir.rglob(f"sub-{label}*{_FMRIPREP_T1W}*"))
              if "space" not in parse_entities(p.name)]
    if not native:
        return None, f"no native sub-{label}*_desc-preproc_T1w.nii.gz (without space-) under {sub_dir}"
    complete, missing = [], []
    for t1 in native:
        prefix = t1.name[:t1.name.index(_FMRIPREP_T1W)]
        files = [t1.parent / f"{prefix}_from-{a}_to-{b}_mode-image_xfm.h5"
                 for a, b in ((T1_SPACE, MNI_SPACE), (MNI_SPACE, T1_SPACE))]
        absent = [f.name for f in files if not f.is_file()]
        if absent:
            missing.append(f"no {' nor '.join(absent)} beside {t1}")
        else:
            complete.append((t1, files))
    if not complete:
        return None, "; ".join(missing)
    if len(complete) > 1:
        return None, "several native T1w with transforms (" + ", ".join(str(t) for t, _ in complete) + ")"
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
    (write them with ``write_plan(..., grid_space=MNI_SPACE)``).

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
    return dataclasses.replace(result, space=T1_SPACE, candidates=candidates, mni_mm=mni_pts, qc=qc)


def place_coils_t1w(result, anatomy):
    """Coils on the native T1w scalp for a result of :func:`mni_plan_to_t1w`.

    The plan's brain mask (MNI grid) is brought onto the T1w grid (linear,
    then >= 0.5; the ``from-MNI152NLin2009cAsym_to-T1w`` file) for the
    scalp-to-cortex depth; the handle rules use :func:`head_frame`.

    Returns
    -------
    (dict, list of dict, dict)
        As :func:`tmstarget.analysis.engine.place_coils`: target coil, one coil per
        candidate, anatomy block (``space: "T1w"``, the T1w file and sha256).
    """
    from tmstarget.analysis.engine import place_coils

    t1_img = nib.load(anatomy.t1_path)
    masks = {}
    if "brain" in result.masks:
        brain_mni = nib.Nifti1Image(result.masks["brain"].astype(np.uint8), result.affine)
        brain_t1 = warp_image(brain_mni, anatomy.t1_to_mni, t1_img, "inverse", "linear")
        masks["brain"] = np.asarray(brain_t1.dataobj) >= 0.5
    on_t1 = dataclasses.replace(result, affine=t1_img.affine, shape=t1_img.shape[:3], masks=masks)
    axes, midline = head_frame(anatomy.t1_to_mni)
    return place_coils(on_t1, anatomy.t1_path, head_axes_ras=axes, midline_ras_mm=midline)


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
    qc = dict(anatomy.qc)
    if mni_t1_path is None:
        qc["transform_check"] = "not run: no MNI-space T1w to compare with"
    else:
        qc["transform_check"] = check_fmriprep_transforms(anatomy, mni_t1_path)
    how = "requested" if requested == T1_SPACE else "default"
    note = f"{T1_SPACE} ({how}): world of {anatomy.t1_path.name} through fMRIPrep's transforms"
    return dataclasses.replace(anatomy, qc=qc), note


#: A T1 shorter than this (mm) along any voxel axis is not a whole head.
MIN_T1_EXTENT_MM = 100.0


def check_whole_head(t1_img, source):
    """Refuse a T1 that cannot hold a whole head (field of view below :data:`MIN_T1_EXTENT_MM`)."""
    zooms = np.sqrt((np.asarray(t1_img.affine)[:3, :3] ** 2).sum(axis=0))
    extent_mm = np.asarray(t1_img.shape[:3]) * zooms
    if extent_mm.min() < MIN_T1_EXTENT_MM:
        axis = int(np.argmin(extent_mm))
        raise InputError(
            f"the T1 covers only {extent_mm[axis]:.1f} mm along voxel axis {'ijk'[axis]} ({t1_img.shape[axis]} x "
            f"{zooms[axis]:.2f} mm; field of view {' x '.join(f'{e:.0f}' for e in extent_mm)} mm): not a whole "
            f"head (at least {MIN_T1_EXTENT_MM:.0f} mm along every axis); give the full T1 series",
            path=source,
        )


def _slice_time_run(data, img, meta, run):
    """Slice-timing corrected copy of one run (float32), from its sidecar (:func:`sidecar_slice_timing`).

    TR: ``RepetitionTime``, else the NIfTI header.
    """
    from tmstarget.ingest.runs import header_tr
    from tmstarget.anatomy.slicetiming import sidecar_slice_timing, slice_time_correct

    times, axis = sidecar_slice_timing(meta, source=run.source, label=run.label)
    t_r_s = meta.get("RepetitionTime") or header_tr(img)
    if t_r_s is None:
        raise InputError(f"no repetition time for run {run.label} (sidecar or NIfTI header)", path=run.source)
    return slice_time_correct(data, times, float(t_r_s), slice_axis=axis)
