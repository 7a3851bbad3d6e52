"""The native workflow: scanner DICOM (or raw NIfTI) + T1 -> a plan in the T1's world.

:func:`plan_request_native` (``tmstarget plan`` on raw runs, :func:`tmstarget.plan`)
checks the inputs and calls :func:`plan_native`: :func:`prepare_native` builds
runs the engine can plan on, :func:`native_plan` plans on them (also the tail of
``tmstarget watch``) and returns a :class:`~tmstarget.outputs.plan.Plan`.

Order of operations (issue 3 §2):

1. load every functional run (DICOM series via :func:`~tmstarget.ingest.native.load_image`,
   or a raw NIfTI with its BIDS sidecar) and the T1;
2. estimate rigid head motion of every volume of every run against one
   reference volume (volume 0 of the first run) and realign (trilinear) onto
   that reference grid: all runs end on one EPI grid (world = scanner RAS);
3. coregister the mean realigned EPI to the T1 (rigid) and register the T1 to
   nilearn's MNI152NLin2009aSym template (affine + SyN at 2 mm);
4. bring the MNI brain mask (nearest neighbour) and the WM/CSF priors into
   EPI space through both transforms and write, per run, the realigned BOLD,
   an fMRIPrep-like confounds TSV (``trans_*`` mm, ``rot_*`` rad,
   ``framewise_displacement`` Power, ``white_matter``, ``csf``) and the mask;
5. return a :class:`~tmstarget.ingest.collect.Selection` whose ``grid`` is a
   :class:`~tmstarget.workflows.native_grid.NativeGrid`, so
   :func:`tmstarget.analysis.engine.plan` runs unchanged on the EPI grid; :func:`to_t1w` then
   re-expresses its result in the T1's world with MNI coordinates from the registration.

Transforms follow :mod:`tmstarget.anatomy.registration` (ITK/ANTs conventions, RAS mm at the
interface). No DICOM patient field reaches a file name or output (named from the participant).
"""

import dataclasses
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from tmstarget._fileio import write_json_atomic, write_nifti_atomic, write_text_atomic
from tmstarget.anatomy.motion import estimate_motion, fd_jenkinson, fd_power, realign, volume_centre_ras_mm
from tmstarget.anatomy.registration import (
    MNI_SPACE,
    compose,
    map_points,
    mni_brain_mask,
    mni_template,
    nuisance_masks,
    save_transform,
    start_coregistration,
    start_register_t1_to_mni,
    template_tissue_probabilities,
)
from tmstarget.anatomy.t1 import check_scalp, check_whole_head
from tmstarget.errors import InputError
from tmstarget.ingest.collect import ExplicitRun, Selection
from tmstarget.ingest.native import NativeRun, _is_dicom_source, load_image
from tmstarget.workflows.inputs import check_inputs_exist
from tmstarget.workflows.native_grid import MASK_RESOLUTION_MM, NativeGrid
from tmstarget.workflows.t1_coil import T1Anatomy, coils_on_t1, prepare_t1_anatomy

log = logging.getLogger(__name__)

EPI_SPACE = "boldref"
T1_SPACE = "T1w"


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
        ``T1w -> MNI152NLin2009aSym`` (affine + SyN).
    t1_path : Path
        T1 NIfTI the T1w world refers to (a converted copy for a DICOM T1).
    t1_from_dicom : bool
    qc : dict
        Motion summary per run (goes into ``target.json``).
    stage_seconds : dict, optional
        Time per stage (s); kept out of ``target.json``, which two identical runs write byte for byte
        (apart from its date).
    anatomy : T1Anatomy, optional
        The T1's head mask, scalp check and surface, and its tissue segmentation (perhaps still running in
        its own process), for the coil stage; None: computed there.
    """

    selection: Selection
    epi_to_t1: object
    t1_to_mni: object
    t1_path: Path
    t1_from_dicom: bool
    qc: dict
    stage_seconds: dict = None
    anatomy: T1Anatomy = None


def _stage(progress, timings, name):
    """Start a stage: announce it and return a function that records its duration."""
    if progress is not None:
        progress(name)
    log.info(name)
    start = time.perf_counter()

    def done():
        timings[name] = round(time.perf_counter() - start, 3)
        log.info("%s: %.1f s", name, timings[name])

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


def confounds_tsv(params, fd_power_mm, fd_jenkinson_mm, wm, csf, gs, missing=None):
    """fMRIPrep-style confounds table as TSV text (mm, rad; first FD is n/a; ``gs`` mean over the brain mask).

    ``missing`` (bool per volume) adds a ``missing_volume`` column: volumes a
    real-time export never delivered, which planning leaves out.
    """
    header = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z",
              "framewise_displacement", "framewise_displacement_jenkinson", "white_matter", "csf", "global_signal"]
    if missing is not None:
        header.append("missing_volume")
    lines = ["\t".join(header)]
    for t in range(len(params)):
        # repr round-trips exactly: a plan reading this table sees the numbers the estimator produced
        fds = ["n/a", "n/a"] if t == 0 else [repr(float(fd_power_mm[t])), repr(float(fd_jenkinson_mm[t]))]
        values = [repr(float(v)) for v in params[t]] + fds + [repr(float(x[t])) for x in (wm, csf, gs)]
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
        Among others: a T1 covering less than :data:`tmstarget.anatomy.t1.MIN_T1_EXTENT_MM` along
        an axis (not a whole head), or ``slice_timing`` without SliceTiming.
    """
    background = []  # what runs in other processes meanwhile: ended if this plan fails
    try:
        return _prepare_native(runs, t1, work_dir, participant, t1_series, progress, slice_timing, background)
    except BaseException:
        for call in background:
            call.cancel()
        raise


def _prepare_native(runs, t1, work_dir, participant, t1_series, progress, slice_timing, background):
    """:func:`prepare_native`'s steps; appends each registration or segmentation it starts to ``background``."""
    if not runs:
        raise InputError("no functional run given (--rest-dicom/--task-dicom, or --rest-bold/--task-bold with "
                         "--native)")
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
    # the coil stage reads the T1 file (a NIfTI T1 is read the same way here); a converted T1 is read back
    anatomy = prepare_t1_anatomy(t1_path, None if t1_from_dicom else t1_img)
    scalp = check_scalp(t1_img) if t1_from_dicom else anatomy.scalp
    brain_only = not scalp.scalp  # brain-extracted: registered brain to brain, no coil
    done()

    # the T1 -> MNI registration needs only the T1: its own process starts now, while this one goes on
    registration = start_register_t1_to_mni(t1_img, workdir=work / "ants", brain_only=brain_only)
    background.extend([registration, anatomy])
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

    coregistration = start_coregistration(mean_img, t1_img, EPI_SPACE, T1_SPACE, workdir=work / "ants")
    background.append(coregistration)
    done = _stage(progress, timings, "writing realigned runs, scalp surface (while the registrations run)")
    bold_paths, sidecar_paths = [], []
    for k, (run, (img, meta)) in enumerate(zip(runs, loaded)):
        stem = f"{prefix}_{run.label}"
        header = img.header.copy()
        header.set_data_dtype(np.float32)
        bold_paths.append(write_nifti_atomic(work / f"{stem}_space-{EPI_SPACE}_desc-realigned_bold.nii.gz",
                                             nib.Nifti1Image(realigned[..., bounds[k]:bounds[k + 1]], affine, header)))
        sidecar_paths.append(write_json_atomic(work / f"{stem}_space-{EPI_SPACE}_desc-realigned_bold.json",
                                               {**meta, "SkullStripped": False, "MotionCorrected": True,
                                                "SliceTimingCorrected": bool(slice_timing)}))  # to mid-TR
    anatomy.compute_scalp_surface()
    template_tissue_probabilities(MASK_RESOLUTION_MM)  # loaded once per process: ready for the masks
    mni_template(MASK_RESOLUTION_MM)
    import ants  # noqa: F401 - imported now, while waiting, not on the way to the target (about 1 s)
    done()

    done = _stage(progress, timings, "coregistering the mean EPI to the T1 (rigid; its own process)")
    epi_to_t1 = coregistration.result()
    done()
    timings["EPI -> T1 coregistration, own process"] = round(coregistration.seconds, 3)

    done = _stage(progress, timings, f"registering the T1 to {MNI_SPACE} (affine + SyN, 2 mm, "
                  f"{'brain to brain: the T1 has no scalp' if brain_only else 'whole head'}; its own process, "
                  "started after loading)")
    t1_to_mni = registration.result()
    done()
    timings["T1 -> MNI registration, own process"] = round(registration.seconds, 3)
    anatomy.start_tissue(t1_to_mni)  # runs while the masks, the runs' confounds and the engine run here

    done = _stage(progress, timings, "bringing the MNI brain mask and WM/CSF priors into EPI space")
    epi_to_mni = compose(epi_to_t1, t1_to_mni)
    grid = NativeGrid(mean_img, epi_to_mni)
    brain = grid.nearest(mni_brain_mask(MASK_RESOLUTION_MM).get_fdata() > 0)
    if not brain.any():
        raise InputError("the MNI brain mask warped into EPI space is empty: check the EPI -> T1 -> MNI registration")
    tissue = nuisance_masks(epi_to_mni, mean_img, direction="inverse", resolution_mm=MASK_RESOLUTION_MM)
    wm_mask = np.asarray(tissue["wm"].dataobj) > 0
    csf_mask = np.asarray(tissue["csf"].dataobj) > 0
    mask_path = write_nifti_atomic(work / f"{prefix}_space-{EPI_SPACE}_desc-brain_mask.nii.gz",
                                   nib.Nifti1Image(brain.astype(np.uint8), affine))
    done()

    done = _stage(progress, timings, "writing confounds")
    centre = volume_centre_ras_mm(affine, images[0].shape)
    selected, motion_qc = [], []
    for k, run in enumerate(runs):
        part = slice(bounds[k], bounds[k + 1])
        data, run_params = realigned[..., part], params[part]
        stem = f"{prefix}_{run.label}"
        fd_p, fd_j = fd_power(run_params), fd_jenkinson(run_params, centre)
        wm, csf, gs = (data[m].mean(axis=0, dtype=np.float64) for m in (wm_mask, csf_mask, brain))
        confounds_path = work / f"{stem}_desc-confounds_timeseries.tsv"
        write_text_atomic(confounds_path, confounds_tsv(run_params, fd_p, fd_j, wm, csf, gs))
        selected.append((ExplicitRun(bold=bold_paths[k], confounds=confounds_path, sidecar=sidecar_paths[k],
                                     events=run.events, mask=mask_path, label=run.label, source=Path(run.source)),
                          run.state))
        motion_qc.append({"run": run.label, "volumes": int(data.shape[3]),
                          "max_abs_translation_mm": float(np.abs(run_params[:, :3]).max()),
                          "max_abs_rotation_deg": float(np.degrees(np.abs(run_params[:, 3:]).max())),
                          "mean_fd_jenkinson_mm": float(fd_j[1:].mean())})
    done()

    inputs = [Path(r.source) for r in runs] + [Path(r.events) for r in runs if r.events] + [Path(t1)]
    selection = Selection(selected, t1_path, None, inputs, grid=grid)
    qc = {"motion_reference": f"volume 0 of {runs[0].label}", "motion": motion_qc}
    return NativeSession(selection, epi_to_t1, t1_to_mni, t1_path, t1_from_dicom, qc, timings, anatomy)


def write_transforms(session, out_dir, participant):
    """Copy the session's transforms into ``out_dir``, named by their frames.

    Files: ``sub-<label>_from-boldref_to-T1w_{fwd,inv}0.mat`` and
    ``sub-<label>_from-T1w_to-MNI152NLin2009aSym_{fwd,inv}{0,1}.*``; the
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
            "fwd": lists["fwd"],
            "fwd_note": f"resamples {transform.from_space} images onto a {transform.to_space} grid; "
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
                               mni_mm=mni_pts, mni_space=MNI_SPACE, qc=qc)


def native_plan(session, protocol, participant, command=None, t_r=None, progress=None):
    """Plan on a prepared native session: target and coil in T1w world, with the transforms and T1 copy.

    The shared tail of ``tmstarget plan`` on raw runs and of ``tmstarget watch``.

    Parameters
    ----------
    session : NativeSession
    protocol : Protocol
    participant : str
    command : list of str, optional
        Command line, for provenance.
    t_r : float, optional
        Repetition time (s), checked against headers and sidecars.
    progress : callable, optional
        Called with a message at the start of each stage.

    Returns
    -------
    tmstarget.outputs.plan.Plan
        With ``files``: the transforms (``xfm/``) and, for a T1 given as
        DICOM, its NIfTI conversion (``anat/``), which the coordinates refer to.
    """
    from tmstarget.analysis.engine import plan
    from tmstarget.outputs.plan import build_plan

    def say(message):
        if progress is not None:
            progress(message)

    result = plan(session.selection, protocol, t_r=t_r, progress=progress)
    say("mapping the target EPI -> T1 -> MNI")
    result = to_t1w(result, session.epi_to_t1, session.t1_to_mni)
    result.qc["native"] = session.qc
    coils, anatomy = coils_on_t1(result, session.t1_path, session.t1_to_mni, progress=say, anatomy=session.anatomy)
    with tempfile.TemporaryDirectory(prefix="tmstarget-xfm-") as scratch:
        write_transforms(session, Path(scratch), participant)
        files = {f"xfm/{path.name}": path.read_bytes() for path in sorted(Path(scratch).iterdir())}
    if session.t1_from_dicom:  # the converted T1 travels with the plan; coordinates refer to it
        t1_name = f"anat/sub-{participant}_T1w.nii.gz"
        anatomy["t1"] = t1_name
        files[t1_name] = session.t1_path.read_bytes()
    say("writing outputs")
    refused = {"coil_reason": anatomy["t1_check"]["coil"]} if "coil" in anatomy["t1_check"] else {}  # no scalp
    return build_plan(result, participant, command=command, inputs=session.selection.inputs, coils=coils,
                      anatomy=anatomy, files=files, **refused)


def plan_native(runs, t1, protocol, participant, *, t1_series=None, slice_timing=False, work_dir=None, t_r=None,
                command=None, output=None, force=False, progress=None):
    """Raw runs + T1 -> target and coil pose in the T1's world (the native path of ``tmstarget plan``).

    Parameters
    ----------
    runs : sequence of NativeRun
    t1 : Path
        T1 DICOM folder or NIfTI.
    protocol : Protocol
        A connectivity protocol.
    participant : str
    t1_series : int or str, optional
        Series to pick from DICOM folders holding several.
    slice_timing : bool
        See :func:`prepare_native`.
    work_dir : Path, optional
        Keep the intermediate files here (default: a temporary folder, removed).
    t_r : float, optional
    command : list of str, optional
    output : Path, optional
        Checked (against ``force`` and the input folders) before any work.
    force : bool
    progress : callable, optional

    Returns
    -------
    tmstarget.outputs.plan.Plan
    """
    from tmstarget.outputs.plan_folder import check_output_dir

    t1 = Path(t1)
    if output is not None:
        check_output_dir(output, force, [r.source for r in runs] + [r.events for r in runs if r.events] + [t1])
    work = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="tmstarget-native-"))
    try:
        session = prepare_native(runs, t1, work, participant, t1_series=t1_series, progress=progress,
                                 slice_timing=slice_timing)
        try:
            return native_plan(session, protocol, participant, command=command, t_r=t_r, progress=progress)
        except BaseException:
            session.anatomy.cancel()  # its tissue segmentation may still run
            raise
    finally:
        if work_dir is None:
            shutil.rmtree(work, ignore_errors=True)


def _native_runs(request, protocol):
    """NativeRun list (checked against the protocol's states) from DICOM folders or raw NIfTI runs."""
    from tmstarget.ingest.collect import select_runs

    series = int(request.series) if isinstance(request.series, str) and request.series.isdigit() else request.series
    for flag in ("rest_confounds", "task_confounds"):
        if getattr(request, flag):
            raise InputError(f"--{flag.replace('_', '-')} is for preprocessed runs; native runs get their "
                             "confounds from the motion estimation here")
    if request.mask is not None or request.dataset is not None:
        raise InputError("native mode (raw runs) takes neither a dataset folder nor --mask: the brain mask comes "
                         "from the MNI template")
    if (request.rest_bold or request.task_bold) and not request.native:
        raise InputError("--rest-bold/--task-bold next to DICOM runs: add --native if these NIfTI runs are raw")
    if request.t1 is None and request.t1_dicom is None:
        raise InputError("native mode needs the participant's T1: --t1-dicom DIR or --t1 T1.nii.gz")
    if request.t1 is not None and request.t1_dicom is not None:
        raise InputError("give either --t1 or --t1-dicom, not both")
    rest = [ExplicitRun(bold=Path(src), label=f"rest_run-{i + 1}")
            for i, src in enumerate(list(request.rest_dicom) + list(request.rest_bold))]
    blocks, by_state = [], {}
    for state, path in list(request.task_dicom) + list(request.task_bold):
        if state is None:
            i = len(blocks)
            if i >= len(request.events):
                raise InputError("each blocks-design task run needs its --events file", path=path)
            blocks.append(ExplicitRun(bold=path, events=request.events[i], label=f"task_run-{i + 1}"))
        else:
            by_state.setdefault(state, []).append(ExplicitRun(bold=path, label=f"task-{state}"))
    selection = select_runs(protocol.states, explicit_rest=rest, explicit_task=blocks,
                            explicit_state_runs=by_state)
    runs = [NativeRun(Path(files.bold), state, files.label, events=files.events, series=series)
            for files, state in selection.runs]
    return runs, series


def plan_request_native(request, protocol, *, command=None, output=None, force=False, progress=None):
    """Plan on the raw runs of ``request`` (DICOM folders, or NIfTI runs with ``native``) and its T1.

    Parameters
    ----------
    request : tmstarget.workflows.PlanRequest
    protocol : tmstarget.protocol.Protocol
    command, output, force, progress
        As :func:`plan_native`.

    Returns
    -------
    tmstarget.outputs.plan.Plan
        In the T1's world (``space == "T1w"``).
    """
    from tmstarget.analysis.engine import SPACE

    if request.space == SPACE:
        raise InputError(f"--space {SPACE}: a plan on raw runs is always in the T1's world (T1w), with the MNI "
                         "coordinate in target.mni_mm; --space is for fMRIPrep inputs")
    if protocol.kind != "connectivity":
        raise InputError(f"protocol '{protocol.name}' is a fixed target: native raw runs are not needed")
    runs, series = _native_runs(request, protocol)
    check_inputs_exist(request)
    return plan_native(runs, request.t1_dicom or request.t1, protocol, request.label, t1_series=series,
                       slice_timing=request.slice_timing, work_dir=request.work_dir, t_r=request.t_r,
                       command=command, output=output, force=force, progress=progress)


def _slice_time_run(data, img, meta, run):
    """Slice-timing corrected copy of one run (float32), from its sidecar (:func:`sidecar_slice_timing`).

    TR: ``RepetitionTime``, else the NIfTI header.
    """
    from tmstarget.anatomy.slicetiming import sidecar_slice_timing, slice_time_correct
    from tmstarget.ingest.runs import header_tr

    times, axis = sidecar_slice_timing(meta, source=run.source, label=run.label)
    t_r_s = meta.get("RepetitionTime") or header_tr(img)
    if t_r_s is None:
        raise InputError(f"no repetition time for run {run.label} (sidecar or NIfTI header)", path=run.source)
    return slice_time_correct(data, times, float(t_r_s), slice_axis=axis)
