"""Coils for a plan: pose, scalp-to-cortex depth and cortical point for the target and every candidate.

:func:`place_coils` is the one call every workflow makes once a plan's
candidates are in the world of a T1 (MNI plans with an MNI-space T1, native
plans, fMRIPrep plans in T1w): scalp surface (:mod:`tmstarget.anatomy.scalp`),
tissue segmentation of that T1 (:mod:`tmstarget.anatomy.tissue`), then
:func:`tmstarget.coil.placement.place_coil` and
:func:`tmstarget.coil.placement.cortical_point` per candidate.
"""

import json
import logging
from pathlib import Path

#: The depth is the median over lines parallel to the coil axis within this distance (mm) of it: a sulcus
#: exactly on the axis would otherwise report its fundus (measured on the shared real T1 at BA46: 23.8 mm on the
#: axis, 15.6 mm as the median of the 3-mm bundle, where the T1 profile puts the brain at 16.4 mm).
CORTEX_RADIUS_MM = 3.0

logger = logging.getLogger(__name__)

_HANDLE_RULES = {"auto": "auto", "dlpfc-45": "dlpfc", "midline-posterior": "midline"}


def place_coils(result, t1_path, head_axes_ras=None, midline_ras_mm=None, t1_to_mni=None, t1_img=None, mesh=None,
                tissue=None):
    """Coil pose, scalp-to-cortex depth and cortical point on ``t1_path`` for the target and every candidate.

    The T1 must be in the same world space as the plan's candidates (MNI, or
    the T1w world of a native or fMRIPrep-T1w plan).  Its tissues are
    segmented at its own resolution (:func:`tmstarget.anatomy.tissue.segment_t1`,
    template priors through ``t1_to_mni``, or directly when the T1 is in MNI
    space); the depth is measured along the coil axis to the outer
    grey-matter boundary, and each candidate gets the tissue at its voxel and
    the nearest grey-matter point on the coil axis
    (:func:`tmstarget.coil.placement.cortical_point`).  Candidates deeper than
    the protocol's ``[coil] max_depth_mm``, or off grey matter, are flagged in
    their block; depth is warned about in ``result.qc["warnings"]`` for every
    candidate, a target off grey matter for the target.
    ``head_axes_ras``/``midline_ras_mm`` give the head frame for the handle
    rules when the T1 world is not MNI-aligned (see
    :func:`tmstarget.coil.placement.handle_direction`; :func:`tmstarget.workflows.native.head_frame`).
    ``t1_img``: the T1 already read (:func:`tmstarget.ingest.read.read_image`), else it is read here.
    The scalp surface and the tissue segmentation of a T1 already seen come from
    the cache (:mod:`tmstarget.anatomy.t1_cache`; the same numbers). ``mesh`` (the
    :func:`cached_scalp_surface`) and ``tissue`` (the :func:`cached_segment_t1`) when the caller
    already has them (e.g. computed while something else ran).

    Returns ``(coil_block, per_candidate_blocks, anatomy_block)``; each block
    is the ``coil`` dict of ``target.json`` (SimNIBS axes, RAS mm).
    """
    import time

    from tmstarget.coil.placement import place_coil
    from tmstarget.ingest.read import read_image

    params = result.protocol.coil
    handle = params.handle_angle_deg if params.handle == "angle" else _HANDLE_RULES[params.handle]
    t1_img = read_image(t1_path, "T1") if t1_img is None else t1_img
    mesh = cached_scalp_surface(t1_path, t1_img) if mesh is None else mesh
    start = time.perf_counter()
    tissue = cached_segment_t1(t1_path, t1_img, t1_to_mni) if tissue is None else tissue
    cortex = tissue.parenchyma_img()
    warnings = result.qc.setdefault("warnings", [])
    blocks = []
    for candidate in result.candidates:
        placement = place_coil(candidate.ras_mm, mesh, handle=handle, method=params.scalp_method,
                               brain_mask_img=cortex, cortex_radius_mm=CORTEX_RADIUS_MM, head_axes_ras=head_axes_ras,
                               midline_ras_mm=midline_ras_mm)
        block = coil_block(placement, candidate.ras_mm, tissue, params)
        is_target = candidate is result.candidates[0]
        warnings.extend(coil_warnings(block, "the target" if is_target else f"candidate {candidate.rank}", params,
                                      is_target))
        blocks.append(block)
    anatomy = anatomy_block(t1_path, t1_img, result.space)
    # durations are logged, not stored: two identical runs write the same target.json (issue 14 item 2)
    logger.info("tissue segmentation and coil placement: %.1f s", time.perf_counter() - start)
    anatomy["tissue"] = {**{k: v for k, v in tissue.qc.items() if k != "seconds"},
                         "priors": "MNI152 2009 (nilearn) " + ("through the T1 -> MNI registration"
                                                               if t1_to_mni is not None else "(T1 in MNI space)")}
    return blocks[0], blocks, anatomy


def coil_block(placement, target_ras_mm, tissue, params):
    """The ``coil`` block of ``target.json`` for one placement: pose, depths, cortex entry and cortical point.

    Parameters
    ----------
    placement : tmstarget.coil.placement.CoilPlacement
        With ``scalp_to_cortex_mm`` measured (median over lines within :data:`CORTEX_RADIUS_MM`).
    target_ras_mm : array-like, shape (3,)
        The candidate's fMRI point, world RAS mm of the T1.
    tissue : tmstarget.anatomy.tissue.TissueMaps
        Tissue labels of that T1.
    params : tmstarget.protocol.CoilParams
        The protocol's ``[coil]`` (``max_depth_mm``, ``max_cortical_shift_mm``).

    Returns
    -------
    dict
    """
    from tmstarget.coil.placement import cortical_point

    block = placement.to_dict()
    axis = placement.pose_ras[:3, 2]
    block["scalp_to_cortex_method"] = (
        f"along the coil axis to the outer grey-matter boundary of this T1 (median over lines within "
        f"{CORTEX_RADIUS_MM:g} mm of the axis; tissue segmentation at the T1's resolution)")
    block["cortex_entry_ras_mm"] = (placement.scalp_ras_mm + placement.scalp_to_cortex_mm * axis).tolist()
    block["max_depth_mm"] = params.max_depth_mm
    block["within_max_depth"] = bool(placement.scalp_to_cortex_mm <= params.max_depth_mm)
    block.update(cortical_point(target_ras_mm, placement.scalp_ras_mm, axis, tissue,
                                max_shift_mm=params.max_cortical_shift_mm))
    return block


def coil_warnings(block, name, params, is_target):
    """QC warnings (plain lines) for one ``coil`` block: cortex deeper than ``[coil] max_depth_mm``; for the
    target also an fMRI voxel off this T1's grey matter."""
    warnings = []
    if not block["within_max_depth"]:
        warnings.append(f"{name}: cortex {block['scalp_to_cortex_mm']:.1f} mm below the scalp, deeper than "
                        f"[coil] max_depth_mm = {params.max_depth_mm:g} mm: a figure-8 coil may not reach it")
    if is_target and not block["target_in_grey_matter"]:
        where = ("no grey matter within "
                 f"{params.max_cortical_shift_mm:g} mm on the coil axis" if block["cortical_target_ras_mm"] is None
                 else f"nearest grey matter on the coil axis {block['cortical_shift_mm']:+.1f} mm")
        warnings.append(f"{name}: the fMRI voxel lies in {block['target_tissue']} of this T1 ({where})")
    return warnings


def anatomy_block(t1_path, t1_img, space):
    """The ``anatomy`` block of ``target.json``: the T1 the coordinates refer to (file, sha256, space, xform)."""
    from tmstarget._fileio import sha256_file

    anatomy = {"t1": str(Path(t1_path).resolve()), "t1_sha256": sha256_file(t1_path), "space": space}
    xform = xform_used(t1_img)
    if xform is not None:  # navigation export refuses an --affine naming the other one (qform != sform)
        anatomy["xform"] = xform
    return anatomy


def xform_used(img):
    """The NIfTI transform behind ``img.affine``, so behind the scalp and coil: nibabel takes the sform when
    its code is > 0, else the qform. ``"qform=sform"`` when both are set and agree within 0.1 mm over the field of
    view (:func:`tmstarget.spaces.xforms_agree`); None without a NIfTI header."""
    from tmstarget.spaces import xforms_agree

    header = img.header
    if not hasattr(header, "get_sform"):
        return None
    qcode, scode = int(header["qform_code"]), int(header["sform_code"])
    if xforms_agree(img):
        return "qform=sform"
    return "sform" if scode > 0 else ("qform" if qcode > 0 else None)


def cached_scalp_surface(t1_path, t1_img, head=None, **params):
    """:func:`tmstarget.anatomy.scalp.scalp_surface` of the T1 ``t1_path`` (read as ``t1_img``), through the T1
    cache (:mod:`tmstarget.anatomy.t1_cache`); ``head``: its head mask already computed (see ``scalp_surface``)."""
    from tmstarget.anatomy import scalp, t1_cache

    key = t1_cache.entry_key("scalp", t1_path, params, [scalp])
    stored = t1_cache.load("scalp", key, {"vertices": (2, "f"), "faces": (2, "i"), "normals": (2, "f")})
    if stored is not None:
        return scalp.SurfaceMesh(stored["vertices"], stored["faces"], stored["normals"])
    mesh = scalp.scalp_surface(t1_img, head=head, **params)
    t1_cache.store("scalp", key, {"vertices": mesh.vertices_ras_mm, "faces": mesh.faces, "normals": mesh.normals_ras})
    return mesh


def cached_segment_t1(t1_path, t1_img, t1_to_mni=None):
    """:func:`tmstarget.anatomy.tissue.segment_t1` of the T1 ``t1_path`` (read as ``t1_img``), through the T1
    cache (:mod:`tmstarget.anatomy.t1_cache`).

    The key holds the bytes of every file of ``t1_to_mni`` (its invert flags and spaces too).
    """
    return start_segment_t1(t1_path, t1_img, t1_to_mni, isolated=False).result()


def start_segment_t1(t1_path, t1_img, t1_to_mni=None, isolated=True):
    """:func:`cached_segment_t1` started: from the cache, else computed in a process of its own; returns at once.

    Parameters
    ----------
    t1_path, t1_img, t1_to_mni
        As :func:`cached_segment_t1`.
    isolated : bool
        Compute a missing segmentation in a child process
        (:class:`~tmstarget.anatomy.ants_process.IsolatedCall`; this process goes on meanwhile),
        else here before returning.

    Returns
    -------
    IsolatedCall-like
        ``result()`` waits for the :class:`~tmstarget.anatomy.tissue.TissueMaps` (kept in the cache then).
    """
    import numpy as np

    from tmstarget.anatomy import scalp, t1_cache, tissue
    from tmstarget.anatomy.ants_process import IsolatedCall, Ready, Then

    transform = None if t1_to_mni is None else {
        "from": t1_to_mni.from_space, "to": t1_to_mni.to_space, "fwd_invert": t1_to_mni.fwd_invert,
        "inv_invert": t1_to_mni.inv_invert}
    files = () if t1_to_mni is None else (*t1_to_mni.fwd_files, *t1_to_mni.inv_files)
    key = t1_cache.entry_key("tissue", t1_path, {"transform": transform}, [tissue, scalp], extra=files)
    stored = t1_cache.load("tissue", key, {"labels": (3, "u"), "affine": (2, "f"), "qc": (0, "U")})
    if stored is not None:
        return Ready(tissue.TissueMaps(stored["labels"], stored["affine"], json.loads(str(stored["qc"]))))

    def keep(maps):
        t1_cache.store("tissue", key, {"labels": maps.labels, "affine": maps.affine,
                                       "qc": np.str_(json.dumps(maps.qc))})
        return maps

    if not isolated:
        return Ready(keep(tissue.segment_t1(t1_img, t1_to_mni)))

    def keep_logged(maps):
        logger.info("tissue segmentation in its own process: %.1f s", call.seconds)
        return keep(maps)

    call = IsolatedCall(tissue.segment_t1, t1_img, t1_to_mni)
    return Then(call, keep_logged)
