"""Checks on a participant's T1 before any registration or coil placement.

* :func:`check_whole_head`: the field of view can hold a head.
* :func:`check_scalp`: is there a scalp at all, or was the T1 brain-extracted?
* :func:`check_face`: was the face removed (defaced), and where?

Brain-extracted and defaced T1s are common in shared and anonymised data. A brain-only T1 has no
scalp to put a coil on (its "head surface" is the brain) and needs a brain-to-brain registration
(:func:`tmstarget.anatomy.registration.register_t1_to_mni` with ``brain_only``); a defaced T1 keeps
the scalp over the vertex and the forehead but not over the face, so a coil is placed only where
the scalp under it is real.

The scalp test (no registration needed)
---------------------------------------
On the head mask of :func:`tmstarget.anatomy.scalp.head_mask` (2-mm working grid), every voxel
gets its depth below the mask's surface (Euclidean distance transform, mm). Over the top
:data:`TOP_SLAB_MM` of the head (world z; the cranium, not the face or neck), the median T1
intensity is taken in 2-mm depth shells. A head shows a dark layer (skull, with CSF) under a
brighter surface (skin and fat): the darkest shell 4-16 mm deep is at most about a third of the
brightest shell 0-6 mm deep (0.31 on the shared real T1, 0.36 on the sample's synthetic head). A
brain-only T1 has grey matter at its surface and brighter white matter below, so the ratio is
1.0 (nilearn's MNI template, and the shared T1 masked with the MNI brain mask). Scalp present:
ratio below :data:`SKULL_CONTRAST_MAX`.

The face test (after the T1 -> MNI registration)
------------------------------------------------
A box over the eyes, nose and cheeks, :data:`FACE_BOX_MNI_MM` (x -30..30, y 55..75,
z -50..-15 MNI mm; sampled every 2.5 mm), is mapped into the T1 through the registration and
looked up in the head mask. On a whole head it is mostly tissue (fraction 0.86 on the shared T1;
0.58 on the sample's synthetic head, whose skull and scalp shell reaches into the box); defacing
tools (pydeface, mri_deface, fsl_deface) set the face to zero, leaving it empty (0.01 on the
shared T1 defaced in ``tests/test_t1_checks.py``). Face present: fraction at least
:data:`FACE_TISSUE_MIN`. On a defaced T1, the empty points of the box are the removed region, and
a coil whose scalp point lies within :data:`REMOVED_MARGIN_MM` of them is refused: the head
surface there is the cut, not skin.
"""

from dataclasses import dataclass

import numpy as np

from tmstarget.errors import InputError

#: A T1 shorter than this (mm) along any voxel axis is not a whole head.
MIN_T1_EXTENT_MM = 100.0
#: Height (mm, from the top of the head mask down) of the slab the scalp test looks at.
TOP_SLAB_MM = 80.0
#: Depth ranges (mm) of the surface layer and of the layer where a head has its skull.
SURFACE_SHELLS_MM = (0.0, 6.0)
SKULL_SHELLS_MM = (4.0, 16.0)
#: Darkest skull-depth shell / brightest surface shell below which the T1 has a scalp.
SKULL_CONTRAST_MAX = 0.6
#: Face box in MNI mm, (min, max) along x, y, z, and its sampling step.
FACE_BOX_MNI_MM = ((-30.0, 30.0), (55.0, 75.0), (-50.0, -15.0))
FACE_STEP_MM = 2.5
#: Fraction of the face box that must be head tissue for the face to count as present.
FACE_TISSUE_MIN = 0.3
#: A scalp point closer than this (mm) to the removed face region is refused on a defaced T1.
REMOVED_MARGIN_MM = 10.0


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


@dataclass(frozen=True)
class ScalpCheck:
    """Result of :func:`check_scalp`.

    Attributes
    ----------
    scalp : bool
        The T1 has a scalp (False: brain-extracted).
    skull_contrast : float
        Darkest 4-16 mm shell / brightest 0-6 mm shell (median intensities, top of the head).
    shells : tuple of float
        Median intensity of each 2-mm depth shell from the surface (0-2, 2-4, ... mm), divided
        by the largest.
    """

    scalp: bool
    skull_contrast: float
    shells: tuple

    def to_dict(self):
        """JSON-ready summary (``anatomy.t1_check`` in target.json)."""
        return {
            "scalp": "present" if self.scalp else "missing: brain-extracted T1 (no skull or scalp around the brain)",
            "skull_contrast": round(self.skull_contrast, 3),
            "skull_contrast_rule": f"darkest median of the {SKULL_SHELLS_MM[0]:g}-{SKULL_SHELLS_MM[1]:g} mm depth "
            f"shells / brightest of the {SURFACE_SHELLS_MM[0]:g}-{SURFACE_SHELLS_MM[1]:g} mm shells over the top "
            f"{TOP_SLAB_MM:g} mm of the head; scalp present below {SKULL_CONTRAST_MAX:g}",
        }


def check_scalp(t1_img, head=None):
    """Tell a T1 with a scalp from a brain-extracted one (the depth-profile test of the module docstring).

    Parameters
    ----------
    t1_img : nibabel image, 3-D
    head : nibabel image, optional
        ``head_mask(t1_img)`` (:func:`tmstarget.anatomy.scalp.head_mask`) when already computed.

    Returns
    -------
    ScalpCheck
    """
    from nibabel.affines import apply_affine, voxel_sizes
    from scipy import ndimage

    from tmstarget.anatomy.scalp import block_average, head_mask, load_3d

    mask_img = head_mask(t1_img) if head is None else head
    mask = np.asarray(mask_img.dataobj) > 0
    data, affine = block_average(*load_3d(t1_img, "T1 image"), 2.0)
    if not np.allclose(affine, mask_img.affine) or data.shape != mask.shape:
        raise InputError("internal: the head mask and the T1 working grid differ")
    depth = ndimage.distance_transform_edt(mask, sampling=voxel_sizes(affine))
    z_mm = apply_affine(affine, np.indices(mask.shape).reshape(3, -1).T)[:, 2].reshape(mask.shape)
    top = mask & (z_mm > z_mm[mask].max() - TOP_SLAB_MM)
    edges = np.arange(0.0, max(SURFACE_SHELLS_MM[1], SKULL_SHELLS_MM[1]) + 2.0, 2.0)
    shells = []
    for low in edges[:-1]:
        values = data[top & (depth > low) & (depth <= low + 2.0)]
        shells.append(float(np.median(values)) if values.size else 0.0)
    shells = np.asarray(shells)
    if shells.max() <= 0:
        raise InputError("the T1 has no signal in the top of its head mask")

    def pick(limits):
        return shells[(edges[:-1] >= limits[0]) & (edges[:-1] + 2.0 <= limits[1])]

    contrast = float(pick(SKULL_SHELLS_MM).min() / max(pick(SURFACE_SHELLS_MM).max(), 1e-12))
    return ScalpCheck(contrast < SKULL_CONTRAST_MAX, contrast, tuple(np.round(shells / shells.max(), 3).tolist()))


@dataclass(frozen=True)
class FaceCheck:
    """Result of :func:`check_face`.

    Attributes
    ----------
    face_fraction : float
        Fraction of the face box (mapped into the T1) that is head tissue.
    removed_ras_mm : ndarray, shape (n, 3)
        T1-world points of the face box with no tissue, when the face is missing; else empty.
    """

    face_fraction: float
    removed_ras_mm: np.ndarray

    @property
    def defaced(self):
        """The face is missing (fraction below :data:`FACE_TISSUE_MIN`)."""
        return self.face_fraction < FACE_TISSUE_MIN

    def coil_refusal(self, scalp_ras_mm):
        """Why no coil may sit at this scalp point (T1 world mm), or None when it may."""
        if not self.defaced or len(self.removed_ras_mm) == 0:
            return None
        distance = float(np.linalg.norm(self.removed_ras_mm - np.asarray(scalp_ras_mm, float), axis=1).min())
        if distance >= REMOVED_MARGIN_MM:
            return None
        return (f"the T1 is defaced and the scalp point {np.round(scalp_ras_mm, 1).tolist()} mm lies "
                f"{distance:.1f} mm from the removed face (under {REMOVED_MARGIN_MM:g} mm): the head surface there "
                "is the defacing cut, not scalp")

    def to_dict(self):
        """JSON-ready summary (``anatomy.t1_check`` in target.json)."""
        (x0, x1), (y0, y1), (z0, z1) = FACE_BOX_MNI_MM
        return {
            "face": "missing: defaced T1" if self.defaced else "present",
            "face_tissue_fraction": round(self.face_fraction, 3),
            "face_rule": f"head tissue in the MNI box x {x0:g}..{x1:g}, y {y0:g}..{y1:g}, z {z0:g}..{z1:g} mm mapped "
            f"into the T1; face present at >= {FACE_TISSUE_MIN:g}; on a defaced T1 a coil whose scalp point lies "
            f"within {REMOVED_MARGIN_MM:g} mm of the empty part is refused",
        }


def check_face(t1_img, t1_to_mni, head=None):
    """Is the face of the T1 there? (The face-box test of the module docstring.)

    Parameters
    ----------
    t1_img : nibabel image, 3-D
    t1_to_mni : Transform
        ``T1w -> MNI`` registration of this T1.
    head : nibabel image, optional
        ``head_mask(t1_img)`` when already computed.

    Returns
    -------
    FaceCheck
    """
    from nibabel.affines import apply_affine

    from tmstarget.anatomy.registration import map_points
    from tmstarget.anatomy.scalp import head_mask

    axes = [np.arange(low, high + 1e-6, FACE_STEP_MM) for low, high in FACE_BOX_MNI_MM]
    box_mni = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    box_t1 = map_points(box_mni, t1_to_mni, "inverse")
    mask_img = head_mask(t1_img) if head is None else head
    mask = np.asarray(mask_img.dataobj) > 0
    ijk = np.round(apply_affine(np.linalg.inv(mask_img.affine), box_t1)).astype(int)
    inside = np.all((ijk >= 0) & (ijk < mask.shape), axis=1)
    tissue = np.zeros(len(box_t1), dtype=bool)
    tissue[inside] = mask[tuple(ijk[inside].T)]
    fraction = float(tissue.mean())
    removed = box_t1[~tissue] if fraction < FACE_TISSUE_MIN else np.zeros((0, 3))
    return FaceCheck(fraction, removed)
