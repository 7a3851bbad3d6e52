"""The set of analysed voxels and the fast path from a BOLD file to a (time, voxel) matrix.

NIfTI stores volumes with i varying fastest and time slowest, so the array
nibabel returns, transposed, is a C-ordered ``(t, k, j, i)`` block.  We keep
that layout (no copy) and order voxels the same way: i fastest.
"""

import numpy as np

from tmstarget._threads import worker_count
from tmstarget.analysis.clean import smooth_volumes, smoothing_radius
from tmstarget.errors import InputError


class VoxelSet:
    """A boolean mask on a grid and the column order used for its voxels.

    Parameters
    ----------
    mask : ndarray of bool, shape (I, J, K)
    affine : array (4, 4)
        Voxel-to-world (RAS mm) affine of the grid.
    """

    def __init__(self, mask, affine):
        self.mask = np.asarray(mask, dtype=bool)
        self.affine = np.asarray(affine, dtype=float)
        # i fastest, matching the transposed NIfTI layout
        self.ijk = np.argwhere(self.mask.T)[:, ::-1]
        self._column = np.full(self.mask.shape, -1, dtype=np.int64)
        self._column[tuple(self.ijk.T)] = np.arange(len(self.ijk))

    def __len__(self):
        return len(self.ijk)

    @property
    def shape(self):
        return self.mask.shape

    def columns(self, sub_mask):
        """Column indices of the voxels of ``sub_mask`` that are in this set."""
        cols = self._column[np.asarray(sub_mask, dtype=bool)]
        return np.sort(cols[cols >= 0])

    def ras_mm(self, columns=None):
        """World coordinates (mm) of the voxels (all, or the given columns)."""
        ijk = self.ijk if columns is None else self.ijk[columns]
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def to_volume(self, values, fill=0.0, dtype=np.float32):
        """Scatter per-voxel values back into a 3-D array on the grid."""
        out = np.full(self.mask.shape, fill, dtype=dtype)
        out[tuple(self.ijk.T)] = values
        return out

    def bounding_box(self, pad):
        """Slices of the mask's bounding box grown by ``pad`` voxels per axis, clipped to the grid."""
        lo = self.ijk.min(axis=0) - np.asarray(pad)
        hi = self.ijk.max(axis=0) + np.asarray(pad) + 1
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, self.mask.shape)
        return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def read_voxel_timeseries(img, voxels, first_frame=0, fwhm_mm=0.0, raw_columns=None):
    """Read a 4-D image, smooth it, and return the voxels' time series.

    Only the mask's bounding box, grown by the smoothing kernel's half-width,
    is read into float32 and smoothed: values inside the mask equal smoothing
    the whole image (the kernel never reaches past the pad, and at the grid's
    edge the crop edge is the image edge).

    Speed: the frames are read, cast and smoothed in chunks of volumes on
    :func:`~tmstarget._threads.worker_count` threads (the casting and scipy's filters release the
    GIL), into one buffer; nibabel reads one chunk at a time (its scaling of a scaled image
    changes the process's warnings filters, which must not interleave). Every volume is
    smoothed on its own, so the numbers are those of smoothing the whole block at once.

    Parameters
    ----------
    img : nibabel image, 4-D
    voxels : VoxelSet
        Voxels to return (on the image's grid).
    first_frame : int
        Frames before it (dummy volumes) are skipped.
    fwhm_mm : float
        Spatial smoothing FWHM (mm), nilearn's kernel.
    raw_columns : ndarray of int, optional
        Also return the unsmoothed series of these voxel columns (e.g. for tSNR).

    Returns
    -------
    smoothed : ndarray, float32, shape (T, len(voxels))
    raw : ndarray or None, shape (T, len(raw_columns))
    """
    import threading
    from concurrent.futures import ThreadPoolExecutor

    box = smoothing_box(voxels, fwhm_mm)
    n_frames = max(int(img.shape[3]) - first_frame, 0)
    crop = tuple(s.stop - s.start for s in box)[::-1]  # (k, j, i) of the box
    # column-major, as fancy indexing the whole block gave them: reductions over frames add in the same order
    smoothed = np.empty((n_frames, len(voxels)), dtype=np.float32, order="F")
    raw = None if raw_columns is None else np.empty((n_frames, len(raw_columns)), dtype=np.float32, order="F")

    reading = threading.Lock()  # nibabel's scaling sets warnings filters, which threads must not interleave

    def one_chunk(frames):
        with reading:
            part = img.dataobj[box + (slice(first_frame + frames.start, first_frame + frames.stop),)]
        block = np.empty((frames.stop - frames.start,) + crop, dtype=np.float32)
        block[...] = np.asarray(part).T  # (t, k, j, i), cast to float32
        columns, raw_part = _smoothed_columns(block, voxels, box, fwhm_mm, raw_columns, img.get_filename(),
                                              first_frame + frames.start)
        smoothed[frames] = columns
        if raw is not None:
            raw[frames] = raw_part

    chunks = [slice(t, min(t + _CHUNK_VOLUMES, n_frames)) for t in range(0, n_frames, _CHUNK_VOLUMES)]
    with ThreadPoolExecutor(max_workers=worker_count()) as pool:
        for done in [pool.submit(one_chunk, frames) for frames in chunks]:
            done.result()  # in frame order: the first bad volume is the one named
    return smoothed, raw


#: Volumes read, cast and smoothed together by one thread of :func:`read_voxel_timeseries`.
_CHUNK_VOLUMES = 8


def smoothing_box(voxels, fwhm_mm):
    """Bounding box of the voxels grown by the smoothing kernel's half-width (see :func:`read_voxel_timeseries`)."""
    return voxels.bounding_box(smoothing_radius(voxels.affine, fwhm_mm) if fwhm_mm else [0, 0, 0])


def smoothed_volume_values(volume, voxels, fwhm_mm, box=None):
    """One volume's smoothed voxel values, exactly as :func:`read_voxel_timeseries` gives that frame.

    Parameters
    ----------
    volume : ndarray, shape (I, J, K)
    voxels : VoxelSet
    fwhm_mm : float
    box : tuple of slice, optional
        :func:`smoothing_box` (computed when not given).

    Returns
    -------
    ndarray, float32, shape (len(voxels),)
    """
    box = smoothing_box(voxels, fwhm_mm) if box is None else box
    block = np.ascontiguousarray(np.asarray(volume[box], dtype=np.float32).T)[None]
    return _smoothed_columns(block, voxels, box, fwhm_mm)[0][0]


def _smoothed_columns(block, voxels, box, fwhm_mm, raw_columns=None, where=None, first_frame=0):
    """Smooth a ``(t, k, j, i)`` float32 block cut at ``box`` in place; return the voxels' columns.

    ``first_frame`` is the file's volume number of the block's first frame (named in errors).
    """
    local = voxels.ijk - np.array([s.start for s in box])
    index = (slice(None), local[:, 2], local[:, 1], local[:, 0])
    nonfinite = ~np.isfinite(block)
    if nonfinite.any():
        inside = np.argwhere(nonfinite[index])
        if len(inside):
            t, col = inside[0]
            raise InputError(
                f"NaN or infinite value inside the brain mask at voxel {tuple(int(v) for v in voxels.ijk[col])}",
                path=where, volume=int(t) + first_frame,
            )
        block[nonfinite] = 0.0  # outside the mask, as nilearn's smoothing does
    raw = block[(slice(None),) + tuple(local[raw_columns].T[::-1])] if raw_columns is not None else None
    smooth_volumes(block, voxels.affine, fwhm_mm, spatial_axes=(3, 2, 1))
    return block[index], raw


def voxel_tsnr(raw):
    """Temporal SNR (mean / standard deviation over frames) of each column; 0 where the series is constant."""
    mean = raw.mean(axis=0, dtype=np.float64)
    std = raw.std(axis=0, dtype=np.float64)
    return np.where(std > 0, mean / np.where(std > 0, std, 1.0), 0.0)
