"""A plain nilearn implementation of the rumination/rest seed-connectivity maps.

Written independently of tmstarget's engine (smooth_img -> apply_mask ->
signal.clean -> seed mean -> correlation), used as the reference the engine
must equal, and by ``bench/``.
"""

import numpy as np
import pandas as pd
from nibabel.affines import apply_affine
from nilearn import datasets, image, masking, signal
from nilearn.glm.first_level import compute_regressor

CORE_NODES = [(-46, -68, 36), (-22, 26, 47), (-9, -54, 30), (-9, 51, 5), (57, -7, -20),
              (47, -57, 32), (25, 32, 38), (9, -54, 30), (9, 51, 5)]
DMPFC_CENTRES = [(-7, 45, 40), (7, 49, 37)]
DLPFC_CENTRES = [(-41, 16, 54), (-37, 26, 49), (-44, 40, 29), (-36, 39, 43)]
SGACC = (6, 16, -10)


def world_grid(img):
    ijk = np.indices(img.shape[:3]).reshape(3, -1).T
    return apply_affine(img.affine, ijk).reshape(img.shape[:3] + (3,))


def spheres(img, centres, radius):
    xyz = world_grid(img)
    out = np.zeros(img.shape[:3], dtype=bool)
    for c in centres:
        out |= np.linalg.norm(xyz - np.array(c, float), axis=-1) <= radius + 1e-9
    return out


def grey_matter(img, threshold=0.2):
    gm = datasets.load_mni152_gm_template(resolution=1)
    ref = image.index_img(img, 0)
    return image.resample_to_img(gm, ref, interpolation="linear", force_resample=True,
                                 copy_header=True).get_fdata() > threshold


def clean_run(bold_path, confounds_path, mask_img, events_path=None, dummies=5, fwhm=6.0, fd_max=0.5, t_r=2.0):
    """Cleaned (kept frames x mask voxels) data and the kept frame numbers (file numbering)."""
    bold = image.load_img(bold_path)
    n = bold.shape[3]
    conf = pd.read_csv(confounds_path, sep="\t", na_values="n/a")
    motion = conf[["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]].to_numpy()
    fd = np.r_[0, np.abs(np.diff(motion[:, :3], axis=0)).sum(1) + 50 * np.abs(np.diff(motion[:, 3:], axis=0)).sum(1)]
    m = motion[dummies:]
    lag = np.vstack([np.zeros((1, 6)), m[:-1]])
    design = [m, lag, m**2, lag**2, conf[["white_matter", "csf"]].to_numpy()[dummies:]]
    if events_path is not None:
        events = pd.read_csv(events_path, sep="\t")
        for name in sorted(events["trial_type"].unique()):
            rows = events[events["trial_type"] == name]
            reg, _ = compute_regressor(np.vstack([rows["onset"], rows["duration"], np.ones(len(rows))]), "spm",
                                       np.arange(n) * t_r, oversampling=16)
            design.append(reg[dummies:])
    confounds = np.hstack(design)
    kept = np.flatnonzero(fd[dummies:] <= fd_max)
    data = masking.apply_mask(image.smooth_img(bold, fwhm), mask_img)[dummies:]
    cleaned = signal.clean(data, detrend=True, standardize=None, confounds=confounds, filter="butterworth",
                           high_pass=0.01, low_pass=0.1, t_r=t_r, sample_mask=kept if len(kept) < len(fd) - dummies else None)
    return cleaned, kept + dummies


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


def block_frames(events_path, frames, t_r, state, delay=4.0, transition=4.0):
    events = pd.read_csv(events_path, sep="\t")
    times = frames * t_r
    sel = np.zeros(len(frames), dtype=bool)
    for _, row in events[events["trial_type"] == state].iterrows():
        sel |= (times >= row.onset + delay + transition) & (times < row.onset + row.duration + delay)
    return sel
