"""Atomic file writing and hashing shared by every writer.

Writers never leave a half-written file: content goes to a temporary file in
the destination folder, is flushed to disk, then renamed over the final name.
"""

import hashlib
import json
import os
import tempfile
from pathlib import Path

#: sha256 of files read whole by :func:`read_bytes_hashed`, keyed by their identity (path, size, mtime, inode):
#: :func:`sha256_file` answers from here instead of reading an input a second time (issue 19: each file read once).
_DIGESTS = {}
_MAX_DIGESTS = 256


def _identity(path):
    stat = os.stat(path)
    return os.path.realpath(path), stat.st_size, stat.st_mtime_ns, stat.st_ino


def read_bytes_hashed(path):
    """A file's bytes, read once; their sha256 is remembered so :func:`sha256_file` need not read the file again."""
    key = _identity(path)
    data = Path(path).read_bytes()
    if len(data) == key[1] and _identity(path) == key:  # unchanged while it was read
        if len(_DIGESTS) >= _MAX_DIGESTS:
            _DIGESTS.clear()
        _DIGESTS[key] = hashlib.sha256(data).hexdigest()
    return data


def sha256_file(path, chunk_size=1 << 20):
    """Return the hex sha256 of a file's bytes (remembered when :func:`read_bytes_hashed` read the same file)."""
    known = _DIGESTS.get(_identity(path))
    if known is not None:
        return known
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_mode(path, directory=False):
    """Give a file made by mkstemp/mkdtemp (0600/0700) the usual permissions under the umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def write_temp(path, data, *, mode=None, durable=True):
    """Write ``data`` (bytes) to a new temporary file beside ``path``, flushed to disk.

    The caller renames it over ``path`` (``os.replace``) or removes it; a
    failure here removes it.  ``mode`` sets its permissions (default: the usual
    ones under the umask, see :func:`publish_mode`). ``durable=False`` skips
    the fsync: readers still see the old or the new file whole, but after a
    power cut the file may be lost (for files rewritten every second, such as
    a watcher's ``live.json``).

    Returns
    -------
    Path
        The temporary file, ``.<name>.<random>.tmp`` in ``path``'s folder.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        if mode is None:
            publish_mode(tmp)
        else:
            os.chmod(tmp, mode)
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp)


def write_bytes_atomic(path, data, durable=True):
    """Write ``data`` (bytes) to ``path`` atomically (temp file, fsync unless ``durable=False``, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = write_temp(path, data, durable=durable)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path, text, durable=True):
    """Write UTF-8 text with LF line ends atomically (see :func:`write_temp` for ``durable``)."""
    return write_bytes_atomic(path, text.encode("utf-8"), durable)


def write_json_atomic(path, obj):
    """Write ``obj`` as indented JSON atomically (NaN is refused: strict JSON)."""
    return write_text_atomic(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def write_nifti_atomic(path, img):
    """Save a nibabel image atomically; the suffix decides compression.

    An image read from a file (or bytes) whose stored integers carry a
    ``scl_slope``/``scl_inter`` is written with the same stored integers and
    the same scaling: nibabel alone would scale the values to float and choose
    a new integer scaling, losing precision.
    """
    import nibabel as nib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    img = _keep_stored_scaling(img)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        nib.save(img, tmp)
        publish_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _keep_stored_scaling(img):
    """The same image with its stored values as data and their scaling in the header (see write_nifti_atomic)."""
    import nibabel as nib
    import numpy as np

    proxy = img.dataobj
    if not nib.is_proxy(proxy) or not hasattr(proxy, "get_unscaled") or not isinstance(img, nib.Nifti1Image):
        return img
    slope, inter = float(proxy.slope), float(proxy.inter)
    if (slope, inter) == (1.0, 0.0) or np.dtype(proxy.dtype) != img.get_data_dtype():
        return img
    out = nib.Nifti1Image(np.asanyarray(proxy.get_unscaled()), img.affine, img.header)
    out.header.set_slope_inter(slope, inter)
    return out
