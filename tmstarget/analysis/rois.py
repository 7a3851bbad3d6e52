"""ROIs, seeds and search regions as boolean masks on the analysis grid.

Definitions (MNI152 mm, RAS) are package data in ``data/atlas.toml``; every
mask is built through the image affine (never from index arithmetic), and
restricted to grey matter with nilearn's bundled MNI152 grey-matter
probability map resampled to the analysis grid.
"""

import functools
import tomllib
from dataclasses import dataclass
from importlib import resources

import nibabel as nib
import numpy as np

from tmstarget.errors import InputError

SUBSYSTEMS = ("core", "dmpfc", "mtl")


@functools.cache
def load_atlas():
    """Return the parsed ``data/atlas.toml`` (ROI sets, spheres, regions, fixed targets)."""
    with resources.files("tmstarget.data").joinpath("atlas.toml").open("rb") as handle:
        return tomllib.load(handle)


@dataclass(frozen=True)
class Roi:
    """One spherical ROI: ``name``, ``subsystem``, centre (MNI mm) and radius (mm)."""

    name: str
    subsystem: str
    centre_mni_mm: tuple
    radius_mm: float


def roi_set(name, radius_mm=None):
    """Return the ROIs of a named set (``dixon24`` or ``andrews-hanna11``).

    Parameters
    ----------
    name : str
        Set name in ``data/atlas.toml``.
    radius_mm : float, optional
        Overrides the set's default sphere radius.
    """
    sets = load_atlas()["roi_sets"]
    if name not in sets:
        raise InputError(f"unknown ROI set '{name}'; known: {', '.join(sorted(sets))}")
    spec = sets[name]
    radius = float(radius_mm if radius_mm is not None else spec["radius_mm"])
    return [Roi(r["name"], r["subsystem"], tuple(r["mni_mm"]), radius) for r in spec["rois"]]


def voxel_centres_mm(shape, affine):
    """World (mm) coordinates of every voxel centre, shape ``shape + (3,)`` (read-only, cached per grid)."""
    affine = np.ascontiguousarray(affine, dtype=float)
    return _voxel_centres(tuple(int(s) for s in shape[:3]), affine.tobytes())


@functools.lru_cache(maxsize=4)
def _voxel_centres(shape, affine_bytes):
    affine = np.frombuffer(affine_bytes).reshape(4, 4)
    ijk = np.indices(shape, dtype=float).reshape(3, -1)
    xyz = (affine[:3, :3] @ ijk + affine[:3, 3:4]).T.reshape(shape + (3,))
    xyz.flags.writeable = False
    return xyz


def ball_mask(shape, affine, centres_mm, radius_mm):
    """Voxels whose centre lies within ``radius_mm`` of any of ``centres_mm``.

    Parameters
    ----------
    shape : tuple of int
        Grid shape (first three axes used).
    affine : array (4, 4)
        Voxel-to-world affine of the grid.
    centres_mm : array-like (N, 3) or (3,)
        Sphere centres in the grid's world frame (mm).
    radius_mm : float
        Sphere radius (mm); voxels at exactly the radius are included.

    Returns
    -------
    ndarray of bool, shape ``shape[:3]``
    """
    centres = np.atleast_2d(np.asarray(centres_mm, dtype=float))
    xyz = voxel_centres_mm(shape, affine)
    mask = np.zeros(tuple(shape[:3]), dtype=bool)
    for centre in centres:
        box = _ball_box(shape, affine, centre, radius_mm)
        # tolerance so a voxel lying exactly on the sphere is not lost to rounding
        mask[box] |= np.sum((xyz[box] - centre) ** 2, axis=-1) <= radius_mm**2 + 1e-6
    return mask


def _ball_box(shape, affine, centre_mm, radius_mm):
    """Index slices holding every voxel within ``radius_mm`` of ``centre_mm`` (with a voxel to spare).

    A world offset ``d`` moves index ``i`` by ``inv(A)[i] . d``, at most ``|inv(A)[i]| |d|``: only
    this box is tested, with the test of the whole grid (the same voxels come out, in a fraction of
    the time). A singular affine tests the whole grid.
    """
    try:
        inverse = np.linalg.inv(np.asarray(affine, dtype=float)[:3, :3])
    except np.linalg.LinAlgError:
        return tuple(slice(0, int(n)) for n in shape[:3])
    centre_ijk = inverse @ (np.asarray(centre_mm, dtype=float) - np.asarray(affine, dtype=float)[:3, 3])
    half = np.sqrt((inverse**2).sum(axis=1)) * np.sqrt(radius_mm**2 + 1e-6) + 1.0
    low = np.clip(np.floor(centre_ijk - half), 0, shape[:3]).astype(int)
    high = np.clip(np.ceil(centre_ijk + half) + 1, 0, shape[:3]).astype(int)
    return tuple(slice(int(a), int(max(a, b))) for a, b in zip(low, high))


@functools.lru_cache(maxsize=8)
def _gm_probability(shape, affine_bytes):
    """The resampled GM probability of a grid: from the on-disk cache when this grid was seen before."""
    import sys

    from tmstarget.anatomy import t1_cache

    affine = np.frombuffer(affine_bytes).reshape(4, 4)
    params = {"shape": list(shape), "affine": affine.tolist(), "template": "MNI152 GM, resolution 1"}
    key = t1_cache.entry_key("gm_probability", None, params, [sys.modules[__name__]])
    stored = t1_cache.load("gm_probability", key, {"probability": (3, "f")})
    if stored is not None and stored["probability"].shape == tuple(shape) \
            and stored["probability"].dtype == np.float32:
        return stored["probability"]
    probability = _resampled_gm_probability(shape, affine)
    t1_cache.store("gm_probability", key, {"probability": probability})
    return probability


def _resampled_gm_probability(shape, affine):
    """nilearn's 1-mm MNI152 GM probability map resampled (linear) to a grid, float32."""
    from nilearn import datasets, image

    gm = datasets.load_mni152_gm_template(resolution=1)
    resampled = image.resample_img(
        gm,
        target_affine=affine,
        target_shape=shape,
        interpolation="linear",
        force_resample=True,
        copy_header=True,
    )
    return np.asarray(resampled.get_fdata(), dtype=np.float32)


def grey_matter_mask(shape, affine, threshold=0.2):
    """Grey matter on the analysis grid: nilearn's MNI152 GM probability > ``threshold``.

    The map is resampled (linear) to the grid given by ``shape``/``affine``,
    which must be in MNI152 space; the resampled map of a grid is kept in the
    cache folder (:mod:`tmstarget.anatomy.t1_cache`; the same numbers).
    """
    affine = np.ascontiguousarray(affine, dtype=float)
    prob = _gm_probability(tuple(int(s) for s in shape[:3]), affine.tobytes())
    return prob > threshold


def region_spec(name):
    """Sphere centres (MNI mm, (N, 3)) and radius (mm) of a named search region."""
    regions = load_atlas()["regions"]
    if name not in regions:
        raise InputError(f"unknown search region '{name}'; known: {', '.join(sorted(regions))}")
    return np.asarray(regions[name]["centres_mni_mm"], dtype=float), float(regions[name]["radius_mm"])


def region_mask(name, shape, affine, gm=None):
    """Search region ``name`` (union of spheres) on an MNI grid, intersected with ``gm``."""
    mask = ball_mask(shape, affine, *region_spec(name))
    return mask if gm is None else mask & gm


class MniGrid:
    """Builds MNI-defined masks on an analysis grid that is itself in MNI space.

    The planning engine asks its grid for every mask (grey matter, spheres);
    a native-space front end passes an object with the same two methods that
    builds the masks in MNI space and warps them onto the subject's grid.
    """

    def __init__(self, shape, affine):
        self.shape = tuple(int(s) for s in shape[:3])
        self.affine = np.asarray(affine, dtype=float)

    def grey_matter(self, threshold):
        """Grey matter (nilearn MNI152 GM probability > ``threshold``) on the grid."""
        return grey_matter_mask(self.shape, self.affine, threshold)

    def balls(self, centres_mni_mm, radius_mm):
        """Union of spheres given in MNI mm, on the grid."""
        return ball_mask(self.shape, self.affine, centres_mni_mm, radius_mm)


def sphere_spec(name):
    """Centre (MNI mm) and radius (mm) of a named seed sphere (e.g. ``sgacc``)."""
    spheres = load_atlas()["spheres"]
    if name not in spheres:
        raise InputError(f"unknown seed sphere '{name}'; known: {', '.join(sorted(spheres))}")
    spec = spheres[name]
    return tuple(float(v) for v in spec["mni_mm"]), float(spec["radius_mm"])


def mask_to_img(mask, affine, dtype=np.uint8):
    """Wrap a boolean mask as a NIfTI image on ``affine``."""
    img = nib.Nifti1Image(np.asarray(mask, dtype=dtype), affine)
    img.header.set_xyzt_units("mm")
    return img
