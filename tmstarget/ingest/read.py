"""The one place input files are opened: NIfTI images, TSV tables and JSON sidecars.

Every reader checks the file completely before anything is computed and turns
whatever goes wrong (missing, empty, truncated, not the format, corrupt
compression, ragged rows, undecodable bytes) into one
:class:`~tmstarget.errors.InputError` line naming the file, its role
(``BOLD``, ``brain mask``, ``T1``, ``confounds``, ``events``, ``sidecar``) and
the problem. Callers never wrap these calls in their own ``try``.

Speed (issue 19): a gzipped NIfTI is read from disk once and decompressed once,
with python-isal (``isal.igzip``, 2-4x faster than zlib) when it is installed
and the standard library otherwise (the same bytes either way); the image then
reads its data from memory, and the file's sha256 (for the provenance) comes
from the same read.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import zlib
from pathlib import Path

from tmstarget._fileio import read_bytes_hashed
from tmstarget.errors import InputError

try:  # python-isal: the same DEFLATE, decoded faster
    from isal import igzip as _fast_gzip
    from isal.isal_zlib import error as _fast_gzip_error
except ImportError:  # pragma: no cover - isal is a dependency; the standard library is the fallback
    _fast_gzip, _fast_gzip_error = None, zlib.error

_CHUNK = 1 << 22
#: ``sizeof_hdr`` (the first 4 bytes) of single-file NIfTI images read from memory: NIfTI-1 and NIfTI-2.
_SINGLE_FILE_NIFTI = {348: "Nifti1Image", 540: "Nifti2Image"}


def _one_line(exc):
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _existing_file(path, role):
    if path is None:
        raise InputError(f"the {role} file is missing")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{role} file not found" if not path.exists() else f"{role} is not a file", path=path)
    if path.stat().st_size == 0:
        raise InputError(f"{role} file is empty (0 bytes)", path=path)
    return path


def _stored_bytes(data_file):
    """Bytes of image data a file holds: its size, or what its gzip stream decompresses to (read to the end)."""
    if not str(data_file).endswith(".gz"):
        return os.path.getsize(data_file)
    total = 0
    with gzip.open(data_file, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            total += len(chunk)
    return total


@contextlib.contextmanager
def _decoding(role, path):
    """Turn the errors of reading a compressed stream into one line naming the file and its role."""
    try:
        yield
    except EOFError as exc:
        raise InputError(f"cannot read the {role} image: the compressed data end early (file truncated)",
                         path=path) from exc
    except (OSError, zlib.error) as exc:
        raise InputError(f"cannot read the {role} image: the compressed data are corrupt ({_one_line(exc)})",
                         path=path) from exc


def _complete(img, stored, role, path):
    """``img`` when the ``stored`` bytes of its file hold its header and all its data; else the one-line error."""
    import numpy as np

    offset = int(getattr(img.dataobj, "offset", 0))
    needed = offset + int(np.prod(img.shape, dtype=np.int64)) * img.get_data_dtype().itemsize
    if stored < needed:
        raise InputError(f"cannot read the {role} image: the file is truncated ({stored} bytes of header and data; "
                         f"the header's shape {tuple(img.shape)} and type {img.get_data_dtype()} need {needed})",
                         path=path)
    return img


def gunzip(data, fast=None):
    """Decompress a whole gzip stream (every member, CRC and length checked).

    Parameters
    ----------
    data : bytes
    fast : bool, optional
        Use python-isal; default: when it is installed. ``False`` forces the
        standard library (the same bytes come out; the tests compare both).

    Raises
    ------
    EOFError
        The stream ends early (a truncated file).
    OSError, zlib.error
        Corrupt data or a wrong checksum.
    """
    if fast is None:
        fast = _fast_gzip is not None
    if not fast:
        return gzip.decompress(data)
    try:
        return _fast_gzip.decompress(data)
    except _fast_gzip_error as exc:  # isal's own error type: report it as zlib's
        raise zlib.error(str(exc)) from exc


def _image_in_memory(path, role):
    """A single-file ``.nii.gz`` read and decompressed once: (image whose data live in memory, bytes); else None."""
    import nibabel as nib

    if not str(path).endswith(".nii.gz"):
        return None
    with _decoding(role, path):
        raw = gunzip(read_bytes_hashed(path))
    sizes = {int.from_bytes(raw[:4], order) for order in ("little", "big")} if len(raw) >= 4 else set()
    klass = next((_SINGLE_FILE_NIFTI[s] for s in sizes if s in _SINGLE_FILE_NIFTI), None)
    if klass is None:
        return None  # not a NIfTI header: nib.load gives the message
    try:
        img = getattr(nib, klass).from_bytes(raw)
    except Exception as exc:  # nibabel raises many types for unreadable files
        raise InputError(f"cannot read the {role} image as NIfTI: {_one_line(exc)}", path=path) from exc
    img.file_map["image"].filename = str(path)  # named in messages (get_filename); the data stay in memory
    return img, len(raw)


def read_image(path, role):
    """Open a NIfTI (or Analyze) image whose data are all present and readable.

    The header is parsed and the data file read through to its end once (a
    gzip stream decompressed, its checksum checked), so a truncated or corrupt
    file fails here, not half-way through a plan. A single-file ``.nii.gz`` is
    read once and kept decompressed in memory (the returned image reads from
    there); other files stay on disk and are read on demand as usual.

    Parameters
    ----------
    path : str or Path
    role : str
        What the file is, for the message (``"BOLD"``, ``"brain mask"``, ``"T1"``).

    Returns
    -------
    nibabel.spatialimages.SpatialImage

    Raises
    ------
    InputError
        ``<path>: cannot read the <role> image: <problem>`` (one line).
    """
    import nibabel as nib

    path = _existing_file(path, role)
    in_memory = _image_in_memory(path, role)
    if in_memory is not None:
        img, stored = in_memory
        return _complete(img, stored, role, path)
    try:
        img = nib.load(path)
    except Exception as exc:  # nibabel raises many types for unreadable files
        raise InputError(f"cannot read the {role} image as NIfTI: {_one_line(exc)}", path=path) from exc
    proxy = img.dataobj
    data_file = getattr(proxy, "file_like", None)
    if not isinstance(data_file, (str, os.PathLike)):
        return img
    with _decoding(role, path):
        stored = _stored_bytes(data_file)
    return _complete(img, stored, role, path)


def _text(path, role):
    data = read_bytes_hashed(path)  # the provenance's sha256 comes from this read
    if data[:2] == b"\x1f\x8b":
        raise InputError(f"{role} file is gzip-compressed; give the uncompressed text file", path=path)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{role} file is not UTF-8 text (byte {exc.start}: {data[exc.start:exc.start + 1]!r}); "
                         "is it the right file?", path=path) from exc


def read_table(path, role, **read_csv):
    """Read a tab-separated table (BIDS TSV: header row, ``n/a`` for missing values).

    Every row must have as many fields as the header: a short row is a
    truncated or hand-edited file, not missing values.

    Parameters
    ----------
    path : str or Path
    role : str
        ``"confounds"``, ``"events"``...
    **read_csv
        Passed to :func:`pandas.read_csv` (``na_values``, ``dtype``...).

    Returns
    -------
    pandas.DataFrame

    Raises
    ------
    InputError
        Naming the file, its role and the row (counting the header as row 1).
    """
    import pandas as pd

    path = _existing_file(path, role)
    text = _text(path, role)
    lines = text.splitlines()
    header = lines[0].split("\t") if lines else []
    if not any(h.strip() for h in header):
        raise InputError(f"{role} file has no header row", path=path)
    for number, line in enumerate(lines[1:], start=2):
        fields = line.count("\t") + 1
        if line.strip() and fields != len(header):
            end = " (the file looks truncated)" if number == len(lines) and fields < len(header) else ""
            raise InputError(f"{role} row {number} has {fields} tab-separated fields but the header has "
                             f"{len(header)}{end}", path=path)
    try:
        return pd.read_csv(io.StringIO(text), sep="\t", **read_csv)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise InputError(f"{role} file is not a readable TSV: {_one_line(exc)}", path=path) from exc


def read_json(path, role="sidecar"):
    """Read a JSON object (a BIDS sidecar).

    Raises
    ------
    InputError
        Not UTF-8, not valid JSON (line and column given) or not an object.
    """
    path = _existing_file(path, role)
    text = _text(path, role)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{role} file is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                         path=path) from exc
    if not isinstance(value, dict):
        raise InputError(f"{role} file must hold a JSON object {{...}}; got {type(value).__name__}", path=path)
    return value
