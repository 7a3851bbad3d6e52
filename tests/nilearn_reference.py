"""Plain implementations of tmstarget's maps and pickers, written from their definitions.

Nothing here imports tmstarget: these are the references the engine must
equal (``tests/test_plan.py``, ``tests/test_references.py``,
``tests/test_streaming.py``, ``tests/test_rois_targets.py``) and the baseline
of ``bench/``.  Every rule is written from the published definition
(``../shared/science.md``) and the protocol files, not from the engine's code:

* FD_Power (Power 2012) and Friston-24 (Friston 1996; lags after the dummy
  volumes, first lag row zero, as DPABI) from the fMRIPrep confounds columns;
* cleaning by nilearn (``image.smooth_img`` / ``masking.apply_mask`` /
  ``signal.clean``, or its maskers ``NiftiMasker`` / ``NiftiSpheresMasker``),
  or, for the regression model, one ``numpy.linalg.lstsq`` fit of a design
  built here (constant, trend, discrete cosines, confounds, task regressors);
* grey matter = nilearn's MNI152 GM probability > 0.2 (README "ROIs");
* brain states: a frame acquired at ``t = frame * TR`` belongs to a block
  ``[onset, onset + duration)`` when ``onset + delay + transition <= t <
  onset + duration + delay`` (README "connectivity": blocks shifted by the
  haemodynamic delay, their first seconds left out);
* scrubbing: frames with FD_Power above the threshold and, for the protocols that ask for it, the
  ``before`` frames before and ``after`` frames after each of them (Power 2012; Chen 2020: 1 and 2);
* the search region loses every voxel whose centre lies within one smoothing FWHM of a seed voxel's
  centre (README "ROIs": seed voxels and one FWHM around them);
* Fisher z = atanh of the Pearson r with the seed;
* the cluster picker (science.md §4, README "targets"): see
  :func:`cluster_pick`.
"""

import functools
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from nibabel.affines import apply_affine
from nilearn import datasets, image, masking, signal
from nilearn.glm.first_level import compute_regressor
from scipy import ndimage

CORE_NODES = [(-46, -68, 36), (-22, 26, 47), (-9, -54, 30), (-9, 51, 5), (57, -7, -20),
              (47, -57, 32), (25, 32, 38), (9, -54, 30), (9, 51, 5)]
DMPFC_CENTRES = [(-7, 45, 40), (7, 49, 37)]
DLPFC_CENTRES = [(-41, 16, 54), (-37, 26, 49), (-44, 40, 29), (-36, 39, 43)]
SGACC = (6, 16, -10)
MOTION_COLUMNS = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]

# The shipped protocols' parameters as the README and protocols/*.toml state them (defaults filled in).
# The tests check the plan recorded exactly these (provenance), so a changed default is seen as such.
CLEAN_DEFAULTS = {"dummy_volumes": 5, "motion": "friston24", "wm_csf": True, "global_signal": False,
                  "detrend": True, "high_pass_hz": 0.01, "low_pass_hz": 0.1, "scrub": True,
                  "fd_threshold_mm": 0.5, "smoothing_fwhm_mm": 6.0}
HRF_DELAY_S = 4.0
TRANSITION_S = 4.0


# ----------------------------------------------------------------------------- grids and masks

def world_grid(img):
    ijk = np.indices(img.shape[:3]).reshape(3, -1).T
    return apply_affine(img.affine, ijk).reshape(img.shape[:3] + (3,))


def balls(shape, affine, centres, radius):
    """Voxels of a grid whose centre (mm, through the affine) lies within ``radius`` of any centre."""
    ijk = np.indices(tuple(shape[:3])).reshape(3, -1).T
    xyz = apply_affine(np.asarray(affine, float), ijk).reshape(tuple(shape[:3]) + (3,))
    out = np.zeros(tuple(shape[:3]), dtype=bool)
    for c in centres:
        out |= np.linalg.norm(xyz - np.array(c, float), axis=-1) <= radius + 1e-9
    return out


def spheres(img, centres, radius):
    return balls(img.shape, img.affine, centres, radius)


@functools.lru_cache(maxsize=4)
def _gm_on_grid(shape, affine_bytes, threshold):
    affine = np.frombuffer(affine_bytes).reshape(4, 4)
    gm = datasets.load_mni152_gm_template(resolution=1)
    prob = image.resample_img(gm, target_affine=affine, target_shape=shape, interpolation="linear",
                              force_resample=True, copy_header=True).get_fdata()
    # the template stores probabilities in steps of 1/255 and nilearn resamples in float32: a voxel at
    # 51/255 = 0.2 reads 0.2000000030 in float64, and is not above 0.2
    return prob > threshold + 1e-6


def grey_matter(img, threshold=0.2):
    """nilearn's MNI152 GM probability (1 mm), resampled linearly to the image's grid, strictly > threshold."""
    ref = image.index_img(img, 0) if len(img.shape) == 4 else img
    affine = np.ascontiguousarray(ref.affine, dtype=float)
    return _gm_on_grid(tuple(int(s) for s in ref.shape[:3]), affine.tobytes(), threshold).copy()


# ----------------------------------------------------------------------------- confounds

def read_confounds(confounds_path):
    return pd.read_csv(confounds_path, sep="\t", na_values="n/a")


def fd_power(conf):
    """FD_Power (Power 2012): |d trans| summed + 50 mm x |d rot| summed; 0 for the first volume."""
    motion = conf[MOTION_COLUMNS].to_numpy(dtype=float)
    step = np.abs(np.diff(motion, axis=0))
    return np.r_[0.0, step[:, :3].sum(1) + 50.0 * step[:, 3:].sum(1)]


def friston24(motion):
    """[R_t, R_{t-1}, R_t^2, R_{t-1}^2]; the lag of the first row is a zero row."""
    lag = np.vstack([np.zeros((1, motion.shape[1])), motion[:-1]])
    return np.hstack([motion, lag, motion**2, lag**2])


def nuisance(conf, dummies, global_signal=False):
    """Friston-24 (lags after the dummies), mean WM and CSF (and the global signal), frames after the dummies."""
    motion = conf[MOTION_COLUMNS].to_numpy(dtype=float)[dummies:]
    columns = ["white_matter", "csf"] + (["global_signal"] if global_signal else [])
    return np.hstack([friston24(motion), conf[columns].to_numpy(dtype=float)[dummies:]])


def kept_frames(conf, dummies=5, fd_max=0.5, before=0, after=0):
    """Frames (file numbering) left after the dummies and FD_Power scrubbing.

    A frame is dropped when its FD, or the FD of any of the ``after`` frames before it or of the ``before``
    frames after it, exceeds ``fd_max`` (frames after the dummies only)."""
    high = fd_power(conf)[dummies:] > fd_max
    n = len(high)
    kept = [t for t in range(n) if not any(high[u] for u in range(max(t - after, 0), min(t + before, n - 1) + 1))]
    return np.array(kept, dtype=int) + dummies


def near_seed(region, seed, affine, margin_mm):
    """Region voxels whose centre lies within ``margin_mm`` of the centre of any seed voxel (brute force)."""
    region_mm = apply_affine(np.asarray(affine, float), np.argwhere(region))
    seed_mm = apply_affine(np.asarray(affine, float), np.argwhere(seed))
    out = np.zeros(region.shape, dtype=bool)
    for ijk, point in zip(np.argwhere(region), region_mm):
        if np.min(np.linalg.norm(seed_mm - point, axis=1)) <= margin_mm + 1e-9:
            out[tuple(ijk)] = True
    return out


def task_design(events, n_volumes, t_r):
    """One SPM-HRF-convolved block regressor per trial type (nilearn), sampled at each volume's start."""
    columns = []
    for name in sorted(events["trial_type"].unique()):
        rows = events[events["trial_type"] == name]
        reg, _ = compute_regressor(np.vstack([rows["onset"], rows["duration"], np.ones(len(rows))]), "spm",
                                   np.arange(n_volumes) * t_r, oversampling=16)
        columns.append(reg[:, 0])
    return np.column_stack(columns)


def read_events(events):
    return events if isinstance(events, pd.DataFrame) else pd.read_csv(events, sep="\t")


def repetition_time(bold_path):
    """TR (s) from the BIDS sidecar beside the BOLD file."""
    return float(json.loads(Path(str(bold_path).replace(".nii.gz", ".json")).read_text())["RepetitionTime"])


# ----------------------------------------------------------------------------- cleaning (nilearn)

def clean_run(bold_path, confounds_path, mask_img, events_path=None, dummies=5, fwhm=6.0, fd_max=0.5, t_r=2.0,
              before=0, after=0):
    """Cleaned (kept frames x mask voxels) data and the kept frame numbers (file numbering)."""
    bold = image.load_img(bold_path)
    n = bold.shape[3]
    conf = read_confounds(confounds_path)
    design = [nuisance(conf, dummies)]
    if events_path is not None:
        design.append(task_design(read_events(events_path), n, t_r)[dummies:])
    confounds = np.hstack(design)
    kept = kept_frames(conf, dummies, fd_max, before, after) - dummies
    data = masking.apply_mask(image.smooth_img(bold, fwhm), mask_img)[dummies:]
    cleaned = signal.clean(data, detrend=True, standardize=None, confounds=confounds, filter="butterworth",
                           high_pass=0.01, low_pass=0.1, t_r=t_r, sample_mask=kept if len(kept) < n - dummies else None)
    return cleaned, kept + dummies


def clean_rest_with_maskers(bold_path, confounds_path, mask_img, seed_mask_img, centre, radius, dummies=5, fwhm=6.0,
                            fd_max=0.5, t_r=2.0, high_pass=0.01, low_pass=0.1, global_signal=False):
    """A resting run cleaned by nilearn's maskers: voxel data (``NiftiMasker``) and the sphere seed
    (``NiftiSpheresMasker`` restricted to ``seed_mask_img``), same smoothing, detrend, Butterworth band,
    confounds and censoring.

    Returns
    -------
    voxels : ndarray (kept frames, mask voxels), columns in ``mask_img``'s C order
    seed : ndarray (kept frames,)
    kept : ndarray of int (file numbering)
    """
    from nilearn.maskers import NiftiMasker, NiftiSpheresMasker

    conf = read_confounds(confounds_path)
    kept = kept_frames(conf, dummies, fd_max)
    img = image.index_img(image.load_img(bold_path), slice(dummies, None))
    params = {"smoothing_fwhm": fwhm, "detrend": True, "standardize": False, "high_pass": high_pass,
              "low_pass": low_pass, "t_r": t_r}
    fit = {"confounds": nuisance(conf, dummies, global_signal), "sample_mask": kept - dummies}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seed = NiftiSpheresMasker([centre], radius=radius, mask_img=seed_mask_img, **params).fit_transform(img, **fit)
        voxels = NiftiMasker(mask_img=mask_img, **params).fit_transform(img, **fit)
    return voxels, seed[:, 0], kept


# ----------------------------------------------------------------------------- regression model (numpy)

def dct_regressors(n_frames, t_r, high_pass_hz, low_pass_hz):
    """DCT-II cosines cos(pi k (2n+1) / 2N) (frequency k / (2 N TR)) outside the band: the slow drifts
    1 <= k <= floor(2 N TR f_high-pass), and every k above 2 N TR f_low-pass (k < N)."""
    span = 2.0 * n_frames * t_r
    ks = list(range(1, int(np.floor(span * high_pass_hz)) + 1))
    ks += [k for k in range(1, n_frames) if k > span * low_pass_hz]
    n = np.arange(n_frames)
    return np.column_stack([np.cos(np.pi * k * (2 * n + 1) / (2.0 * n_frames)) for k in ks])


def regression_model_design(conf, n_volumes, t_r, events=None, dummies=5, high_pass_hz=0.01, low_pass_hz=0.1,
                            global_signal=False):
    """Design over the frames after the dummies: constant, linear trend in frame time, cosine band
    regressors, Friston-24, WM, CSF (global signal) and (task runs) the HRF-convolved block regressors."""
    n_frames = n_volumes - dummies
    parts = [np.ones((n_frames, 1)), np.arange(n_frames, dtype=float)[:, None],
             dct_regressors(n_frames, t_r, high_pass_hz, low_pass_hz), nuisance(conf, dummies, global_signal)]
    if events is not None:
        parts.append(task_design(read_events(events), n_volumes, t_r)[dummies:])
    return np.hstack(parts)


def regression_residuals(design, data):
    """Residuals of an OLS fit (``numpy.linalg.lstsq``) of every column of ``data`` on ``design``."""
    beta, *_ = np.linalg.lstsq(design, data, rcond=None)
    return data - design @ beta


def smoothed_masked(bold_path, mask, fwhm=6.0):
    """nilearn ``smooth_img`` of the whole 4-D run, then the mask's voxels: (volumes, voxels), C order."""
    return image.smooth_img(image.load_img(bold_path), fwhm).get_fdata()[mask].T


# ----------------------------------------------------------------------------- seeds, maps, states

def core_seed(cleaned, img, mask, gm, radius=6.0):
    brain = mask & gm
    flat = mask[mask]  # columns of apply_mask are the mask's voxels in C order
    index = np.full(mask.shape, -1)
    index[mask] = np.arange(flat.size)
    means = []
    for node in CORE_NODES:
        cols = index[spheres(img, [node], radius) & brain]
        if cols.size:
            means.append(cleaned[:, cols].mean(axis=1))
    return np.mean(means, axis=0)


def sphere_seed(cleaned, img, mask, gm, centre, radius):
    index = np.full(mask.shape, -1)
    index[mask] = np.arange(mask.sum())
    return cleaned[:, index[spheres(img, [centre], radius) & mask & gm]].mean(axis=1)


def zmap(cleaned, seed):
    x = cleaned - cleaned.mean(0)
    s = seed - seed.mean()
    r = (s @ x) / np.sqrt((x**2).sum(0) * (s @ s))
    return np.arctanh(r)


def block_frames(events_path, frames, t_r, state, delay=HRF_DELAY_S, transition=TRANSITION_S):
    """Which of ``frames`` (file numbering) belong to ``state``: blocks shifted by ``delay``, their first
    ``transition`` seconds left out."""
    events = read_events(events_path)
    times = np.asarray(frames) * t_r
    sel = np.zeros(len(times), dtype=bool)
    for _, row in events[events["trial_type"] == state].iterrows():
        sel |= (times >= row.onset + delay + transition) & (times < row.onset + row.duration + delay)
    return sel


# ----------------------------------------------------------------------------- cluster picker

def cluster_pick(values, region, affine, fraction=0.10, direction="negative", n_candidates=5):
    """The cluster picker from its definition (science.md §4; README "targets").

    1. orient: the wanted extreme is the most negative (``direction="negative"``) or the most positive
       value (then work on ``-values``);
    2. of the region's values of the wanted sign (oriented < 0), keep those below their ``fraction``
       quantile ("the 10th percentile of the negative values", ConTarg): with those n oriented values
       sorted ascending, the threshold is their ``fraction`` quantile by linear interpolation between
       order statistics (Hyndman-Fan 7, numpy's and ConTarg's ``percentile``); this keeps the
       ``floor(fraction * (n - 1)) + 1`` smallest values and everything tied with the last of them;
    3. clusters: 26-connected components (voxels sharing a face, an edge or a corner);
    4. ranked by size, larger first; equal sizes by mean oriented value, more extreme first;
    5. each cluster's unweighted centroid of voxel centres (mm, through the affine) is snapped to the
       search-region voxel whose centre is nearest in mm.

    Parameters
    ----------
    values : ndarray (I, J, K)
    region : ndarray of bool (I, J, K)
    affine : array (4, 4)

    Returns
    -------
    list of dict, best first
        ``ijk`` (the snapped voxel; ``ties`` lists every region voxel at the same smallest distance),
        ``size``, ``mean`` and ``peak`` (most extreme) of the original values, ``centroid_mm``.
    """
    affine = np.asarray(affine, float)
    oriented = np.asarray(values, float) if direction == "negative" else -np.asarray(values, float)
    region_ijk = np.argwhere(region)
    ordered = np.sort(oriented[region & (oriented < 0)])
    if ordered.size == 0:
        return []
    last = int(np.floor(fraction * (len(ordered) - 1)))
    keep = region & (oriented <= ordered[last]) & (oriented < 0)
    labels, n_labels = ndimage.label(keep, structure=np.ones((3, 3, 3), dtype=bool))
    clusters = []
    for label in range(1, n_labels + 1):
        members = labels == label
        clusters.append((int(members.sum()), float(oriented[members].mean()), members))
    clusters.sort(key=lambda c: (-c[0], c[1]))
    region_mm = apply_affine(affine, region_ijk)
    out = []
    for size, _, members in clusters[:n_candidates]:
        centroid = apply_affine(affine, np.argwhere(members)).mean(axis=0)
        dist = np.linalg.norm(region_mm - centroid, axis=1)
        ties = [tuple(int(v) for v in region_ijk[i]) for i in np.flatnonzero(dist <= dist.min() + 1e-9)]
        member_values = np.asarray(values, float)[members]
        peak = member_values.min() if direction == "negative" else member_values.max()
        out.append({"ijk": ties[0], "ties": ties, "size": size, "mean": float(member_values.mean()),
                    "peak": float(peak), "centroid_mm": centroid})
    return out
