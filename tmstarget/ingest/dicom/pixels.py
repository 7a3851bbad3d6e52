"""Pixel data of one DICOM file as an array of 2-D frames.

Uncompressed pixel data are read straight from the byte offset found while
reading the header (no second header parse); compressed transfer syntaxes go
through pydicom's decoders and fail with a `DicomError` when no decoder is
installed.  Siemens mosaics are cut into their tiles with one reshape.
"""

import numpy as np
import pydicom
from pydicom.uid import UID

from tmstarget.errors import DicomError


def read_frames(header):
    """Return the frames of one file, shape (n_frames, rows, cols), native byte order.

    Parameters
    ----------
    header : FileHeader
        From `tmstarget.ingest.dicom.headers.read_file_header`.

    Returns
    -------
    numpy.ndarray
        Stored (unscaled) values; for a mosaic, one frame per tile in tile
        order (the order of ``header.position_lps_mm``).

    Raises
    ------
    DicomError
        Truncated pixel data, or a compressed transfer syntax without an
        installed decoder, naming the file.
    """
    layout = header.pixels
    n_rows, n_cols = layout.frame_shape
    if layout.offset is None:
        stored = _decode_compressed(header)
    else:
        dtype = np.dtype(layout.dtype)
        stored = np.fromfile(header.path, dtype=dtype, count=layout.n_bytes // dtype.itemsize, offset=layout.offset)
        if stored.size * stored.itemsize != layout.n_bytes:
            raise DicomError(
                f"truncated pixel data: read {stored.size * stored.itemsize} of {layout.n_bytes} bytes",
                path=header.path,
                key="PixelData",
            )
        stored = stored.astype(stored.dtype.newbyteorder("="), copy=False)
    stored = stored.reshape(layout.n_stored_frames, n_rows, n_cols)
    stored = _apply_bits_stored(stored, layout.bits_stored)
    if header.layout == "mosaic":
        return unpack_mosaic(stored[0], header.n_frames, header.rows, header.cols)
    return stored


def unpack_mosaic(mosaic, n_tiles, rows, cols):
    """Cut a Siemens mosaic image into its tiles.

    Parameters
    ----------
    mosaic : numpy.ndarray, shape (grid * rows, grid * cols)
        The stored mosaic; tiles fill the grid row by row.
    n_tiles : int
        NumberOfImagesInMosaic.
    rows, cols : int
        Size of one tile.

    Returns
    -------
    numpy.ndarray, shape (n_tiles, rows, cols)

    Examples
    --------
    >>> m = np.arange(16).reshape(4, 4)
    >>> unpack_mosaic(m, 3, 2, 2)[2].tolist()
    [[8, 9], [12, 13]]
    """
    grid_rows = mosaic.shape[0] // rows
    grid_cols = mosaic.shape[1] // cols
    tiles = mosaic.reshape(grid_rows, rows, grid_cols, cols).transpose(0, 2, 1, 3)
    return tiles.reshape(grid_rows * grid_cols, rows, cols)[:n_tiles]


def _decode_compressed(header):
    syntax = UID(header.pixels.transfer_syntax)
    try:
        ds = pydicom.dcmread(header.path)
        return np.asarray(ds.pixel_array)
    except Exception as exc:  # pydicom raises several types for missing/failed decoders
        raise DicomError(
            f"cannot decode pixel data in transfer syntax '{syntax.name}' ({syntax}): {exc}. "
            "Install a pydicom decoder plugin (e.g. pylibjpeg with pylibjpeg-libjpeg, "
            "-openjpeg) or decompress the files first (gdcmconv --raw)",
            path=header.path,
            key="TransferSyntaxUID",
        ) from exc


def _apply_bits_stored(stored, bits_stored):
    """Drop unused high bits (unsigned) or sign-extend them (signed)."""
    bits_allocated = stored.dtype.itemsize * 8
    if bits_stored >= bits_allocated or bits_stored <= 0:
        return stored
    if stored.dtype.kind == "u":
        mask = stored.dtype.type((1 << bits_stored) - 1)
        if stored.max(initial=0) <= mask:
            return stored
        return stored & mask
    shift = bits_allocated - bits_stored
    return (stored << shift) >> shift
