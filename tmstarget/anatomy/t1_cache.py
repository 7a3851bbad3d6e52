"""On-disk cache of what a T1 gives every plan: scalp surface, tissue segmentation, T1 -> MNI registration.

The same folder and machinery keep the MNI152 grey-matter probability resampled to an
analysis grid (:func:`tmstarget.analysis.rois.grey_matter_mask`: 1-2 s with nilearn's
imports, per grid, on every MNI plan otherwise), keyed by the grid and the code.
It also keeps nilearn's MNI152 images resampled to the native masks' resolution, which do not
depend on the T1 (:func:`tmstarget.anatomy.registration.mni_template`).

All three depend only on the T1, the algorithm's parameters, the code that
computes them and (for the tissues) the T1 -> MNI transform, so a plan of a T1
already seen loads them instead of computing them again (the scalp takes about
1 s, the segmentation about 4 s on a 1-mm T1, the registration about a minute).
The cached arrays and transform files are exactly the computed ones (the
registration is deterministic: seeded, one ITK thread), so a plan is
byte-identical with or without the cache.

* **Key**: sha256 of the T1 file (of its voxels and affine for the registration, which also takes images
  converted from DICOM), the parameters, the sha256 of the source
  files of the computing modules and of every module of ``tmstarget/anatomy/``
  (any code change is a new key), the numpy, scipy, scikit-image, nibabel,
  nilearn and antspyx versions, and for the tissues the bytes of every
  transform file (none: the T1 is in MNI space).
* **Where**: ``$TMSTARGET_CACHE_DIR`` when set (``off`` disables the cache),
  else ``$XDG_CACHE_HOME/tmstarget`` (default ``~/.cache/tmstarget``).
* **Safe**: an entry is written to a temporary file in the cache folder and
  renamed into place (concurrent runs each write a whole file; the last rename
  wins, with identical content); an entry that cannot be read, or whose arrays
  do not have the stored shapes, is ignored (logged) and computed again. A cache
  folder that cannot be written only costs the speed.
"""

import functools
import hashlib
import io
import json
import logging
import os
from pathlib import Path

import numpy as np

from tmstarget._fileio import sha256_file, write_bytes_atomic

logger = logging.getLogger(__name__)

ENV = "TMSTARGET_CACHE_DIR"
#: Bumped when the stored layout changes.
FORMAT = 1


def cache_dir():
    """The cache folder (:data:`ENV`, else the XDG cache folder), or None when disabled (``off``)."""
    value = os.environ.get(ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "off", "0", "none") else Path(value)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "tmstarget"


def _code_digest(modules):
    """sha256 of the modules' sources, of every module of :mod:`tmstarget.anatomy` and :mod:`tmstarget.spaces`
    (what they call), and of the library versions."""
    here = Path(__file__).resolve().parent
    sources = sorted({Path(m.__file__).resolve() for m in modules} | set(here.glob("*.py"))
                     | {here.parent / "spaces.py"})
    digest = hashlib.sha256()
    for source in sources:
        digest.update(source.name.encode() + source.read_bytes())
    digest.update(_library_versions())
    return digest.hexdigest()


@functools.cache
def _library_versions():
    """The versions of the libraries the cached results depend on (looked up once per process: ~10 ms each)."""
    from importlib.metadata import PackageNotFoundError, version

    text = ""
    for package in ("numpy", "scipy", "scikit-image", "nibabel", "nilearn", "antspyx"):
        try:
            text += f"{package} {version(package)};"
        except PackageNotFoundError:
            text += f"{package} absent;"
    return text.encode()


def entry_key(kind, t1_path, params, modules, extra=(), t1_digest=None):
    """The cache key (hex sha256) of ``kind`` computed on ``t1_path`` with ``params`` by the code of ``modules``.

    ``extra`` lists more files whose bytes the result depends on (transforms);
    ``t1_digest`` replaces the file's sha256 (a T1 given as an image). With neither
    a T1 nor its digest the entry depends on ``params`` and the code only (a template
    resampled to a grid).
    """
    t1 = t1_digest or (sha256_file(t1_path) if t1_path is not None else None)
    parts = {"format": FORMAT, "kind": kind, "t1_sha256": t1, "params": params,
             "code": _code_digest(modules), "extra": [sha256_file(path) for path in extra]}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def load(kind, key, expected):
    """The arrays stored under ``key`` (dict name -> ndarray), or None (absent, unreadable or malformed).

    ``expected`` maps each array name to ``(ndim, dtype kind)``, checked on load (a kind of None: any).
    """
    folder = cache_dir()
    if folder is None:
        return None
    path = folder / f"{kind}-{key}.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in expected}
        for name, (ndim, dtype_kind) in expected.items():
            if arrays[name].ndim != ndim or dtype_kind not in (None, arrays[name].dtype.kind):
                raise ValueError(f"{name}: shape {arrays[name].shape}, dtype {arrays[name].dtype}")
    except Exception as exc:  # a damaged or foreign entry: compute again
        logger.warning("ignoring the cache entry %s (%s); computing again", path, " ".join(str(exc).split())[:200])
        return None
    logger.info("%s loaded from the cache %s", kind, path)
    return arrays


def store(kind, key, arrays):
    """Store ``arrays`` under ``key`` (temporary file + rename); a folder that cannot be written is logged only."""
    folder = cache_dir()
    if folder is None:
        return
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(folder / f"{kind}-{key}.npz", buffer.getvalue())
    except OSError as exc:
        logger.warning("cannot write the cache folder %s (%s): the %s is not kept", folder, exc, kind)


def image_digest(img):
    """sha256 of an image's voxels (float32, as the registration reads them), shape and affine."""
    digest = hashlib.sha256()
    data = np.ascontiguousarray(img.get_fdata(dtype=np.float32))
    digest.update(f"{data.shape}".encode())
    digest.update(np.ascontiguousarray(img.affine, dtype=np.float64).tobytes())
    digest.update(data.tobytes())
    return digest.hexdigest()


def load_transform(kind, key, folder):
    """The fields of a cached :class:`~tmstarget.anatomy.registration.Transform` (a dict), its files copied into
    ``folder``; else None."""
    import shutil

    root = cache_dir()
    entry = None if root is None else root / f"{kind}-{key}"
    if entry is None or not (entry / "transform.json").is_file():
        return None
    try:
        meta = json.loads((entry / "transform.json").read_text(encoding="utf-8"))
        for relative, digest in meta["sha256"].items():
            if sha256_file(entry / relative) != digest:
                raise ValueError(f"{relative}: sha256 differs")
        for relative in meta["sha256"]:
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(entry / relative, folder / relative)
        transform = {"from_space": meta["from"], "to_space": meta["to"],
                     "fwd_files": tuple(str(folder / f) for f in meta["fwd"]), "fwd_invert": tuple(meta["fwd_invert"]),
                     "inv_files": tuple(str(folder / f) for f in meta["inv"]), "inv_invert": tuple(meta["inv_invert"])}
    except Exception as exc:  # a damaged or foreign entry: compute again
        logger.warning("ignoring the cache entry %s (%s); computing again", entry, " ".join(str(exc).split())[:200])
        return None
    logger.info("%s loaded from the cache %s", kind, entry)
    return transform


def store_transform(kind, key, transform, folder):
    """Keep ``transform``'s files (all under ``folder``) under ``key``: a temporary folder renamed into place."""
    import shutil
    import tempfile

    root = cache_dir()
    if root is None:
        return
    try:
        folder = Path(folder).resolve()
        names = {f: Path(f).resolve().relative_to(folder).as_posix()
                 for f in (*transform.fwd_files, *transform.inv_files)}
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=root))
        try:
            for source, relative in names.items():
                (staging / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, staging / relative)
            meta = {"from": transform.from_space, "to": transform.to_space,
                    "fwd": [names[f] for f in transform.fwd_files], "fwd_invert": list(transform.fwd_invert),
                    "inv": [names[f] for f in transform.inv_files], "inv_invert": list(transform.inv_invert),
                    "sha256": {relative: sha256_file(staging / relative) for relative in names.values()}}
            write_bytes_atomic(staging / "transform.json", json.dumps(meta, indent=1).encode())
            os.rename(staging, root / f"{kind}-{key}")  # atomic; a concurrent run's identical entry wins
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not (root / f"{kind}-{key}" / "transform.json").is_file():
                raise
    except (OSError, ValueError) as exc:
        logger.warning("cannot keep the %s in the cache folder %s (%s)", kind, root, exc)
