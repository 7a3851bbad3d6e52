"""Checks on a participant's T1 before any registration or coil placement."""

import numpy as np

from tmstarget.errors import InputError

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
