"""Registrations between EPI, T1w and MNI space with antspyx, carried with their frames.

Conventions (``../shared/specs/navigation-formats.md`` §4)
---------------------------------------------------------
* Every coordinate that enters or leaves this module is **RAS mm** (NIfTI world).
  ITK/ANTs work in **LPS**; the flip (:data:`tmstarget.spaces.D3`) is applied here
  and in :func:`tmstarget.spaces.map_points_ras`, the one ANTs point mapper.
* A registration with fixed image F and moving image M returns
  ``fwdtransforms``, the list that resamples an M image onto F's grid. As a
  *point* map that same list takes **F points to M points** (to resample, ITK
  asks for every F voxel where to read in M), so image content moves the
  opposite way to points. ``invtransforms`` resamples F images onto M and maps
  **M points to F points**.
* :class:`Transform` stores both lists under image semantics:
  ``Transform(from_space=M, to_space=F, fwd_files=fwdtransforms, ...)``.
  ``warp_image(..., direction="forward")`` uses ``fwd_files``;
  ``map_points(..., direction="forward")`` (from_space -> to_space points) uses
  ``inv_files``. Example: T1w -> MNI registration; to put an MNI target into
  the T1, call ``map_points(p_mni, t1_to_mni, "inverse")``, which applies the
  transforms that warp a T1 *image* into MNI space.
* In an ANTs list the first file is applied to a point first
  (``antsApplyTransformsToPoints -t A -t B`` maps p -> B(A(p))). ``.mat``
  files may be inverted by flag; warps and ``.h5`` composites never are (use
  the InverseWarp / the other composite file).

Determinism: every registration runs through :class:`tmstarget.anatomy.ants_process.IsolatedCall`
(a child process, ITK single-threaded, antspyx's random seed fixed), so the same inputs give
byte-identical transform files.

Size: every antspyx call of the engine lives here (image and frame conversion, transform
lists, registrations, fMRIPrep transforms, template masks), so the LPS flip and the
point-versus-image direction rule are applied in this one module.
"""

import functools
import logging
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tmstarget._fileio import write_bytes_atomic
from tmstarget.anatomy.ants_process import IsolatedCall, Ready, Then
from tmstarget.errors import InputError, OrientationError
from tmstarget.spaces import D3, map_points_ras
from tmstarget.templates import FMRIPREP_MNI_SPACE, NILEARN_MNI_SPACE

logger = logging.getLogger(__name__)

#: Space tmstarget registers to: nilearn's bundled ICBM152 2009a *symmetric* template
#: (:data:`tmstarget.templates.NILEARN_MNI_SPACE`), not fMRIPrep's MNI152NLin2009cAsym.
MNI_SPACE = NILEARN_MNI_SPACE
#: Space of fMRIPrep's MNI outputs and transforms.
FMRIPREP_SPACE = FMRIPREP_MNI_SPACE

_FMRIPREP_NAME = re.compile(r"from-([A-Za-z0-9]+)_to-([A-Za-z0-9]+)_mode-image_xfm\.h5$")


# ---------------------------------------------------------------------------
# nibabel <-> ants
# ---------------------------------------------------------------------------


def _load(img):
    import nibabel as nib

    if isinstance(img, (str, Path)):
        return nib.load(img)
    return img


def _to_ants(img):
    """nibabel image (3-D) -> ANTsImage with the same world geometry (RAS -> LPS)."""
    import ants

    img = _load(img)
    if len(img.shape) != 3:
        raise InputError(f"expected a 3-D image; got shape {img.shape}")
    affine = np.asarray(img.affine, dtype=float)
    zooms = np.sqrt(np.sum(affine[:3, :3] ** 2, axis=0))
    direction = affine[:3, :3] / zooms
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise OrientationError(
            "image affine has shear (columns not orthogonal); ITK cannot represent it. "
            "Resample the image to an orthogonal grid first."
        )
    return ants.from_numpy(
        np.asarray(img.get_fdata(dtype=np.float32)),
        origin=list(D3 @ affine[:3, 3]),
        spacing=list(zooms),
        direction=D3 @ direction,
    )


def _from_ants(aimg, dtype=np.float32):
    """ANTsImage -> nibabel Nifti1Image (LPS -> RAS)."""
    import nibabel as nib

    affine = np.eye(4)
    affine[:3, :3] = D3 @ np.asarray(aimg.direction) @ np.diag(aimg.spacing)
    affine[:3, 3] = D3 @ np.asarray(aimg.origin)
    out = nib.Nifti1Image(np.asarray(aimg.numpy()).astype(dtype), affine)
    out.set_qform(affine, code=1)
    out.set_sform(affine, code=1)
    return out


# ---------------------------------------------------------------------------
# Frame-tagged transforms
# ---------------------------------------------------------------------------


def _invertible(path):
    return str(path).endswith(".mat")


@dataclass(frozen=True)
class Transform:
    """ANTs transform lists between two named spaces (image semantics).

    Attributes
    ----------
    from_space, to_space : str
        e.g. ``"boldref"``, ``"T1w"``, ``MNI_SPACE``.
    fwd_files, fwd_invert : tuple
        antsApplyTransforms list (and invert flags) that resamples a
        ``from_space`` image onto a ``to_space`` grid; as a point map it takes
        ``to_space`` points to ``from_space`` points. Empty if unknown.
    inv_files, inv_invert : tuple
        The list that resamples a ``to_space`` image onto a ``from_space``
        grid; as a point map ``from_space`` -> ``to_space``. Empty if unknown.
    """

    from_space: str
    to_space: str
    fwd_files: tuple = ()
    fwd_invert: tuple = ()
    inv_files: tuple = ()
    inv_invert: tuple = ()

    def __post_init__(self):
        for name in ("fwd", "inv"):
            files = tuple(str(f) for f in getattr(self, f"{name}_files"))
            flags = tuple(bool(f) for f in getattr(self, f"{name}_invert"))
            if len(files) != len(flags):
                raise InputError(
                    f"{name}_files has {len(files)} entries but {name}_invert has {len(flags)}"
                )
            for path, flag in zip(files, flags):
                if flag and not _invertible(path):
                    raise InputError(
                        f"{path} cannot be inverted by flag (only .mat files can); "
                        "pass the inverse warp or the opposite composite file"
                    )
            object.__setattr__(self, f"{name}_files", files)
            object.__setattr__(self, f"{name}_invert", flags)
        if not (self.fwd_files or self.inv_files):
            raise InputError(f"transform {self.from_space} -> {self.to_space} has no files")

    def inverse(self):
        """The same registration seen from the other side (to -> from)."""
        return Transform(
            self.to_space, self.from_space, self.inv_files, self.inv_invert,
            self.fwd_files, self.fwd_invert,
        )


def compose(first, second):
    """Chain ``first`` (A -> B) and ``second`` (B -> C) into A -> C.

    Raises
    ------
    InputError
        If ``first.to_space != second.from_space``.
    """
    if first.to_space != second.from_space:
        raise InputError(
            f"cannot chain transforms: first ends in {first.to_space!r} "
            f"({first.from_space} -> {first.to_space}), second starts in "
            f"{second.from_space!r} ({second.from_space} -> {second.to_space})"
        )

    fwd_ok = bool(first.fwd_files and second.fwd_files)
    inv_ok = bool(first.inv_files and second.inv_files)
    # Points go first-listed-first: fwd maps C -> B -> A, inv maps A -> B -> C.
    return Transform(
        first.from_space,
        second.to_space,
        second.fwd_files + first.fwd_files if fwd_ok else (),
        second.fwd_invert + first.fwd_invert if fwd_ok else (),
        first.inv_files + second.inv_files if inv_ok else (),
        first.inv_invert + second.inv_invert if inv_ok else (),
    )


def _direction_lists(transform, direction, use):
    """Files/flags for ``use`` in {"image", "points"} along ``direction``."""
    if direction not in ("forward", "inverse"):
        raise InputError(f"direction must be 'forward' or 'inverse'; got {direction!r}")
    src, dst = (
        (transform.from_space, transform.to_space)
        if direction == "forward"
        else (transform.to_space, transform.from_space)
    )
    # Images from->to use fwd; points from->to use inv (points move opposite to images).
    take_fwd = (direction == "forward") == (use == "image")
    files = transform.fwd_files if take_fwd else transform.inv_files
    flags = transform.fwd_invert if take_fwd else transform.inv_invert
    if not files:
        raise InputError(
            f"transform {transform.from_space} -> {transform.to_space} cannot map {use} "
            f"from {src} to {dst}: the {'forward' if take_fwd else 'inverse'} file list is "
            f"missing (for fMRIPrep, supply from-{dst}_to-{src}_mode-image_xfm.h5)"
            if use == "points"
            else f"transform {transform.from_space} -> {transform.to_space} cannot resample "
            f"an image from {src} to {dst}: file list missing "
            f"(for fMRIPrep, supply from-{src}_to-{dst}_mode-image_xfm.h5)"
        )
    for path in files:
        if not Path(path).is_file():
            raise InputError("transform file not found", path=path)
    return list(files), list(flags), src, dst


def map_points(points_ras_mm, transform, direction="forward"):
    """Map world points through a registration, ITK/ANTs conventions exactly.

    Parameters
    ----------
    points_ras_mm : array, shape (N, 3) or (3,)
        Points in RAS mm of the source space.
    transform : Transform
    direction : "forward" or "inverse"
        ``"forward"`` maps ``from_space`` points into ``to_space``;
        ``"inverse"`` maps ``to_space`` points into ``from_space``.

    Returns
    -------
    array, same shape as ``points_ras_mm``
        RAS mm in the destination space.

    Notes
    -----
    Points move opposite to images (spec §4): the list that resamples a
    destination-space image onto the source grid is the one that carries a
    source point to the destination. So ``"forward"`` uses ``inv_files`` and
    ``"inverse"`` uses ``fwd_files``: an MNI target goes to T1 with the files
    that warp a T1 image into MNI. The files and their explicit invert flags
    go to :func:`tmstarget.spaces.map_points_ras`.
    """
    pts = np.asarray(points_ras_mm, dtype=float)
    single = pts.ndim == 1
    pts = np.atleast_2d(pts)
    if pts.ndim != 2 or pts.shape[1] != 3 or not np.all(np.isfinite(pts)):
        raise InputError(f"points must be finite (N, 3) RAS mm; got shape {np.shape(points_ras_mm)}")
    files, flags, src, dst = _direction_lists(transform, direction, "points")
    mapped = map_points_ras(pts, files, invert=flags)
    logger.debug("mapped %d points %s -> %s", len(pts), src, dst)
    return mapped[0] if single else mapped


def warp_image(img, transform, reference, direction="forward", interpolation="linear"):
    """Resample an image into another space through a registration.

    Parameters
    ----------
    img : nibabel image or path
        3-D image in the source space (``from_space`` for ``"forward"``).
    transform : Transform
    reference : nibabel image or path
        Grid (shape, affine) of the destination space.
    direction : "forward" or "inverse"
    interpolation : "linear" or "nearest"
        ``"nearest"`` for masks and labels (the output keeps the input dtype).

    Returns
    -------
    nibabel.Nifti1Image
        On ``reference``'s grid; outside the source field of view, 0.
    """
    import ants

    interpolators = {"linear": "linear", "nearest": "nearestNeighbor"}
    if interpolation not in interpolators:
        raise InputError(f"interpolation must be 'linear' or 'nearest'; got {interpolation!r}")
    img = _load(img)
    files, flags, _, _ = _direction_lists(transform, direction, "image")
    out = ants.apply_transforms(
        fixed=_to_ants(reference),
        moving=_to_ants(img),
        transformlist=files,
        whichtoinvert=flags,
        interpolator=interpolators[interpolation],
    )
    dtype = img.get_data_dtype() if interpolation == "nearest" else np.float32
    return _from_ants(out, dtype=dtype)


def save_transform(transform, out_dir, stem):
    """Copy a transform's files into ``out_dir`` (atomically) and return the copy.

    Files are named ``<stem>_fwd<i><suffix>`` / ``<stem>_inv<i><suffix>`` (the
    suffix is kept: ANTs decides what a file is from it).
    """
    out_dir = Path(out_dir)
    copies = {}
    for name in ("fwd", "inv"):
        paths = []
        for i, path in enumerate(getattr(transform, f"{name}_files")):
            suffix = "".join(Path(path).suffixes[-2:]) if path.endswith(".nii.gz") else Path(path).suffix
            dest = out_dir / f"{stem}_{name}{i}{suffix}"
            write_bytes_atomic(dest, Path(path).read_bytes())
            paths.append(str(dest))
        copies[name] = tuple(paths)
    return Transform(
        transform.from_space, transform.to_space, copies["fwd"], transform.fwd_invert,
        copies["inv"], transform.inv_invert,
    )


# ---------------------------------------------------------------------------
# Registrations
# ---------------------------------------------------------------------------


def _workdir(workdir):
    path = Path(tempfile.mkdtemp(prefix="tmstarget-xfm-")) if workdir is None else Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _from_registration(result, from_space, to_space):
    fwd = tuple(result["fwdtransforms"])
    inv = tuple(result["invtransforms"])
    return Transform(
        from_space, to_space, fwd, tuple(False for _ in fwd),
        inv, tuple(_invertible(f) for f in inv),
    )


def coregister_epi_to_t1(epi_img, t1_img, epi_space="boldref", t1_space="T1w",
                         t1_brain_mask=None, resolution_mm=2.0, workdir=None):
    """Rigid EPI -> T1 coregistration (ANTs ``Rigid``, Mattes MI).

    Parameters
    ----------
    epi_img : nibabel image or path
        3-D EPI reference (e.g. the motion reference or mean volume).
    t1_img : nibabel image or path
        The patient's T1 (same session: both in scanner world, so the search
        starts from identity, not from the centres of mass).
    epi_space, t1_space : str
        Frame names stored in the result.
    t1_brain_mask : nibabel image or path, optional
        On the T1 grid; when given the T1 is masked first (recommended: the
        scalp otherwise competes with the EPI's brain edge).
    resolution_mm : float
        The T1 is resampled (linear) to this grid for the metric only; the
        transform is still between the two images' world spaces.
    workdir : path, optional
        Where ANTs writes the transform files (default: a new temp folder;
        use :func:`save_transform` to keep them).

    Returns
    -------
    Transform
        ``from_space=epi_space``, ``to_space=t1_space``. Deterministic: run by
        :class:`~tmstarget.anatomy.ants_process.IsolatedCall` (one ITK thread, fixed seed).
    """
    return start_coregistration(epi_img, t1_img, epi_space, t1_space, t1_brain_mask, resolution_mm,
                                workdir).result()


def start_coregistration(epi_img, t1_img, epi_space="boldref", t1_space="T1w", t1_brain_mask=None,
                         resolution_mm=2.0, workdir=None):
    """:func:`coregister_epi_to_t1` started in its own process; returns at once.

    Parameters and result as :func:`coregister_epi_to_t1`.

    Returns
    -------
    IsolatedCall-like
        ``result()`` waits for the :class:`Transform` (and raises what the registration raised);
        ``cancel()`` ends it; ``seconds`` is its wall time once known.
    """
    def done(result):
        logger.info("EPI -> T1 rigid registration: %.1f s", call.seconds)
        return result

    call = IsolatedCall(_coregister, epi_img, t1_img, epi_space, t1_space, t1_brain_mask, resolution_mm, workdir)
    return Then(call, done)


def _coregister(epi_img, t1_img, epi_space, t1_space, t1_brain_mask, resolution_mm, workdir):
    import ants

    fixed = _to_ants(t1_img)
    if t1_brain_mask is not None:
        fixed = fixed * _to_ants(t1_brain_mask)
    fixed = ants.resample_image(fixed, (float(resolution_mm),) * 3, use_voxels=False, interp_type=0)
    result = ants.registration(
        fixed, _to_ants(epi_img), "Rigid", initial_transform="Identity",
        outprefix=str(_workdir(workdir) / "epi2t1_"),
    )
    return _from_registration(result, epi_space, t1_space)


@functools.lru_cache(maxsize=None)
def _nilearn_mni152(kind, resolution_mm):
    """One of nilearn's MNI152 images, loaded (and resampled by nilearn) once per process, its data read-only.

    nilearn resamples its 1-mm files on every call (0.5-2 s each at 2 mm); a plan asks for the same
    few images several times. The resampled voxels are also kept in the cache of
    :mod:`tmstarget.anatomy.t1_cache` (keyed by the nilearn and numpy versions), so later processes
    read them (the same numbers, affine and data type).
    """
    import hashlib
    import json
    from importlib.metadata import version

    import nibabel as nib

    from tmstarget.anatomy import t1_cache

    key = hashlib.sha256(json.dumps({"format": t1_cache.FORMAT, "kind": kind, "resolution_mm": resolution_mm,
                                     "nilearn": version("nilearn"), "numpy": np.__version__,
                                     "nibabel": nib.__version__}).encode()).hexdigest()
    stored = t1_cache.load("mni152", key, {"data": (3, None), "affine": (2, "f"), "dtype": (0, "U")})
    if stored is not None:
        img = nib.Nifti1Image(stored["data"], stored["affine"])
        img.set_data_dtype(np.dtype(str(stored["dtype"])))
    else:
        from nilearn import datasets

        load = {"template": datasets.load_mni152_template, "gm": datasets.load_mni152_gm_template,
                "wm": datasets.load_mni152_wm_template, "brain": datasets.load_mni152_brain_mask}[kind]
        img = load(resolution=resolution_mm)
        if isinstance(img.dataobj, np.ndarray):
            t1_cache.store("mni152", key, {"data": img.dataobj, "affine": img.affine,
                                           "dtype": np.str_(img.get_data_dtype().str)})
    if isinstance(img.dataobj, np.ndarray):
        img.dataobj.flags.writeable = False  # shared by every caller of this process
    return img


def mni_template(resolution_mm=2):
    """nilearn's bundled skull-stripped MNI152 2009 template (see :data:`MNI_SPACE`); shared, read-only data."""
    return _nilearn_mni152("template", resolution_mm)


def mni_brain_mask(resolution_mm=2):
    """nilearn's MNI152 brain mask on the :func:`mni_template` grid; shared, read-only data."""
    return _nilearn_mni152("brain", resolution_mm)


def _head_template(template, brain_mask):
    """Template with a synthetic skull (dark, 0-4 mm) and scalp (bright, 4-10 mm).

    Mutual information between a skull-stripped template and a head image
    pulls the scalp onto the brain edge (brain shrunk by ~10%); a head-like
    shell gives the affine stage the right target. Only used to initialise.
    """
    from scipy import ndimage

    data = template.numpy().copy()
    outside_mm = ndimage.distance_transform_edt(brain_mask.numpy() == 0, sampling=template.spacing)
    bright = np.percentile(data[brain_mask.numpy() > 0], 95)
    data[(outside_mm > 0) & (outside_mm <= 4)] = 0.05 * bright
    data[(outside_mm > 4) & (outside_mm <= 10)] = 0.9 * bright
    return template.new_image_like(data.astype(np.float32))


def _vertex_init(t1, brain_mask, path):
    """Translation (MNI -> T1 points) matching the top of the head and its centre.

    T1 vertex (top of the head mask) minus 10 mm of scalp/skull goes to the top
    of the template brain; x, y = centroids of the top 80 mm (T1 head) and
    70 mm (template brain). Written as an ITK .mat (LPS).
    """
    import ants
    from scipy import ndimage

    def world_ras(aimg, mask):
        ijk = np.array(np.nonzero(mask), dtype=float)
        rot = np.asarray(aimg.direction) @ np.diag(aimg.spacing)
        return D3 @ (rot @ ijk + np.asarray(aimg.origin)[:, None])

    data = t1.numpy()
    head = data > 0.1 * np.percentile(data, 99)
    labels, _ = ndimage.label(head)
    head = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
    head_ras = world_ras(t1, head)
    top = head_ras[2].max()
    slab = head_ras[:, head_ras[2] > top - 80.0]
    brain_ras = world_ras(brain_mask, brain_mask.numpy() > 0)
    btop = brain_ras[2].max()
    bslab = brain_ras[:, brain_ras[2] > btop - 70.0]
    shift_ras = np.array([
        slab[0].mean() - bslab[0].mean(),
        slab[1].mean() - bslab[1].mean(),
        (top - 10.0) - btop,
    ])
    init = ants.create_ants_transform(
        transform_type="AffineTransform", dimension=3, translation=list(D3 @ shift_ras)
    )
    ants.write_transform(init, str(path))
    return str(path)


def register_t1_to_mni(t1_img, resolution_mm=2, workdir=None, brain_only=False):
    """Nonlinear T1w -> MNI registration (affine + SyN, ANTs) at ``resolution_mm``.

    Whole head (default): resample the T1 to ``resolution_mm`` (linear);
    translation guess from the head vertex; affine to the template with a
    synthetic skull/scalp shell (Mattes MI); skull-strip the T1 with the
    template brain mask pulled back through that affine (dilated 1 voxel); ANTs
    ``SyN`` (rigid + affine + SyN, Mattes MI) of the stripped T1 to the
    skull-stripped template.

    Brain only (``brain_only=True``, a brain-extracted T1, see
    :func:`tmstarget.anatomy.t1.check_scalp`): brain to brain. Translation
    guess from the intensity centroids of the T1 and of the template brain
    (nilearn's template with nilearn's MNI brain mask applied), then ANTs
    ``SyN`` (rigid + affine + SyN) between them. The whole-head path would
    pull the missing scalp onto the brain edge (the brain comes out scaled by
    about 0.92 and MNI points move 3-5 mm).

    Parameters
    ----------
    t1_img : nibabel image or path
        T1 (RAS world): a whole head, or a brain-extracted brain with ``brain_only``.
    resolution_mm : int
        Working resolution of T1 and template (nilearn resamples its template
        to whole millimetres only).
    workdir : path, optional
        Where ANTs writes the transforms (default: a new temp folder).
    brain_only : bool
        The T1 holds the brain only (no skull, no scalp).

    Returns
    -------
    Transform
        ``from_space="T1w"``, ``to_space=MNI_SPACE``; ``fwd_files`` =
        ``[Warp, Affine]`` (resamples T1 images into MNI; maps MNI points
        into the T1), ``inv_files`` = ``[Affine (inverted), InverseWarp]``.
        Deterministic: run by :class:`~tmstarget.anatomy.ants_process.IsolatedCall`
        (one ITK thread, fixed seed), so a T1 registered before takes its
        files from the cache (:mod:`tmstarget.anatomy.t1_cache`; the same bytes).
    """
    return start_register_t1_to_mni(t1_img, resolution_mm, workdir, brain_only).result()


def start_register_t1_to_mni(t1_img, resolution_mm=2, workdir=None, brain_only=False):
    """:func:`register_t1_to_mni` started in its own process (unless cached); returns at once.

    Parameters and result as :func:`register_t1_to_mni`; the cache is looked up here and the
    computed transform kept in it when ``result()`` receives it.

    Returns
    -------
    IsolatedCall-like
        ``result()`` waits for the :class:`Transform`; ``cancel()`` ends the registration;
        ``seconds`` is its wall time once known (0 from the cache).
    """
    if isinstance(resolution_mm, bool) or not isinstance(resolution_mm, (int, np.integer)) \
            or resolution_mm < 1:
        raise InputError(f"resolution_mm must be a whole number of mm >= 1; got {resolution_mm!r}")
    from tmstarget.anatomy import t1_cache

    folder = _workdir(workdir)
    kind = "brain-to-brain" if brain_only else "whole-head"
    # a T1 registered before (same voxels, affine, parameters and code): its transform files from the cache
    params = {"resolution_mm": int(resolution_mm), "brain_only": bool(brain_only)}
    key = t1_cache.entry_key("t1_to_mni", None, params, [sys.modules[__name__]], t1_digest=t1_cache.image_digest(
        _load(t1_img)))
    cached = t1_cache.load_transform("t1_to_mni", key, folder)
    if cached is not None:
        logger.info("T1 -> MNI %s affine + SyN at %d mm: from the cache", kind, resolution_mm)
        return Ready(Transform(**cached))

    def keep(result):
        t1_cache.store_transform("t1_to_mni", key, result, folder)
        logger.info("T1 -> MNI %s affine + SyN at %d mm: %.1f s", kind, resolution_mm, call.seconds)
        return result

    call = IsolatedCall(_register_t1_to_mni, t1_img, int(resolution_mm), folder, bool(brain_only))
    return Then(call, keep)


def _centroid_init(t1, template_brain, path):
    """Translation (MNI -> T1 points) matching the intensity centroids of two brains; an ITK .mat (LPS)."""
    import ants

    def centroid_lps(aimg):
        data = np.clip(aimg.numpy(), 0, None)
        ijk = np.array(np.nonzero(data > 0), dtype=float)
        weights = data[data > 0]
        rot = np.asarray(aimg.direction) @ np.diag(aimg.spacing)
        return rot @ (ijk @ weights / weights.sum()) + np.asarray(aimg.origin)

    init = ants.create_ants_transform(transform_type="AffineTransform", dimension=3,
                                      translation=list(centroid_lps(t1) - centroid_lps(template_brain)))
    ants.write_transform(init, str(path))
    return str(path)


def _register_t1_to_mni(t1_img, resolution_mm, workdir, brain_only):
    import ants

    folder = _workdir(workdir)
    t1 = ants.resample_image(_to_ants(t1_img), (resolution_mm,) * 3, use_voxels=False, interp_type=0)
    template = _to_ants(mni_template(resolution_mm))
    brain = _to_ants(mni_brain_mask(resolution_mm))
    if brain_only:
        template_brain = template * brain
        init = _centroid_init(t1, template_brain, folder / "init_centroids.mat")
        result = ants.registration(template_brain, t1, "SyN", initial_transform=init,
                                   outprefix=str(_workdir(folder / "syn_brain") / "t1w2mni_"))
        return _from_registration(result, "T1w", MNI_SPACE)
    init = _vertex_init(t1, brain, folder / "init_translation.mat")
    affine = ants.registration(
        _head_template(template, brain), t1, "Affine", initial_transform=init,
        outprefix=str(_workdir(folder / "head_affine") / "t1w_"),
    )
    mask_t1 = ants.apply_transforms(
        t1, ants.iMath(brain, "MD", 1), affine["fwdtransforms"],
        interpolator="nearestNeighbor", whichtoinvert=[True],
    )
    result = ants.registration(
        template, t1 * mask_t1, "SyN", initial_transform=affine["fwdtransforms"][0],
        outprefix=str(_workdir(folder / "syn") / "t1w2mni_"),
    )
    return _from_registration(result, "T1w", MNI_SPACE)


def read_fmriprep_transforms(paths):
    """Frame-tagged transform from fMRIPrep ``*_from-A_to-B_mode-image_xfm.h5`` files.

    Parameters
    ----------
    paths : sequence of path
        One file, or the two opposite files of the same pair of spaces (e.g.
        ``from-T1w_to-MNI152NLin2009cAsym`` and ``from-MNI152NLin2009cAsym_to-T1w``).

    Returns
    -------
    Transform
        ``from_space``/``to_space`` of the first file; the other file, if
        given, fills the opposite list.

    Notes
    -----
    ``from-A_to-B_mode-image`` resamples A images onto B, so as a point map
    it goes **B -> A** (spec §4). An MNI point reaches the T1 through
    ``from-T1w_to-MNI152NLin2009cAsym_mode-image_xfm.h5``, i.e.
    ``map_points(p, read_fmriprep_transforms([that]), "inverse")``. The
    ``.h5`` composite is passed whole to ITK, never decomposed.
    """
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if not 1 <= len(paths) <= 2:
        raise InputError(f"give one or two fMRIPrep transform files; got {len(paths)}")
    parsed = []
    for path in paths:
        match = _FMRIPREP_NAME.search(path.name)
        if match is None:
            raise InputError(
                "not an fMRIPrep transform name; expected *_from-<A>_to-<B>_mode-image_xfm.h5",
                path=path,
            )
        if not path.is_file():
            raise InputError("transform file not found", path=path)
        parsed.append((match.group(1), match.group(2), str(path)))
    src, dst, first = parsed[0]
    inv = ()
    if len(parsed) == 2:
        if parsed[1][:2] != (dst, src):
            raise InputError(
                f"the second file must go from-{dst}_to-{src}; got "
                f"from-{parsed[1][0]}_to-{parsed[1][1]}",
                path=parsed[1][2],
            )
        inv = (parsed[1][2],)
    return Transform(src, dst, (first,), (False,), inv, tuple(False for _ in inv))


# ---------------------------------------------------------------------------
# Template masks in native space
# ---------------------------------------------------------------------------


def template_tissue_probabilities(resolution_mm=2):
    """nilearn MNI152 GM, WM and CSF probability images (CSF derived).

    CSF = clip(1 - GM - WM, 0, 1) inside the template brain mask: the
    ventricles and sulcal CSF (nilearn ships no CSF prior).

    Returns
    -------
    dict of nibabel images: ``"gm"``, ``"wm"``, ``"csf"`` on the template grid (computed once per process;
    their data are shared and read-only).
    """
    return dict(_tissue_probabilities(resolution_mm))


@functools.lru_cache(maxsize=None)
def _tissue_probabilities(resolution_mm):
    import nibabel as nib

    gm, wm = _nilearn_mni152("gm", resolution_mm), _nilearn_mni152("wm", resolution_mm)
    brain = _nilearn_mni152("brain", resolution_mm).get_fdata() > 0
    csf = (np.clip(1.0 - gm.get_fdata() - wm.get_fdata(), 0.0, 1.0) * brain).astype(np.float32)
    csf.flags.writeable = False
    return {"gm": gm, "wm": wm, "csf": nib.Nifti1Image(csf, gm.affine)}


def nuisance_masks(transform, reference, direction="inverse", wm_threshold=0.9,
                   csf_threshold=0.9, resolution_mm=2):
    """WM and CSF masks on a native grid from MNI priors.

    Parameters
    ----------
    transform : Transform
        Between the native space and :data:`MNI_SPACE` (e.g. from
        :func:`register_t1_to_mni`, or that composed with the EPI -> T1 one).
    reference : nibabel image or path
        Native grid of the masks (e.g. the BOLD reference volume).
    direction : "forward" or "inverse"
        Direction that brings MNI images into the native space: ``"inverse"``
        for a native -> MNI transform (the usual case).
    wm_threshold, csf_threshold : float
        Probability (after linear resampling) a voxel must reach.
    resolution_mm : int
        Template resolution used.

    Returns
    -------
    dict of nibabel images (uint8 0/1): ``"wm"``, ``"csf"``.

    Raises
    ------
    InputError
        If the transform does not involve MNI space, or a mask comes out empty.
    """
    template_end = transform.to_space if direction == "inverse" else transform.from_space
    if template_end != MNI_SPACE:
        raise InputError(
            f"transform {transform.from_space} -> {transform.to_space} with direction "
            f"{direction!r} does not bring {MNI_SPACE} images into native space"
        )
    import nibabel as nib

    reference = _load(reference)
    if len(reference.shape) == 4:
        reference = reference.slicer[..., 0]
    priors = template_tissue_probabilities(resolution_mm)
    masks = {}
    for name, threshold in (("wm", wm_threshold), ("csf", csf_threshold)):
        prob = warp_image(priors[name], transform, reference, direction=direction)
        mask = (prob.get_fdata() >= threshold).astype(np.uint8)
        if not mask.any():
            raise InputError(f"{name.upper()} mask is empty at probability >= {threshold}")
        masks[name] = nib.Nifti1Image(mask, reference.affine)
    return masks
