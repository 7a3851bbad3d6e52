"""MNI-defined masks on a native EPI grid (the grid object of a native plan's engine run).

:class:`NativeGrid` is what :func:`tmstarget.workflows.native.prepare_native` (and the watcher's
recorded run) gives :func:`tmstarget.analysis.engine.plan` as the selection's grid.
"""

import nibabel as nib
import numpy as np

from tmstarget.analysis.rois import ball_mask
from tmstarget.anatomy.registration import MNI_SPACE, mni_template, template_tissue_probabilities, warp_image
from tmstarget.errors import InputError

#: Resolution (mm) of the MNI grid on which native masks are built before warping.
MASK_RESOLUTION_MM = 2


class NativeGrid:
    """MNI-defined masks on a native EPI grid, built in MNI space and warped in.

    Implements the two methods :func:`tmstarget.analysis.engine.plan` asks its grid
    for. Masks are built on the 2-mm MNI template grid and resampled onto the
    EPI grid through the EPI -> MNI transform: nearest neighbour for binary
    masks, linear then threshold for the grey-matter probability.

    Nearest neighbour picks, for every EPI voxel, one MNI voxel (or none, outside the template),
    whatever the values: so the warp runs once, on an image holding each MNI voxel's number
    (1-based; float32 holds them exactly), and every binary mask is then looked up through that
    map (:meth:`nearest`) -- the same voxels as warping each mask with ANTs, without reading the
    SyN warp field once per mask (a protocol asks for about 26 ROIs).

    Parameters
    ----------
    reference_img : nibabel image
        3-D image on the EPI grid (world = scanner RAS).
    epi_to_mni : Transform
        ``boldref -> MNI152NLin2009aSym``.
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
        self._nearest_voxel = None

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

    def nearest(self, mask_mni):
        """A binary mask on the MNI template grid brought onto the EPI grid (nearest neighbour).

        Parameters
        ----------
        mask_mni : ndarray, shape ``template_shape``
            Nonzero = inside.

        Returns
        -------
        ndarray of bool, the EPI grid's shape
            What ``warp_image`` of the mask (nearest) gives, > 0.
        """
        if self._nearest_voxel is None:
            count = int(np.prod(self.template_shape))
            if count >= 2 ** 24:  # float32 holds whole numbers exactly only up to 2**24
                raise InputError(f"MNI grid of {count} voxels is too large for the nearest-voxel map")
            numbers = np.arange(1, count + 1, dtype=np.float32).reshape(self.template_shape)
            warped = self._to_epi(nib.Nifti1Image(numbers, self.template_affine), "nearest")
            self._nearest_voxel = warped.astype(np.int64)  # 0: outside the template grid
        inside = np.concatenate([[False], np.asarray(mask_mni).ravel() != 0])
        return inside[self._nearest_voxel]

    def balls(self, centres_mni_mm, radius_mm):
        """Union of spheres given in MNI mm, built on the MNI grid and brought onto the EPI grid (:meth:`nearest`)."""
        return self.nearest(ball_mask(self.template_shape, self.template_affine, centres_mni_mm, radius_mm))
