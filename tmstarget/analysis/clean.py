"""Denoising of one run: nuisance design, scrubbing, temporal cleaning, smoothing.

Order of operations (per run, as nilearn's ``signal.clean`` defines it after
``image.smooth_img``): drop the first ``dummy_volumes``; spatial Gaussian
smoothing (FWHM mm); then, per voxel, censoring of high-motion frames
(FD_Power > threshold; censored frames are interpolated before filtering and
removed after), linear detrend, Butterworth band-pass of signals and
confounds, and regression of the confounds (Friston-24, mean WM and CSF,
optional global signal, task-condition regressors convolved with the SPM
canonical HRF).

Every temporal step is linear in the data and identical for all voxels, so
the whole temporal cleaning of a run is one matrix ``M`` (kept frames x
frames).  We obtain ``M`` by running ``nilearn.signal.clean`` once on the
identity matrix and then clean every voxel with a single matrix product: the
numbers are nilearn's, the cost is one BLAS call instead of a filter per
voxel.  Spatial smoothing commutes with ``M`` (it acts on the other axis).

``[clean] filter = "cosine"`` selects the regression model instead: the band
limits become discrete-cosine regressors (:func:`cosine_band_regressors`) and
the detrend a constant and a linear trend in true frame time, all fitted with
the confounds in one least-squares regression over the kept frames
(:func:`regression_operator`).  Every regressor of that model is known when
its frame arrives, so the real-time watcher reaches the same numbers from
running sums (:mod:`tmstarget.analysis.streaming`).
"""

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from tmstarget.anatomy.motion import fd_power, friston24
from tmstarget.errors import InputError
from tmstarget.ingest.runs import confound_column, motion_params

FWHM_TO_SIGMA = 1.0 / np.sqrt(8.0 * np.log(2.0))
#: Design directions with a singular value below this fraction of the largest (columns equilibrated) are
#: dropped, by the batch regression and by the streaming one alike.
RANK_RTOL = 1e-7


def task_regressors(events, n_volumes, t_r, model="hrf", frame_offset_s=0.0):
    """One regressor per trial type, sampled at each frame's time ``k * t_r + frame_offset_s``.

    Parameters
    ----------
    events : pandas.DataFrame
        ``onset``, ``duration`` (s, from the first volume of the file), ``trial_type``.
    n_volumes : int
        Volumes in the file (before dropping dummies).
    t_r : float
        Repetition time (s).
    model : {'hrf', 'boxcar'}
        ``'hrf'``: boxcar convolved with the SPM canonical HRF (nilearn);
        ``'boxcar'``: plain indicator, as in Chen 2020.
    frame_offset_s : float
        0 (each volume's start, as acquired) or the slice-timing reference
        (mid-TR) of a slice-timing corrected run (``Run.frame_offset_s``).

    Returns
    -------
    regressors : ndarray, shape (n_volumes, n_conditions)
    names : list of str
    """
    from nilearn.glm.first_level import compute_regressor

    frame_times = np.arange(n_volumes) * t_r + frame_offset_s
    names = sorted(events["trial_type"].unique())
    columns = []
    for name in names:
        rows = events[events["trial_type"] == name]
        if model == "hrf":
            condition = np.vstack([rows["onset"], rows["duration"], np.ones(len(rows))])
            reg, _ = compute_regressor(condition, "spm", frame_times, oversampling=16)
            columns.append(reg[:, 0])
        else:
            on = np.zeros(n_volumes)
            for onset, duration in zip(rows["onset"], rows["duration"]):
                on[(frame_times >= onset) & (frame_times < onset + duration)] = 1.0
            columns.append(on)
    return np.column_stack(columns), [f"task_{n}" for n in names]


@dataclass
class CleaningPlan:
    """Everything needed to clean one run, decided from its confounds only.

    Attributes
    ----------
    first_frame : int
        Number of dummy volumes dropped (frames before it are ignored).
    kept : ndarray of int
        Indices (into the whole file) of the frames that survive scrubbing.
    operator : ndarray, shape (len(kept), n_frames - first_frame)
        Temporal cleaning matrix (see module docstring).
    fd_mm : ndarray
        FD_Power of every frame of the file (mm).
    confound_names : list of str
    confounds : ndarray or None
        Nuisance design on the frames after the dummies (for the record and tests).
    """

    first_frame: int
    kept: np.ndarray
    operator: np.ndarray
    fd_mm: np.ndarray
    confound_names: list
    confounds: np.ndarray | None

    @property
    def n_scrubbed(self):
        return self.operator.shape[1] - len(self.kept)


def nuisance_design(run, params):
    """Confound matrix of a run (all frames of the file) and its column names."""
    where = run.paths.get("confounds")
    columns, names = [], []
    if params.motion != "none" or params.wm_csf or params.global_signal or params.scrub:
        if run.confounds is None:
            raise InputError(
                "a confounds TSV is needed (motion, WM/CSF or scrubbing is on in the protocol)", path=run.paths["bold"]
            )
    if params.motion != "none":
        motion = motion_params(run.confounds, where)
        # Friston-24 lags start at the first kept frame (DPABI computes it after discarding dummies).
        motion = motion[params.dummy_volumes:]
        block = friston24(motion) if params.motion == "friston24" else motion
        columns.append(np.vstack([np.zeros((params.dummy_volumes, block.shape[1])), block]))
        names += [f"motion_{i:02d}" for i in range(block.shape[1])]
    if params.wm_csf:
        why = " needed by [clean] wm_csf = true"
        columns += [confound_column(run.confounds, c, where, why)[:, None] for c in ("white_matter", "csf")]
        names += ["white_matter", "csf"]
    if params.global_signal:
        why = " needed by [clean] global_signal"
        columns.append(confound_column(run.confounds, "global_signal", where, why)[:, None])
        names.append("global_signal")
    if run.events is not None and params.task_regressors != "none":
        regs, reg_names = task_regressors(run.events, run.n_volumes, run.t_r, params.task_regressors,
                                          run.frame_offset_s)
        columns.append(regs)
        names += reg_names
    if not columns:
        return None, []
    return np.hstack(columns), names


def censored_frames(fd_mm, threshold_mm, frames_before=0, frames_after=0):
    """Frames scrubbing leaves out: each frame with FD above the threshold and its neighbours.

    Parameters
    ----------
    fd_mm : ndarray (T,)
        Framewise displacement of the analysed frames (mm).
    threshold_mm : float
    frames_before, frames_after : int
        Neighbours censored with a high-motion frame ``b``: frames
        ``b - frames_before .. b + frames_after`` (Power 2012; the Chen 2020
        configuration uses 1 before and 2 after), clipped to the run.

    Returns
    -------
    ndarray of bool, shape (T,)
    """
    bad = np.flatnonzero(np.asarray(fd_mm) > threshold_mm)
    out = np.zeros(len(fd_mm), dtype=bool)
    for b in bad:
        out[max(b - frames_before, 0):b + frames_after + 1] = True
    return out


def cleaning_operator(n_frames, t_r, confounds=None, kept=None, detrend=True, high_pass_hz=None, low_pass_hz=None):
    """Temporal cleaning as a matrix: ``cleaned = M @ signals``.

    Parameters
    ----------
    n_frames : int
        Frames in the run (after dummies).
    t_r : float
        Repetition time (s).
    confounds : ndarray (n_frames, k), optional
    kept : ndarray of int, optional
        Frames kept after scrubbing (indices into ``0..n_frames-1``).
    detrend : bool
    high_pass_hz, low_pass_hz : float or None
        Butterworth band limits (None or 0: no filter on that side).

    Returns
    -------
    ndarray, shape (len(kept), n_frames)
        Column j is nilearn's ``signal.clean`` of a unit impulse at frame j.
    """
    from nilearn import signal

    high = high_pass_hz or None
    low = low_pass_hz or None
    if low is not None and low >= 0.5 / t_r:
        low = None  # at or above Nyquist a low-pass is a no-op (nilearn would warn and skip)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        return signal.clean(
            np.eye(n_frames),
            detrend=detrend,
            standardize=None,
            confounds=confounds,
            standardize_confounds=True,
            filter="butterworth" if (high or low) else False,
            high_pass=high,
            low_pass=low,
            t_r=t_r,
            sample_mask=kept,
        )


def cosine_band_regressors(n_frames, t_r, high_pass_hz=None, low_pass_hz=None):
    """Discrete cosine regressors outside a pass band, over ``n_frames`` frames.

    Basis ``k``: ``cos(pi * k * (2 n + 1) / (2 N))`` at ``k / (2 N t_r)`` Hz
    (SPM's and nilearn's cosine drift). Kept: ``1 <= k <= floor(2 N t_r
    high_pass_hz)`` (slow drifts, as nilearn's ``filter="cosine"``) and
    ``k > 2 N t_r low_pass_hz`` (above the band).

    Returns
    -------
    ndarray, shape (n_frames, n_regressors)
    """
    span = 2.0 * n_frames * t_r
    ks = []
    if high_pass_hz:
        ks += list(range(1, int(np.floor(span * high_pass_hz)) + 1))
    if low_pass_hz and low_pass_hz < 0.5 / t_r:
        ks += list(range(int(np.floor(span * low_pass_hz)) + 1, n_frames))
    frames = np.arange(n_frames)[:, None]
    return np.cos(np.pi * np.asarray(ks, dtype=float)[None, :] * (2 * frames + 1) / (2.0 * n_frames))


def regression_design(n_frames, t_r, confounds=None, detrend=True, high_pass_hz=None, low_pass_hz=None):
    """Design of the regression model: constant, trend, cosine band regressors, confounds.

    Parameters
    ----------
    n_frames : int
        Frames of the run after the dummies (the model's time runs 0..n_frames-1).
    t_r : float
    confounds : ndarray (n_frames, k), optional
    detrend : bool
        Add a linear trend in frame time (scrubbed frames keep their time).
    high_pass_hz, low_pass_hz : float or None

    Returns
    -------
    ndarray, shape (n_frames, p)
        Column 0 is the constant.
    """
    columns = [np.ones((n_frames, 1))]
    if detrend:
        columns.append(np.arange(n_frames, dtype=float)[:, None] / max(n_frames - 1, 1))
    columns.append(cosine_band_regressors(n_frames, t_r, high_pass_hz, low_pass_hz))
    if confounds is not None:
        columns.append(np.asarray(confounds, dtype=float))
    return np.hstack(columns)


def regression_operator(design, kept=None):
    """Residual-forming matrix of an OLS fit over the kept frames.

    Parameters
    ----------
    design : ndarray (n_frames, p)
    kept : ndarray of int, optional
        Frames that take part (default: all).

    Returns
    -------
    ndarray, shape (len(kept), n_frames)
        ``I - X (X'X)^+ X'`` on the kept frames; columns of scrubbed frames are 0.
    """
    n_frames = design.shape[0]
    kept = np.arange(n_frames) if kept is None else np.asarray(kept)
    x = design[kept]
    scale = np.sqrt((x**2).sum(axis=0))
    x = x[:, scale > 0] / scale[scale > 0]  # columns equilibrated; the projection does not change
    u, sing, _ = np.linalg.svd(x, full_matrices=False)
    u = u[:, sing > sing.max() * RANK_RTOL]
    operator = np.zeros((len(kept), n_frames))
    operator[:, kept] = np.eye(len(kept)) - u @ u.T
    return operator


def plan_cleaning(run, params):
    """Decide dummies, scrubbing and the cleaning operator of a run.

    Parameters
    ----------
    run : tmstarget.ingest.runs.Run
    params : tmstarget.protocol.CleanParams
        The protocol's ``[clean]`` section.

    Returns
    -------
    CleaningPlan
    """
    first = params.dummy_volumes
    n_frames = run.n_volumes - first
    if n_frames < params.min_volumes:
        raise InputError(
            f"only {n_frames} volumes after dropping {first} dummy volumes; at least "
            f"{params.min_volumes} are needed ([clean] min_volumes)",
            path=run.paths["source"],
        )
    design, names = nuisance_design(run, params)
    if run.confounds is not None and all(c in run.confounds.columns for c in ("trans_x", "rot_z")):
        fd = fd_power(motion_params(run.confounds, run.paths.get("confounds")))
    else:
        fd = np.zeros(run.n_volumes)
    keep = np.ones(n_frames, dtype=bool)
    if params.scrub:
        keep &= ~censored_frames(fd[first:], params.fd_threshold_mm, params.frames_before, params.frames_after)
    if run.confounds is not None and "missing_volume" in run.confounds.columns:
        # a volume the scanner never delivered (real-time gap) holds a placeholder: leave it out, keep its time
        keep &= run.confounds["missing_volume"].to_numpy()[first:] == 0
    kept_local = np.flatnonzero(keep)
    if len(kept_local) < params.min_volumes:
        raise InputError(
            f"only {len(kept_local)} usable volumes after scrubbing {n_frames - len(kept_local)} frames with "
            f"FD > {params.fd_threshold_mm} mm (and {params.frames_before} before / {params.frames_after} after "
            f"each); at least {params.min_volumes} are needed",
            path=run.paths["source"],
        )
    confounds = design[first:] if design is not None else None
    if params.filter == "cosine":
        model = regression_design(n_frames, run.t_r, confounds, params.detrend, params.high_pass_hz,
                                  params.low_pass_hz)
        if len(kept_local) <= np.linalg.matrix_rank(model[kept_local]):
            raise InputError(
                f"the regression model has {model.shape[1]} regressors but only {len(kept_local)} frames are kept: "
                "nothing is left to correlate (lower low_pass_hz's band regressors or scrub less)",
                path=run.paths["source"],
            )
        return CleaningPlan(first, kept_local + first, regression_operator(model, kept_local), fd, names, confounds)
    operator = cleaning_operator(
        n_frames,
        run.t_r,
        confounds=confounds,
        kept=kept_local if not keep.all() else None,
        detrend=params.detrend,
        high_pass_hz=params.high_pass_hz,
        low_pass_hz=params.low_pass_hz,
    )
    return CleaningPlan(first, kept_local + first, operator, fd, names, confounds)


def smoothing_sigmas(affine, fwhm_mm):
    """Gaussian sigma per voxel axis (in voxels) for an isotropic FWHM in mm."""
    voxel_mm = np.sqrt(np.sum(np.asarray(affine)[:3, :3] ** 2, axis=0))
    return fwhm_mm * FWHM_TO_SIGMA / voxel_mm


def smoothing_radius(affine, fwhm_mm, truncate=4.0):
    """Kernel half-width (voxels) per axis, as scipy's ``gaussian_filter1d`` uses it."""
    return [int(truncate * s + 0.5) for s in smoothing_sigmas(affine, fwhm_mm)]


def smooth_volumes(data, affine, fwhm_mm, spatial_axes=(0, 1, 2)):
    """Gaussian smoothing in place along the spatial axes (same kernel as nilearn).

    Parameters
    ----------
    data : ndarray, float
        Array holding volumes; ``spatial_axes`` name its i, j, k axes.
    affine : array (4, 4)
        Voxel-to-world affine (only voxel sizes are used).
    fwhm_mm : float
        Full width at half maximum (mm); 0 disables smoothing.
    """
    if not fwhm_mm:
        return data
    for axis, sigma in zip(spatial_axes, smoothing_sigmas(affine, fwhm_mm)):
        if sigma > 0:
            gaussian_filter1d(data, sigma, axis=axis, output=data)
    return data
