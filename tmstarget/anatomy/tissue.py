"""Tissue classes of a T1 at its own resolution: grey matter, white matter, CSF, and the cortical surface.

Why: the scalp-to-cortex depth drives the dose (about 3 % of stimulator output
per mm, Stokes 2005/2007) and must be measured on this T1, to the outer
grey-matter boundary, not to a template brain mask warped onto the 3-mm EPI
grid (which reaches into the skull: issue 14 item 1).

Order of operations (:func:`segment_t1`), all in the **world RAS mm of the T1
file**, on a crop of the T1's own voxel grid around the brain:

1. Priors (:func:`template_priors`): nilearn's ICBM152 2009 grey- and
   white-matter probability maps and brain mask (1 mm, block-averaged to
   ``prior_voxel_mm`` = 2 mm) brought onto every other T1 voxel of a crop
   around the brain through the T1 -> MNI registration (linear), then
   trilinearly up-sampled to the T1 voxels (the priors are smooth: this keeps
   the stage to seconds). CSF prior = brain - GM - WM, clipped to [0, 1].
2. Intensity model: a three-class Gaussian mixture (CSF, GM, WM) fitted by EM
   on the voxels whose brain prior is at least 0.5, the warped priors as the
   mixing weights of each voxel (the model of FSL FAST / ANTs Atropos with
   atlas priors, without their Markov field; weights tempered half-way to
   uniform, since the warped priors can be several mm off), with two rounds
   of a smooth multiplicative bias-field correction (normalized Gaussian
   convolution of voxel / class mean over WM and GM, FWHM 30 mm) and a refit.
   It is deterministic: no random start, a fixed voxel subsample, a fixed
   number of iterations.
3. Decision thresholds from the fitted classes: ``pial`` where the CSF and GM
   Gaussians cross (equal weights), ``white`` where GM and WM cross.
4. Parenchyma (GM ∪ WM; its outer boundary is the cortical, pial surface):
   voxels between ``pial`` and an upper bound (WM mean + 4 SD: scalp fat and
   marrow are brighter), inside the generous template region (brain prior
   >= 0.02), *opened* by ``opening_mm``: eroded, kept where connected to the
   sure brain core (brain prior >= 0.5, at least ``core_depth_mm`` inside),
   dilated back inside the thresholded voxels, largest component. The
   opening cuts the diploë (skull marrow, as bright as grey matter on T1)
   from the cortex where they touch through a thin inner table; the warped
   template alone reaches several mm into the skull (measured on the shared
   real T1: its brain mask at 0.5 ends 6-7 mm under the scalp where the brain
   starts at about 14 mm).
5. Labels: parenchyma voxels at or above ``white`` are WM, the others GM;
   voxels of the template brain (prior >= 0.5) outside the parenchyma are CSF
   (this includes what the template wrongly puts inside the skull).

The depth itself (:func:`tmstarget.coil.placement.scalp_to_cortex_mm`) is
measured on :meth:`TissueMaps.parenchyma_img`.  Not done: no partial-volume
classes, no Markov field (Atropos with MRF took 194 s on the shared T1 at 1 mm,
and with the misregistered priors it labelled the marrow grey matter too).
"""

import logging
import time
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from nibabel.affines import apply_affine, voxel_sizes
from scipy import ndimage

from tmstarget.anatomy.scalp import as_point, ball_structure, block_average, load_3d
from tmstarget.errors import InputError

logger = logging.getLogger(__name__)

#: Label values of :attr:`TissueMaps.labels`.
LABELS = {0: "outside brain", 1: "csf", 2: "grey matter", 3: "white matter"}
OUTSIDE, CSF, GM, WM = 0, 1, 2, 3


@dataclass(frozen=True)
class TissueMaps:
    """Tissue labels of a T1 on a crop of its own voxel grid (world RAS mm of the T1).

    Attributes
    ----------
    labels : ndarray of uint8, shape (I, J, K)
        0 outside the brain, 1 CSF, 2 grey matter, 3 white matter (:data:`LABELS`).
    affine : ndarray, shape (4, 4)
        Voxel -> world RAS mm of the crop (same world as the T1 file).
    qc : dict
        Class means and SDs, thresholds, voxel counts, seconds.
    """

    labels: np.ndarray
    affine: np.ndarray
    qc: dict

    @property
    def parenchyma(self):
        """Grey or white matter (bool); its outer boundary is the cortical (pial) surface."""
        return self.labels >= GM

    def parenchyma_img(self):
        """:attr:`parenchyma` as a uint8 nibabel image (for :func:`tmstarget.coil.placement.scalp_to_cortex_mm`)."""
        return nib.Nifti1Image(self.parenchyma.astype(np.uint8), self.affine)

    def label_at(self, point_ras_mm):
        """Tissue label (int, :data:`LABELS`) of the voxel holding a world point; 0 outside the crop."""
        ijk = np.round(apply_affine(np.linalg.inv(self.affine), as_point(point_ras_mm, "point_ras_mm"))).astype(int)
        if np.any(ijk < 0) or np.any(ijk >= self.labels.shape):
            return OUTSIDE
        return int(self.labels[tuple(ijk)])

    def labels_along(self, start_ras_mm, direction_ras, distances_mm):
        """Labels (nearest voxel) at ``start + d * direction`` for each distance ``d``."""
        points = as_point(start_ras_mm, "start_ras_mm") + np.outer(distances_mm, direction_ras)
        ijk = apply_affine(np.linalg.inv(self.affine), points)
        return ndimage.map_coordinates(self.labels, ijk.T, order=0, mode="constant", cval=OUTSIDE).astype(int)


def _template_images():
    """nilearn ICBM152 2009 GM, WM probability and brain mask at 1 mm (their own grid)."""
    from nilearn import datasets

    return {"gm": datasets.load_mni152_gm_template(resolution=1),
            "wm": datasets.load_mni152_wm_template(resolution=1),
            "brain": datasets.load_mni152_brain_mask(resolution=1)}


def _brain_box(shape, affine, t1_to_mni, brain_img, margin_mm):
    """Voxel slices of the T1 grid holding the template brain (its bounding box mapped in) plus a margin."""
    from tmstarget.anatomy.registration import map_points

    data, template_affine = load_3d(brain_img, "template brain mask")
    inside = data > 0
    # first and last index holding the mask along each axis (what np.argwhere(inside).min/max give, without the list)
    spans = [np.flatnonzero(inside.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    lo, hi = np.array([s[0] for s in spans]), np.array([s[-1] for s in spans])
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])], float)
    corners_mni = apply_affine(template_affine, corners)
    corners_t1 = corners_mni if t1_to_mni is None else map_points(corners_mni, t1_to_mni, "inverse")
    ijk = apply_affine(np.linalg.inv(affine), corners_t1)
    margin = margin_mm / voxel_sizes(affine)
    lo = np.clip(np.floor(ijk.min(axis=0) - margin), 0, shape).astype(int)
    hi = np.clip(np.ceil(ijk.max(axis=0) + margin) + 1, 0, shape).astype(int)
    if np.any(hi - lo < 2):
        raise InputError("the template brain does not overlap the T1 after registration: check the T1 -> MNI "
                         "registration (or that the T1 is in the stated space)")
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def _upsample(coarse, factors, shape):
    """Trilinear values at fine voxel p = coarse voxel p / f (separable, one axis at a time)."""
    out = coarse
    for axis, (f, n) in enumerate(zip(factors, shape)):
        position = np.arange(n, dtype=np.float32) / f
        low = np.minimum(np.floor(position).astype(int), out.shape[axis] - 1)
        high = np.minimum(low + 1, out.shape[axis] - 1)
        weight = (position - low).reshape([-1 if a == axis else 1 for a in range(3)])
        out = np.take(out, low, axis=axis) * (1 - weight) + np.take(out, high, axis=axis) * weight
    return out.astype(np.float32)


def template_priors(t1_img, t1_to_mni=None, *, prior_voxel_mm=2.0, margin_mm=15.0):
    """Template GM, WM, CSF and brain probabilities on a crop of the T1's own voxel grid.

    Parameters
    ----------
    t1_img : nibabel image, 3-D
        The T1 (its grid and world are the output's).
    t1_to_mni : Transform, optional
        ``T1w -> MNI152NLin2009cAsym`` (:func:`tmstarget.anatomy.registration.register_t1_to_mni`
        or fMRIPrep's files); MNI images reach the T1 with its ``"inverse"``
        image direction. None: the T1 is already in MNI space (world = MNI mm).
    prior_voxel_mm : float
        The warp is evaluated on every ``round(prior_voxel_mm / voxel)``-th T1
        voxel and up-sampled (trilinear); the priors are smooth.
    margin_mm : float
        Margin around the template brain's bounding box mapped into the T1.

    Returns
    -------
    (dict of ndarray, tuple of slice)
        ``"gm"``, ``"wm"``, ``"csf"``, ``"brain"`` (float32) on the crop, and
        the crop of the T1 grid (voxel slices).
    """
    from tmstarget.anatomy.registration import warp_image

    _, affine = load_3d(t1_img, "T1 image")
    templates = _template_images()
    box = _brain_box(t1_img.shape[:3], affine, t1_to_mni, templates["brain"], margin_mm)
    shape = tuple(s.stop - s.start for s in box)
    crop_affine = affine.copy()
    crop_affine[:3, 3] = apply_affine(affine, [s.start for s in box])
    factors = np.maximum(1, np.round(float(prior_voxel_mm) / voxel_sizes(affine))).astype(int)
    coarse_shape = tuple(int(-(-n // f)) for n, f in zip(shape, factors))
    coarse_affine = crop_affine @ np.diag([*factors.astype(float), 1.0])
    reference = nib.Nifti1Image(np.zeros(coarse_shape, dtype=np.float32), coarse_affine)
    priors = {}
    sampled = {}  # template voxel coordinates of the coarse grid, per template affine (the three share one)
    for name, img in templates.items():
        data, template_affine = block_average(*load_3d(img, f"template {name}"), prior_voxel_mm)
        if t1_to_mni is None:
            key = template_affine.tobytes()
            if key not in sampled:
                sampled[key] = apply_affine(np.linalg.inv(template_affine) @ coarse_affine,
                                            np.indices(coarse_shape).reshape(3, -1).T)
            ijk = sampled[key]
            coarse = ndimage.map_coordinates(data, ijk.T, order=1, mode="constant").reshape(coarse_shape)
        else:
            coarse = np.asarray(warp_image(nib.Nifti1Image(data, template_affine), t1_to_mni, reference, "inverse",
                                           "linear").dataobj)
        priors[name] = _upsample(np.clip(coarse, 0, 1).astype(np.float32), factors, shape)
    priors["csf"] = np.clip(priors["brain"] - priors["gm"] - priors["wm"], 0.0, 1.0)
    return priors, box


def _fit_mixture(values, priors, iterations):
    """EM of a Gaussian mixture whose per-voxel mixing weights are ``priors`` (n, k); returns means, SDs.

    The weights are tempered (half prior, half uniform): a prior misplaced by
    the registration steers the start, not the class intensities.
    """
    weights = priors / np.maximum(priors.sum(axis=1, keepdims=True), 1e-6)
    weights = 0.5 * weights + 0.5 / weights.shape[1]
    means = (weights * values[:, None]).sum(axis=0) / weights.sum(axis=0)
    sds = np.sqrt((weights * (values[:, None] - means) ** 2).sum(axis=0) / weights.sum(axis=0))
    for _ in range(iterations):
        like = np.exp(-0.5 * ((values[:, None] - means) / sds) ** 2) / sds
        resp = weights * like
        resp /= np.maximum(resp.sum(axis=1, keepdims=True), 1e-30)
        total = resp.sum(axis=0)
        means = (resp * values[:, None]).sum(axis=0) / total
        sds = np.maximum(np.sqrt((resp * (values[:, None] - means) ** 2).sum(axis=0) / total), 1e-3 * values.std())
    return means, sds


def _crossing(mean_low, sd_low, mean_high, sd_high):
    """Intensity between two class means where their Gaussian densities are equal."""
    grid = np.linspace(mean_low, mean_high, 2001)
    low = np.exp(-0.5 * ((grid - mean_low) / sd_low) ** 2) / sd_low
    high = np.exp(-0.5 * ((grid - mean_high) / sd_high) ** 2) / sd_high
    return float(grid[np.argmax(high >= low)])


def _bias_field(data, inside, classes, class_means, affine, fwhm_mm, voxel_mm=4.0):
    """Smooth multiplicative intensity field: voxel / class mean over WM and GM voxels, normalized convolution.

    Computed on blocks of about ``voxel_mm`` (Gaussian of ``fwhm_mm``), up-sampled trilinearly.
    """
    ratio = np.zeros(data.shape, dtype=np.float32)
    weight = np.zeros(data.shape, dtype=np.float32)
    for mask, mean in zip(classes, class_means):
        mask = mask & inside
        ratio[mask] = data[mask] / mean
        weight[mask] = 1.0
    num, coarse_affine = block_average(ratio * weight, affine, voxel_mm)
    den, _ = block_average(weight, affine, voxel_mm)
    sigma = fwhm_mm / 2.3548 / voxel_sizes(coarse_affine)
    num, den = ndimage.gaussian_filter(num, sigma), ndimage.gaussian_filter(den, sigma)
    field = np.where(den > 1e-3, num / np.maximum(den, 1e-3), 1.0)
    field = field / np.median(field[den > 0.05]) if np.any(den > 0.05) else field
    factors = np.round(voxel_sizes(coarse_affine) / voxel_sizes(affine)).astype(int)
    return np.clip(_upsample(field.astype(np.float32), factors, data.shape), 0.25, 4.0)


def _depth_inside(mask, sizes, step=2):
    """Approximate depth (mm) of each voxel inside ``mask``: the distance map of every ``step``-th voxel, repeated."""
    coarse = mask[::step, ::step, ::step]
    depth = ndimage.distance_transform_edt(coarse, sampling=sizes * step)
    for axis in range(3):
        depth = np.repeat(depth, step, axis=axis)
    return depth[: mask.shape[0], : mask.shape[1], : mask.shape[2]] * mask


def segment_tissues(t1_img, priors, box=None, *, opening_mm=2.5, core_depth_mm=8.0, fit_depth_mm=5.0,
                    iterations=10, fit_stride=4, bias_iterations=2, bias_fwhm_mm=30.0):
    """GM, WM and CSF of a T1 from its intensities and template priors on its grid.

    Parameters
    ----------
    t1_img : nibabel image, 3-D
    priors : dict of ndarray
        ``"gm"``, ``"wm"``, ``"csf"``, ``"brain"`` probabilities on the T1's
        grid, or on the crop ``box`` of it (:func:`template_priors`, or any
        source: a synthetic head's).
    box : tuple of slice, optional
        The crop of the T1 grid the priors cover (default: the whole grid).
    opening_mm : float
        Radius of the opening that separates the cortex from skull marrow
        touching it through a thin inner table (module docstring, step 4).
    core_depth_mm : float
        Depth inside the template brain (prior >= 0.5) counted as sure brain.
    fit_depth_mm : float
        The mixture is fitted on voxels at least this deep inside the template
        brain (its edge may lie in the skull after registration).
    iterations, fit_stride : int
        EM iterations, on every ``fit_stride``-th voxel of the fit region
        (fixed: the result is deterministic).
    bias_iterations, bias_fwhm_mm :
        Rounds of intensity-inhomogeneity correction (a smooth multiplicative
        field of FWHM ``bias_fwhm_mm`` from WM and GM voxels over their class
        means, the mixture refitted after each round); 0 turns it off.

    Returns
    -------
    TissueMaps
        On the crop of the T1 grid around the template brain.

    Raises
    ------
    InputError
        The template brain misses the T1, or no parenchyma is found.
    """
    start = time.perf_counter()
    data, affine = load_3d(t1_img, "T1 image")
    missing = [k for k in ("gm", "wm", "csf", "brain") if k not in priors]
    if missing:
        raise InputError(f"tissue priors lack {', '.join(missing)}")
    box = tuple(slice(0, n) for n in data.shape) if box is None else box
    data = data[box]
    crop_affine = affine.copy()
    crop_affine[:3, 3] = apply_affine(affine, [s.start for s in box])
    brain, gm_p, wm_p, csf_p = (np.asarray(priors[k], dtype=np.float32) for k in ("brain", "gm", "wm", "csf"))
    if brain.shape != data.shape:
        raise InputError(f"tissue priors have shape {brain.shape}; the T1 (crop) has {data.shape}")
    sizes = voxel_sizes(affine)

    template = brain >= 0.5
    inner_mm = _depth_inside(template, sizes)
    fit = inner_mm >= fit_depth_mm
    if fit.sum() < 1000:
        raise InputError(f"only {int(fit.sum())} T1 voxels lie deep in the template brain: check the registration")
    sample = np.flatnonzero(fit.ravel())[::fit_stride]  # a fixed subsample: deterministic and fast
    class_priors = np.stack([p.ravel()[sample] for p in (csf_p, gm_p, wm_p)], axis=1) + 1e-3
    raw = data
    bias = np.ones_like(data)
    for _ in range(bias_iterations + 1):
        data = raw / bias
        means, sds = _fit_mixture(data.ravel()[sample].astype(np.float64), class_priors, iterations)
        # on a T1, CSF < GM < WM: name the fitted classes by their intensity order (EM may swap two classes)
        order = np.argsort(means)
        means, sds = means[order], sds[order]
        if np.min(np.diff(means)) < 0.5 * np.max(sds):
            raise InputError(f"T1 tissue intensities do not separate into CSF < GM < WM (class means "
                             f"{np.round(means, 1).tolist()}, SDs {np.round(sds, 1).tolist()}): is this a "
                             "T1-weighted image of a head?")
        pial = _crossing(means[0], sds[0], means[1], sds[1])
        white = _crossing(means[1], sds[1], means[2], sds[2])
        bias = bias * _bias_field(data, template, (data >= white, (data >= pial) & (data < white)), means[2:0:-1],
                                  affine, bias_fwhm_mm)
    upper = means[2] + 4.0 * sds[2]

    candidate = (data >= pial) & (data <= upper) & (brain >= 0.02)
    core = inner_mm >= core_depth_mm
    # opening: erode by a ball, keep the pieces touching the core, dilate back inside the candidate voxels
    ball = ball_structure(opening_mm, affine)
    eroded = ndimage.binary_erosion(candidate, structure=ball)
    labels, _ = ndimage.label(eroded)
    keep = np.unique(labels[core & eroded])
    kept = np.isin(labels, keep[keep > 0])
    parenchyma = ndimage.binary_dilation(kept, structure=ball) & candidate
    labels, n = ndimage.label(parenchyma)
    if n == 0:
        raise InputError("no brain tissue found in the T1 inside the registered template brain")
    parenchyma = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1

    out = np.zeros(data.shape, dtype=np.uint8)
    out[template] = CSF
    out[parenchyma] = GM
    out[parenchyma & (data >= white)] = WM
    seconds = time.perf_counter() - start
    qc = {
        "method": "3-class Gaussian mixture (EM) with MNI152 2009 priors, thresholds at the class crossings, "
                  f"opening {opening_mm:g} mm connected to the template brain core",
        "class_mean": dict(zip(("csf", "gm", "wm"), np.round(means, 2).tolist())),
        "class_sd": dict(zip(("csf", "gm", "wm"), np.round(sds, 2).tolist())),
        "threshold_pial": round(pial, 2),
        "threshold_white": round(white, 2),
        "voxels": {"gm": int((out == GM).sum()), "wm": int((out == WM).sum()), "csf": int((out == CSF).sum())},
        "seconds": round(seconds, 2),
    }
    logger.info("tissue segmentation: GM %d, WM %d voxels in %.1f s", qc["voxels"]["gm"], qc["voxels"]["wm"], seconds)
    return TissueMaps(out, crop_affine, qc)


def segment_t1(t1_img, t1_to_mni=None):
    """Tissue classes of a T1 with MNI priors: :func:`template_priors` then :func:`segment_tissues`.

    Parameters
    ----------
    t1_img : nibabel image, 3-D
    t1_to_mni : Transform, optional
        ``T1w -> MNI``; None when the T1 is in MNI space already.

    Returns
    -------
    TissueMaps
        ``qc["seconds"]`` covers both steps.
    """
    start = time.perf_counter()
    priors, box = template_priors(t1_img, t1_to_mni)
    maps = segment_tissues(t1_img, priors, box)
    maps.qc["seconds"] = round(time.perf_counter() - start, 2)
    return maps
