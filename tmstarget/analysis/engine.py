"""The planning engine: runs -> cleaned data -> seed connectivity -> ranked targets.

``plan`` is the one function every front end calls (CLI, real-time watcher
at the end of a scan, viewer, research mode).  It reads, checks and computes;
it writes nothing (see :mod:`tmstarget.outputs.plan_folder`).
"""

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from tmstarget._threads import importing_meanwhile
from tmstarget.analysis import rois as roi_defs
from tmstarget.analysis.clean import plan_cleaning
from tmstarget.analysis.connectivity import correlation_with_seed, fisher_z, seed_signal, subsystem_fc
from tmstarget.analysis.inference import effective_dof
from tmstarget.analysis.reliability import state_blocks, target_inference
from tmstarget.analysis.targets import fixed_target, pick_targets, score_lead_over_next
from tmstarget.analysis.voxels import VoxelSet, read_voxel_timeseries, voxel_tsnr
from tmstarget.anatomy.motion import fd_jenkinson, volume_centre_ras_mm
from tmstarget.errors import InputError
from tmstarget.ingest.runs import load_mask, load_run, motion_params
from tmstarget.templates import FMRIPREP_MNI_SPACE, NILEARN_MNI_SPACE

log = logging.getLogger(__name__)
#: World of an MNI-space plan: fMRIPrep's template (the BOLD, mask and T1 inputs are fMRIPrep's, or given as such).
SPACE = FMRIPREP_MNI_SPACE
#: Brain voxels whose raw series are read for the brain's median tSNR (an evenly strided sample).
_TSNR_SAMPLE = 4000


@dataclass
class PlanResult:
    """What ``plan`` computed; :mod:`tmstarget.outputs.plan_folder` turns it into files.

    Attributes
    ----------
    protocol : tmstarget.protocol.Protocol
    space : str
    affine, shape : grid of the analysis image (world = ``space``)
    candidates : list of tmstarget.analysis.targets.Candidate
        Ranked; ``candidates[0]`` is the target.
    maps : dict
        ``name -> 3-D float32 array`` (Fisher z maps per state, ``delta``).
    masks : dict
        ``name -> 3-D bool array`` (``search_region``, ``brain``).
    qc : dict
    input_files : dict
        ``role -> Path`` of every file read.
    mni_mm : ndarray (N, 3) or None
        MNI152NLin2009cAsym mm of each candidate when ``space`` is not MNI
        (native plans, :func:`tmstarget.workflows.native.to_t1w`); None when world = MNI.
    mni_space : str or None
        Template of ``mni_mm`` (``MNI152NLin2009aSym`` after tmstarget's own
        registration, ``MNI152NLin2009cAsym`` through fMRIPrep's transforms).
    """

    protocol: object
    space: str
    affine: np.ndarray
    shape: tuple
    candidates: list
    maps: dict = field(default_factory=dict)
    masks: dict = field(default_factory=dict)
    qc: dict = field(default_factory=dict)
    input_files: dict = field(default_factory=dict)
    mni_mm: np.ndarray | None = None
    mni_space: str | None = None

    @property
    def target(self):
        return self.candidates[0]


def _progress(callback, message):
    log.info(message)
    if callback is not None:
        callback(message)


def load_runs(selection, t_r=None):
    """Load and check the runs of ``selection`` (one TR, one grid; labels made unique)."""
    runs = []
    for files, state in selection.runs:
        label = getattr(files, "label", None) or "run"
        runs.append(load_run(files, state=state, t_r=t_r, label=label))
    labels = [r.label for r in runs]
    for i, run in enumerate(runs):  # unique labels for QC and file names
        if labels.count(run.label) > 1:
            run.label = f"{run.label}_{i + 1}"
    first = runs[0]
    for run in runs[1:]:
        if abs(run.t_r - first.t_r) > 1e-3:
            raise InputError(
                f"runs have different repetition times ({first.label}: {first.t_r:g} s, {run.label}: {run.t_r:g} s)",
                path=run.paths["bold"],
            )
        if run.img.shape[:3] != first.img.shape[:3] or not np.allclose(run.img.affine, first.img.affine, atol=1e-3):
            raise InputError(
                f"run {run.label} is on a different grid than {first.label} ({run.img.shape[:3]} vs "
                f"{first.img.shape[:3]}); all runs must be resampled to the same space and grid",
                path=run.paths["bold"],
            )
    return runs


def _brain_mask(runs, explicit_mask, warnings):
    first = runs[0]
    mask = None
    for run in runs:
        path = explicit_mask or run.paths.get("mask")
        if path is None:
            continue
        run_mask = load_mask(path, run.img, run.paths["bold"])
        mask = run_mask if mask is None else mask & run_mask
    if mask is None:
        from nilearn.masking import compute_epi_mask

        warnings.append("no brain mask given: computed one from the mean EPI (nilearn compute_epi_mask)")
        mask = np.asarray(compute_epi_mask(first.img).dataobj) > 0
    return mask


def _score_map(data, seed, rows, conn):
    """Fisher-z map per state and the score the picker uses (z or delta z)."""
    # a state of every frame (rest) reads the data in place: the same numbers without a copy of T x V
    z = {state: fisher_z(correlation_with_seed(data if sel.all() else data[sel], seed[sel]))
         for state, sel in rows.items()}
    if conn.contrast is not None:
        first, second = conn.contrast
        return z, z[first] - z[second]
    return z, z[conn.state]


@dataclass
class AnalysisLayout:
    """Voxels, search region, ROIs and seed of a protocol on one grid (shared by batch and streaming)."""

    voxels: VoxelSet
    region: np.ndarray
    region_spheres: np.ndarray
    region_cols: np.ndarray
    roi_list: list
    roi_cols: dict
    seed_groups: list
    seed_label: str
    warnings: list
    search_voxels_removed: int = 0


def seed_exclusion(seed_mask, affine, margin_mm):
    """The seed ROI grown by ``margin_mm`` (Euclidean, in mm through the voxel sizes).

    Parameters
    ----------
    seed_mask : ndarray of bool (I, J, K)
    affine : array (4, 4)
    margin_mm : float
        0 keeps the seed voxels only.

    Returns
    -------
    ndarray of bool
        Voxels whose centre lies within ``margin_mm`` of a seed voxel's centre.
    """
    if not seed_mask.any():
        return seed_mask.copy()
    sampling = np.sqrt((np.asarray(affine, dtype=float)[:3, :3] ** 2).sum(axis=0))
    distance = ndimage.distance_transform_edt(~seed_mask, sampling=sampling)
    return distance <= margin_mm + 1e-6


def analysis_layout(protocol, brain, affine, grid, where=None):
    """Place the protocol's search region, ROIs and seed on the analysis grid.

    Parameters
    ----------
    protocol : Protocol
    brain : ndarray of bool (I, J, K)
        Brain mask: the analysed voxels.
    affine : array (4, 4)
    grid : MniGrid or tmstarget.workflows.native.NativeGrid
        Builds MNI-defined masks on this grid.
    where : path, optional
        Named in errors.

    The search region is the atlas region in grey matter and the brain mask,
    minus every seed ROI voxel grown by one smoothing FWHM
    (``[clean] smoothing_fwhm_mm``): after smoothing, voxels that close to the
    seed share its signal, and a target there would correlate with itself.

    Returns
    -------
    AnalysisLayout
        ``search_voxels_removed`` counts the region voxels taken out for the seed.
    """
    warnings = []
    voxels = VoxelSet(brain, affine)
    within = brain & grid.grey_matter(protocol.rois.gm_threshold)
    region_spheres = grid.balls(*roi_defs.region_spec(protocol.search.region))
    roi_list = roi_defs.roi_set(protocol.rois.set, protocol.rois.radius_mm)
    roi_balls = {r.name: grid.balls(r.centre_mni_mm, r.radius_mm) for r in roi_list}
    roi_cols = {name: voxels.columns(ball & within) for name, ball in roi_balls.items()}
    empty = [name for name, cols in roi_cols.items() if len(cols) == 0]
    if empty:
        warnings.append(f"ROIs empty on this grid/mask and left out of seeds: {', '.join(empty)}")
    seed_p = protocol.seed
    if seed_p.sphere is not None:
        centre, radius = roi_defs.sphere_spec(seed_p.sphere)
        seed_mask = grid.balls(centre, radius)
        seed_groups = [voxels.columns(seed_mask & within)]
        seed_label = f"sphere {seed_p.sphere} {list(centre)} r={radius:g} mm"
    else:
        seed_rois = [r for r in roi_list if r.subsystem == seed_p.subsystem]
        seed_mask = np.logical_or.reduce([roi_balls[r.name] for r in seed_rois])
        seed_groups = [roi_cols[r.name] for r in seed_rois]
        seed_label = f"{seed_p.subsystem} subsystem of {protocol.rois.set} ({len(seed_groups)} ROIs)"
    if not any(len(g) for g in seed_groups):
        raise InputError(f"the seed ({seed_label}) is empty on this grid and brain mask", path=where)
    region = region_spheres & within
    excluded = region & seed_exclusion(seed_mask, affine, protocol.clean.smoothing_fwhm_mm)
    region &= ~excluded
    region_cols = voxels.columns(region)
    if len(region_cols) == 0:
        raise InputError(
            f"search region '{protocol.search.region}' is empty: no grey-matter voxel of the brain mask lies "
            "in it on this grid, away from the seed (check the mask and that the BOLD is in MNI space)",
            path=where,
        )
    return AnalysisLayout(voxels, region, region_spheres, region_cols, roi_list, roi_cols, seed_groups, seed_label,
                          warnings, int(excluded.sum()))


@dataclass
class CleanedRuns:
    """Runs read and cleaned once, shared by every protocol with the same runs and ``[clean]`` section.

    Built by :func:`prepare`; :func:`analyse` computes one protocol's target from it.

    Attributes
    ----------
    protocols : list of Protocol
        The protocols it was prepared for (one ``[clean]`` section among them).
    layouts : list of AnalysisLayout
        Each protocol's voxels, search region, ROIs and seed on the grid.
    runs : list of tmstarget.ingest.runs.Run
    plans : list of tmstarget.analysis.clean.CleaningPlan
    data : ndarray (T, V)
        Cleaned, smoothed brain voxels over the concatenated kept frames of all runs.
    brain : ndarray of bool
    selection : tmstarget.ingest.collect.Selection
    run_qc : list of dict
        Per run QC without the tSNR medians (they depend on the protocol's region and seed).
    tsnr : list of ndarray (V,)
        Per run raw tSNR of the voxels read unsmoothed (NaN elsewhere).
    brain_sample : ndarray of int
        Voxel columns whose tSNR gives the brain's median.
    fd_jenkinson_rows : ndarray
    warnings : list of str
    """

    protocols: list
    layouts: list
    runs: list
    plans: list
    data: np.ndarray
    brain: np.ndarray
    selection: object
    run_qc: list
    tsnr: list
    brain_sample: np.ndarray
    fd_jenkinson_rows: np.ndarray
    warnings: list


def prepare(selection, protocols, t_r=None, progress=None, runs=None):
    """Read and clean a participant's runs once for one or more protocols sharing them.

    Parameters
    ----------
    selection : tmstarget.ingest.collect.Selection
        Runs (and T1, mask) chosen for the protocols' states.
    protocols : list of Protocol
        Connectivity protocols with equal ``[clean]`` sections (the same runs).
    t_r : float, optional
        User-given TR, checked against headers and sidecars.
    progress : callable, optional
    runs : list of tmstarget.ingest.runs.Run, optional
        Already loaded runs (e.g. cut by :func:`~tmstarget.ingest.runs.truncate_run`);
        default: loaded from ``selection``.

    Returns
    -------
    CleanedRuns
    """
    clean_p = protocols[0].clean
    if any(p.kind != "connectivity" or p.clean != clean_p for p in protocols):
        raise ValueError("prepare: connectivity protocols with one [clean] section only")
    warnings = []
    _progress(progress, "checking inputs")
    with importing_meanwhile("nilearn.signal"):  # nilearn's cleaning (0.5-1 s of imports) while the runs decode
        runs = load_runs(selection, t_r) if runs is None else runs
    affine, shape = runs[0].img.affine, runs[0].img.shape[:3]
    brain = _brain_mask(runs, selection.mask, warnings)
    grid = selection.grid or roi_defs.MniGrid(shape, affine)
    layouts = [analysis_layout(p, brain, affine, grid, runs[0].paths["bold"]) for p in protocols]
    n_voxels = len(layouts[0].voxels)
    brain_sample = np.arange(0, n_voxels, max(1, n_voxels // _TSNR_SAMPLE))
    raw_cols = np.unique(np.concatenate(
        [brain_sample] + [np.concatenate([lay.region_cols, *lay.seed_groups]) for lay in layouts]).astype(int))
    data_blocks, plans, run_qc, fdj_rows, tsnr_runs = [], [], [], [], []
    for run in runs:
        _progress(progress, f"cleaning {run.label}")
        cplan = plan_cleaning(run, clean_p)
        smoothed, raw = read_voxel_timeseries(
            run.img, layouts[0].voxels, cplan.first_frame, clean_p.smoothing_fwhm_mm, raw_columns=raw_cols
        )
        # float32 halves memory; the regression model computes in float64 so the streaming sums match it to 1e-6
        dtype = np.float64 if clean_p.filter == "cosine" else np.float32
        data_blocks.append(cplan.operator.astype(dtype) @ smoothed.astype(dtype, copy=False))
        plans.append(cplan)
        tsnr = np.full(n_voxels, np.nan)
        tsnr[raw_cols] = voxel_tsnr(raw)
        tsnr_runs.append(tsnr)
        fd = cplan.fd_mm[cplan.first_frame:]
        q = {
            "run": run.label,
            "state": run.state or "blocks: " + ", ".join(sorted(set(run.events["trial_type"]))),
            "volumes": run.n_volumes,
            "dummy_volumes_dropped": cplan.first_frame,
            "frames_scrubbed": int(cplan.n_scrubbed),
            "frames_kept": int(len(cplan.kept)),
            "mean_fd_power_mm": float(fd.mean()),
            "max_fd_power_mm": float(fd.max()),
            "fd_power_trace_mm": [round(float(v), 4) for v in fd],  # after the dummy volumes, for figures
            "t_r_s": run.t_r,
            "frame_time_offset_s": run.frame_offset_s,
            "confounds": cplan.confound_names,
        }
        fdj = None
        if run.confounds is not None and all(c in run.confounds.columns for c in ("trans_x", "rot_z")):
            motion = motion_params(run.confounds, run.paths.get("confounds"))
            fdj = fd_jenkinson(motion, volume_centre_ras_mm(run.img.affine, run.img.shape))
            moved = motion[cplan.first_frame:]
            q.update(motion_summary(fdj[cplan.first_frame:], moved))
        fdj_rows.append(fdj[cplan.kept] if fdj is not None else np.full(len(cplan.kept), np.nan))
        run_qc.append(q)
    data = data_blocks[0] if len(data_blocks) == 1 else np.vstack(data_blocks)  # one run: no copy
    del data_blocks
    return CleanedRuns(list(protocols), layouts, runs, plans, data, brain, selection, run_qc, tsnr_runs,
                       brain_sample, np.concatenate(fdj_rows), warnings)


def plan(selection, protocol, t_r=None, progress=None):
    """Compute an individualized target for one participant.

    Parameters
    ----------
    selection : tmstarget.ingest.collect.Selection
        Runs (and T1, mask) chosen for the protocol's states.
    protocol : tmstarget.protocol.Protocol
    t_r : float, optional
        User-given TR, checked against headers and sidecars.
    progress : callable, optional
        Called with a short message at each stage.

    Returns
    -------
    PlanResult
    """
    if protocol.kind == "fixed":
        return plan_fixed(protocol, selection.t1)
    return analyse(prepare(selection, [protocol], t_r, progress), protocol, progress)


def analyse(cleaned, protocol, progress=None):
    """One protocol's target from runs :func:`prepare` read and cleaned.

    Parameters
    ----------
    cleaned : CleanedRuns
    protocol : Protocol
        One of ``cleaned.protocols``.
    progress : callable, optional

    Returns
    -------
    PlanResult
    """
    layout = cleaned.layouts[next(i for i, p in enumerate(cleaned.protocols) if p is protocol)]
    conn, target_p, qc_p = protocol.connectivity, protocol.target, protocol.qc
    clean_p = protocol.clean
    runs, plans, data, brain, selection = cleaned.runs, cleaned.plans, cleaned.data, cleaned.brain, cleaned.selection
    affine, shape = runs[0].img.affine, runs[0].img.shape[:3]
    fdj_rows = cleaned.fd_jenkinson_rows
    warnings = cleaned.warnings + layout.warnings
    voxels, region = layout.voxels, layout.region
    region_spheres, region_cols = layout.region_spheres, layout.region_cols
    roi_list, roi_cols = layout.roi_list, layout.roi_cols
    seed_groups, seed_label = layout.seed_groups, layout.seed_label
    seed_cols = np.unique(np.concatenate([g for g in seed_groups if len(g)]))
    run_qc = [{**q, "tsnr_search_region_median": float(np.median(tsnr[region_cols])),
               "tsnr_seed_median": float(np.median(tsnr[seed_cols])),
               "tsnr_brain_median": float(np.median(tsnr[cleaned.brain_sample]))}
              for q, tsnr in zip(cleaned.run_qc, cleaned.tsnr)]

    _progress(progress, "computing connectivity")
    states = protocol.states
    blocks = state_blocks(runs, plans, states, conn, protocol.inference.segment_s)
    rows = {state: np.isin(blocks[0], np.flatnonzero(blocks[1] == state)) for state in states}
    seed = seed_signal(data, seed_groups)
    dof = {state: effective_dof([p.operator for p in plans], seed, sel) for state, sel in rows.items()}
    for state, sel in rows.items():
        if dof[state] < protocol.inference.min_effective_dof:
            raise InputError(
                f"state '{state}' has only {dof[state]:.1f} effective degrees of freedom ({int(sel.sum())} frames "
                "after scrubbing and block selection, fewer independent ones after filtering and regression); "
                f"at least {protocol.inference.min_effective_dof:g} are needed ([inference] min_effective_dof)",
                path=runs[0].paths["source"],  # the user's input, not a native plan's realigned file
            )
    z_maps, score = _score_map(data, seed, rows, conn)

    _progress(progress, "picking the target")
    candidates = pick_targets(score, voxels, region_cols, target_p)
    _progress(progress, "testing the target (family-wise null, bootstrap)")
    inference_qc, split_half_mm = target_inference(
        data[:, region_cols], seed, blocks, [p.operator for p in plans], protocol, voxels, region_cols, candidates[0],
        run_labels=[r.label for r in runs], dof=dof)

    roi_names = [r.name for r in roi_list if len(roi_cols[r.name])]
    roi_signals = np.column_stack([data[:, roi_cols[n]].mean(axis=1, dtype=np.float64) for n in roi_names])
    subsystems = [r.subsystem for r in roi_list if len(roi_cols[r.name])]
    table = {state: subsystem_fc(roi_signals[sel], subsystems) for state, sel in rows.items()}
    state_balance = None
    if conn.contrast is not None:
        first, second = conn.contrast
        table[f"{first}-minus-{second}"] = {k: table[first][k] - table[second][k] for k in table[first]}
        delta = table[f"{first}-minus-{second}"]
        if (qc_p.rumination_subsystem_check and first == "rumination"
                and not (delta["core-dmpfc"] < 0 < delta["core-mtl"])):
            warnings.append(
                "atypical subsystem pattern: during rumination core-dMPFC FC usually falls and core-MTL FC rises "
                f"(here {delta['core-dmpfc']:+.3f} and {delta['core-mtl']:+.3f})"
            )
        state_balance = contrast_balance(rows, fdj_rows, conn.contrast)
        warnings += balance_warnings(state_balance, qc_p)
    if not inference_qc["significant"]:
        warnings.insert(0, inference_qc["verdict"])
    if not np.isfinite(split_half_mm):
        warnings.append("unstable target: one of the two halves of the data holds no target at all")
    elif split_half_mm > qc_p.split_half_warning_mm:
        warnings.append(f"unstable target: the two halves of the data give targets {split_half_mm:.1f} mm apart")
    for q in run_qc:
        if q["frames_scrubbed"] > qc_p.scrubbed_warning_fraction * (q["frames_kept"] + q["frames_scrubbed"]):
            warnings.append(f"{q['run']}: {q['frames_scrubbed']} frames scrubbed "
                            f"(more than {100 * qc_p.scrubbed_warning_fraction:g}%)")
        if q["mean_fd_power_mm"] > qc_p.mean_fd_warning_mm:
            warnings.append(f"{q['run']}: high motion (mean FD {q['mean_fd_power_mm']:.2f} mm)")
        warnings += motion_warnings(q, qc_p)
        if q["tsnr_seed_median"] < qc_p.seed_tsnr_warning_fraction * q["tsnr_brain_median"]:
            warnings.append(
                f"{q['run']}: the seed sits in signal dropout (median tSNR {q['tsnr_seed_median']:.1f}, below "
                f"{qc_p.seed_tsnr_warning_fraction:g} x the brain's median {q['tsnr_brain_median']:.1f}): "
                "its connectivity map is unreliable"
            )
    # how far the target sits inside the region: near 0 means the optimum may lie outside it
    edge_mm = float(ndimage.distance_transform_edt(region_spheres, sampling=np.sqrt((affine[:3, :3] ** 2).sum(0)))[
        candidates[0].voxel_ijk])
    if edge_mm <= qc_p.edge_warning_voxels * np.sqrt((affine[:3, :3] ** 2).sum(0)).max():
        warnings.append("the target lies on the edge of the search region: the optimum may be outside it")

    maps = {f"z_{state}": voxels.to_volume(z) for state, z in z_maps.items()}
    if conn.contrast is not None:
        maps["delta"] = voxels.to_volume(score)
    input_files = {}
    for run in runs:
        for role, path in run.paths.items():
            if role != "source":  # the user's input a run was made from: named in messages, not an input file here
                input_files[f"{run.label}_{role}"] = path
    if selection.mask is not None:
        input_files["mask"] = selection.mask
    if selection.t1 is not None:
        input_files["t1"] = selection.t1
    qc = {
        "runs": run_qc,
        "frames_per_state": {s: int(sel.sum()) for s, sel in rows.items()},
        "effective_dof_per_state": {s: round(float(v), 2) for s, v in dof.items()},
        "state_balance": state_balance,
        "seed": seed_label,
        "search_region_voxels": int(len(region_cols)),
        "search_voxels_removed_near_seed": layout.search_voxels_removed,
        "search_exclusion": f"seed ROI voxels grown by {clean_p.smoothing_fwhm_mm:g} mm (one smoothing FWHM)",
        "subsystem_fc": table,
        "stability": {
            "split_half_distance_mm": split_half_mm if np.isfinite(split_half_mm) else None,  # None: a half found none
            "note": "targets picked separately on two interleaved halves of each state's blocks "
                    "(blocks 1, 3, 5... and 2, 4, 6...)",
        },
        "score_statistic": candidates[0].extra.get("score_statistic"),
        "score_lead_over_next_candidate": score_lead_over_next(candidates, target_p.direction),
        "inference": inference_qc,
        "target_depth_in_search_region_mm": edge_mm,
        "warnings": warnings,
    }
    return PlanResult(
        protocol, SPACE, affine, shape, candidates, maps,
        {"search_region": region, "brain": brain}, qc, input_files,
    )


def plan_fixed(protocol, t1=None):
    """A classic fixed target (no fMRI): the MNI coordinate on the T1 grid (or the MNI template's).

    Without a T1 the grid is nilearn's template, so the plan's space is
    ``MNI152NLin2009aSym``; with a T1 it is that T1's (an MNI-space T1 of
    fMRIPrep: ``MNI152NLin2009cAsym``). The coordinate itself is the
    published one, used unchanged (``data/atlas.toml`` states its space).
    """
    import nibabel as nib
    from nilearn import datasets

    fixed = protocol.fixed
    mni = fixed.mni_mm if fixed.mni_mm is not None else roi_defs.load_atlas()["fixed"][fixed.site]["mni_mm"]
    grid = nib.load(t1) if t1 is not None else datasets.load_mni152_template(resolution=2)
    candidate = fixed_target(mni, grid.affine, grid.shape)
    return PlanResult(
        protocol, SPACE if t1 is not None else NILEARN_MNI_SPACE, grid.affine, grid.shape[:3], [candidate],
        qc={"warnings": ["fixed target: group-average coordinate, not individualized"], "inference": None},
        input_files={"t1": t1} if t1 is not None else {},
    )


def motion_summary(fd_jenkinson_mm, motion):
    """Published motion measures of a run's analysed frames (science.md §2, §8).

    Parameters
    ----------
    fd_jenkinson_mm : ndarray (T,)
        FD_Jenkinson of each analysed frame (mm).
    motion : ndarray (T, 6)
        Their rigid parameters relative to the realignment reference (mm, rad).

    Returns
    -------
    dict
        ``mean_fd_jenkinson_mm``, ``max_translation_mm`` (largest absolute
        translation on any axis) and ``max_rotation_deg`` (largest absolute rotation).
    """
    return {
        "mean_fd_jenkinson_mm": float(np.mean(fd_jenkinson_mm)),
        "max_translation_mm": float(np.abs(motion[:, :3]).max()),
        "max_rotation_deg": float(np.degrees(np.abs(motion[:, 3:]).max())),
    }


def motion_warnings(run_qc, qc_p):
    """Warnings for a run's published motion measures above the protocol's ``[qc]`` thresholds."""
    if "mean_fd_jenkinson_mm" not in run_qc:
        return []
    out = []
    if run_qc["mean_fd_jenkinson_mm"] > qc_p.mean_fd_jenkinson_warning_mm:
        out.append(f"{run_qc['run']}: mean FD_Jenkinson {run_qc['mean_fd_jenkinson_mm']:.3f} mm is above "
                   f"{qc_p.mean_fd_jenkinson_warning_mm:g} mm")
    if (run_qc["max_translation_mm"] > qc_p.max_translation_warning_mm
            or run_qc["max_rotation_deg"] > qc_p.max_rotation_warning_deg):
        out.append(f"{run_qc['run']}: head displaced up to {run_qc['max_translation_mm']:.2f} mm / "
                   f"{run_qc['max_rotation_deg']:.2f} deg (limits {qc_p.max_translation_warning_mm:g} mm / "
                   f"{qc_p.max_rotation_warning_deg:g} deg)")
    return out


def contrast_balance(rows, fd_jenkinson_rows, contrast):
    """Frame counts and mean FD_Jenkinson of the two states of a contrast (over their analysed frames)."""
    out = {}
    for state in contrast:
        fd = fd_jenkinson_rows[rows[state]]
        out[state] = {"frames": int(rows[state].sum()),
                      "mean_fd_jenkinson_mm": float(fd.mean()) if fd.size and np.isfinite(fd).all() else None}
    return out


def balance_warnings(balance, qc_p):
    """Warnings when the two states differ in frame count or motion enough to drive the contrast."""
    (a, qa), (b, qb) = balance.items()
    out = []
    larger = max(qa["frames"], qb["frames"])
    if abs(qa["frames"] - qb["frames"]) > qc_p.state_frames_warning_fraction * larger:
        out.append(f"unbalanced states: {a} has {qa['frames']} frames, {b} {qb['frames']} (more than "
                   f"{100 * qc_p.state_frames_warning_fraction:g}% apart)")
    fa, fb = qa["mean_fd_jenkinson_mm"], qb["mean_fd_jenkinson_mm"]
    if fa is not None and fb is not None and abs(fa - fb) > qc_p.state_fd_warning_mm:
        out.append(f"motion differs between states: mean FD_Jenkinson {a} {fa:.3f} mm, {b} {fb:.3f} mm "
                   f"(more than {qc_p.state_fd_warning_mm:g} mm apart): motion may drive the contrast")
    return out
