"""The E-field of a plan's coil: best pose, E-vs-angle curve, dose, and the |E| map (``tmstarget efield``).

:func:`plan_efield` (``tmstarget.plan_efield``) reads a plan folder, rebuilds its head
(:class:`tmstarget.coil.adjust.PlanHead`: scalp, tissues, head frame), and runs the spherical-head
pose search of :func:`tmstarget.efield.search.search_poses` for the plan's **cortical target**
(``coil.cortical_target_ras_mm``; the fMRI point when the coil block has none) around the planned
scalp point. It writes ``PLAN_DIR/efield.json`` and ``PLAN_DIR/efield_map.nii.gz`` (|E| for the best
pose, V/m at 100 % output, on the plan's T1 grid: brain voxels within ``map_radius_mm`` of the
target, 0 elsewhere), each atomically; ``target.json`` and the other files of the folder are never
changed. With ``apply`` the best pose becomes a new plan version (:func:`tmstarget.revise_plan`).

``efield.json`` (V/m at 100 % stimulator output with ``didt_a_per_us``; poses SimNIBS, world RAS mm):

* ``coil``, ``didt_a_per_us``, ``sphere`` (``centre_ras_mm``, ``radius_mm``, fit residual);
* ``objective``: what ``e_target_v_per_m`` is and the search maximized: |E| (default), or |E·n| with
  n the outward normal of the cortex at the target (``objective="cortex-normal"``);
* ``planned`` (``handle_angle_deg``, ``e_target_v_per_m``, ``e_magnitude_v_per_m``, ``pose``): the
  plan's pose lifted to the coil-to-scalp gap of the search (``gap_mm``, default 4 mm: hair and
  casing, as SimNIBS's default ``distance``), so planned and searched poses are judged alike;
* ``angle_curve``: the objective at the target for the planned pose turned about its own normal,
  every ``angle_step_deg`` (72 entries at 5°);
* ``best`` (``handle_angle_deg``, ``centre_ras_mm`` (coil centre), ``scalp_ras_mm``, ``pose``,
  ``e_target_v_per_m``, ``e_magnitude_v_per_m``): the largest objective over the searched poses and
  the planned pose itself;
* ``dose`` with ``rmt`` (:mod:`tmstarget.efield.dose`), ``simnibs`` (:mod:`tmstarget.efield.simnibs_run`),
  ``timing_s`` (wall time of loading the head (scalp surface, tissue segmentation), of the search, of
  the map, and in total), ``provenance``.

Handle angles are in the convention of :mod:`tmstarget.coil.adjust` (degrees from the head's
posterior direction toward the target's lateral side, about the coil normal), which the search is
given as its reference direction.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tmstarget.errors import InputError

#: Default coil of ``tmstarget efield``.
DEFAULT_COIL = "magstim-d70"
#: What the pose search maximizes (``objective``).
OBJECTIVES = ("magnitude", "cortex-normal")
EFIELD_JSON = "efield.json"
EFIELD_MAP = "efield_map.nii.gz"


@dataclass
class EfieldResult:
    """What :func:`plan_efield` computed and wrote.

    Attributes
    ----------
    document : dict
        The ``efield.json`` content.
    map_img : nibabel.Nifti1Image
        |E| (V/m) on the T1 grid.
    files : list of Path
        ``efield.json`` and ``efield_map.nii.gz``.
    revised : tmstarget.Plan or None
        The new plan version written with ``apply``.
    messages : list of str
        One line each: the SimNIBS note, dose warnings.
    search : tmstarget.efield.search.SearchResult or None
        The pose search behind ``document`` (field vectors of every pose; its angles in the search's
        own convention, :mod:`tmstarget.efield.search`).
    """

    document: dict
    map_img: object
    files: list
    revised: object = None
    messages: list = field(default_factory=list)
    search: object = None


def load_named_coil(coil, didt_a_per_us=None):
    """A coil by built-in name (``magstim-d70``, ``mc-b70``, ``cool-b65``: :func:`tmstarget.efield.coils.builtin_coil`)
    or SimNIBS ``.ccd`` path, with an optional dI/dt in A/µs."""
    from tmstarget.efield.coils import A_PER_US, load_coil

    didt = None if didt_a_per_us is None else _positive(didt_a_per_us, "didt_a_per_us") * A_PER_US
    spec = str(coil)
    if spec.lower().endswith(".ccd"):
        if not Path(spec).is_file():
            raise InputError("coil file not found", path=Path(spec))
        return load_coil(spec, didt_a_per_s=didt)
    return load_coil(spec, didt_a_per_s=didt)


def _positive(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not (
            np.isfinite(value) and value > 0):
        raise InputError(f"{name} must be a positive number; got {value!r}", key=name)
    return float(value)


def plan_efield(plan_dir, coil=DEFAULT_COIL, *, didt_a_per_us=None, rmt=None, m1_ras_mm=None, hotspot_file=None,
                objective="magnitude", apply=False, output=None, simnibs=None, m2m=None, gap_mm=4.0, radius_mm=10.0,
                angle_step_deg=5.0, map_radius_mm=25.0, map_step_mm=4.0, force=False, head=None, writers=(),
                progress=None):
    """E-field of a plan's coil in a spherical head: best pose, angle curve, dose and map; optionally SimNIBS.

    Parameters
    ----------
    plan_dir : str or Path
        A plan folder with a coil (``tmstarget plan`` with a T1).
    coil : str or Path, default="magstim-d70"
        Built-in coil name or a SimNIBS ``.ccd`` file.
    didt_a_per_us : float, optional
        dI/dt at the output the fields refer to (A/µs); default the coil's at 100 % output.
    rmt : float, optional
        Resting motor threshold, % of stimulator output (with ``m1_ras_mm`` or ``hotspot_file``): adds ``dose``.
    m1_ras_mm : array-like, shape (3,), optional
        Motor hotspot on the scalp (world RAS mm of the plan's T1; the nearest scalp point is used).
    hotspot_file : str or Path, optional
        A Localite or Brainsight file (any navigation file tmstarget reads) holding the hotspot coil pose.
    objective : {"magnitude", "cortex-normal"}
        What the search maximizes and ``e_target_v_per_m`` reports: |E|, or |E·n| with n the outward
        normal of this T1's cortex at the target (:func:`cortex_normal`; current across the cortical
        sheet, which makes the handle angle matter for a target on the coil axis). ``e_magnitude_v_per_m``
        always gives |E| (the dose uses it).
    apply : bool, default=False
        Write the best pose as a new plan version into ``output`` (:func:`tmstarget.revise_plan`).
    output : str or Path, optional
        The new plan folder for ``apply``.
    simnibs : str or Path, optional
        ``simnibs_python`` (or the SimNIBS folder); default: found on PATH.
    m2m : str or Path, optional
        The patient's SimNIBS head model (``charm``'s ``m2m_<id>`` folder): runs SimNIBS at the best pose.
    gap_mm : float, default=4.0
        Coil face to scalp, mm (applied to the planned pose too).
    radius_mm, angle_step_deg : float
        Search: coil centres within ``radius_mm`` of the planned scalp point (25 centres), handle angle step.
    map_radius_mm, map_step_mm : float
        The map covers brain voxels within ``map_radius_mm`` of the target; the field is computed every
        ``map_step_mm`` and interpolated trilinearly onto the T1's voxels.
    force : bool, default=False
        Replace a non-empty ``output`` (with ``apply``).
    head : tmstarget.coil.adjust.PlanHead, optional
        The plan's head, already loaded.
    writers : iterable of callable
        With ``apply``: more files for the new plan version (``revise_plan(writers=...)``, e.g. its report).
    progress : callable, optional
        Called with a message before each step.

    Returns
    -------
    EfieldResult

    Raises
    ------
    InputError
        A plan without coil, a bad coil or number, ``rmt`` without a hotspot (or the reverse), ``apply``
        without ``output``, an unreadable hotspot file.
    """
    from tmstarget._fileio import sha256_file, write_json_atomic, write_nifti_atomic
    from tmstarget.coil.adjust import PlanHead
    from tmstarget.efield import dose as dose_mod
    from tmstarget.efield.search import search_poses
    from tmstarget.efield.simnibs_run import simnibs_block

    def say(message):
        if progress is not None:
            progress(message)

    start = time.perf_counter()
    plan_dir = Path(plan_dir)
    if (rmt is None) != (m1_ras_mm is None and hotspot_file is None):
        raise InputError("the dose needs both the resting motor threshold (rmt) and the motor hotspot "
                         "(m1_ras_mm or hotspot_file)", key="rmt")
    if m1_ras_mm is not None and hotspot_file is not None:
        raise InputError("give the motor hotspot once: m1_ras_mm or hotspot_file", key="m1_ras_mm")
    if rmt is not None and not 0 < _positive(rmt, "rmt") <= 100:
        raise InputError(f"rmt is a percentage of stimulator output (0-100]; got {rmt!r}", key="rmt")
    if apply and output is None:
        raise InputError("apply writes a new plan version: give its output folder", key="output")
    if apply:  # refused before anything is computed or written
        from tmstarget.outputs.plan_folder import check_output_dir

        check_output_dir(output, force, (plan_dir,))
    if objective not in OBJECTIVES:
        raise InputError(f"objective must be one of {', '.join(OBJECTIVES)}; got {objective!r}", key="objective")
    gap_mm = float(gap_mm)
    coil_model = load_named_coil(coil, didt_a_per_us)
    say("loading the plan's head (scalp, tissues)")
    head = PlanHead(plan_dir) if head is None else head
    block = head.plan.coil
    target, target_source = _cortical_target(head)
    reference = -head.frame.axes_ras[:, 1]
    direction = cortex_normal(head.tissue, target) if objective == "cortex-normal" else None
    say(f"searching coil poses ({coil_model.name}, {coil_model.n_dipoles} dipoles)")
    head_s, search_start = time.perf_counter() - start, time.perf_counter()
    result = search_poses(coil_model, target, head.mesh, block["matrix"], block["scalp_ras_mm"], radius_mm=radius_mm,
                          gap_mm=gap_mm, angle_step_deg=angle_step_deg, reference_ras=reference,
                          direction_ras=direction)
    search_s = time.perf_counter() - search_start
    document = _document(result, head, target, target_source, gap_mm, coil_model, direction)
    best_pose = np.asarray(document["best"]["pose"], dtype=float)
    say("mapping |E| around the target")
    map_start = time.perf_counter()
    map_img = efield_map(coil_model, best_pose, head, target, result.sphere, radius_mm=map_radius_mm,
                         step_mm=map_step_mm)
    map_s = time.perf_counter() - map_start
    messages = []
    if rmt is not None:
        say("dose: motor hotspot depth and field")
        hotspot = dose_mod.motor_hotspot(head, m1_ras_mm=m1_ras_mm, hotspot_file=hotspot_file)
        document["dose"] = dose_mod.dose_block(coil_model, head, hotspot, document, float(rmt), gap_mm=gap_mm,
                                               prescription=head.plan.protocol.prescription.intensity_percent_rmt)
        messages.extend(document["dose"]["warnings"])
    document["simnibs"] = simnibs_block(simnibs, m2m, best_pose, coil, coil_model, target,
                                        document["best"]["e_magnitude_v_per_m"])
    if document["simnibs"].get("note"):
        messages.append(document["simnibs"]["note"])
    document["timing_s"] = {"head": round(head_s, 3), "search": round(search_s, 3), "map": round(map_s, 3),
                            "total": round(time.perf_counter() - start, 3)}
    document["provenance"] = {
        "generated_by": f"tmstarget {_version()}",
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "plan_target_json_sha256": sha256_file(plan_dir / "target.json"),
        "t1": head.plan.anatomy["t1"] if not Path(head.plan.anatomy["t1"]).is_absolute() else head.t1_path.name,
        "t1_sha256": head.plan.anatomy["t1_sha256"],
        "model": "spherical head fitted to the local scalp; magnetic-dipole coil; Heller & van Hulsteyn 1992 "
                 "(tmstarget.efield.sphere)",
        "coil_source": coil_model.source,
        "didt_source": coil_model.didt_source,
        "handle_angle_convention": "degrees about the coil normal from the head's posterior direction toward the "
                                   "target's lateral side (tmstarget.coil.adjust)",
        "head_frame": head.frame.source,
    }
    files = [plan_dir / EFIELD_JSON, plan_dir / EFIELD_MAP]
    write_nifti_atomic(files[1], map_img)
    write_json_atomic(files[0], document)
    revised = None
    if apply:
        from tmstarget.outputs.revise import revise_plan

        say("writing the best pose as a new plan version")
        revised = revise_plan(plan_dir, output, pose=best_pose, force=force, head=head, writers=writers, reason=(
            f"E-field best pose ({objective}): {document['best']['e_target_v_per_m']:.1f} V/m at the cortical target "
            f"against {document['planned']['e_target_v_per_m']:.1f} V/m planned ({coil_model.name}, spherical head; "
            f"efield.json sha256 {sha256_file(files[0])})"))
    return EfieldResult(document, map_img, files, revised, messages, result)


def _cortical_target(head):
    block = head.plan.coil
    point = block.get("cortical_target_ras_mm")
    if point is None:
        return head.target_ras_mm, "target.ras_mm (the coil block gives no cortical target)"
    return np.asarray(point, dtype=float), "coil.cortical_target_ras_mm"


def _document(result, head, target, target_source, gap_mm, coil_model, direction=None):
    """``efield.json`` without dose, simnibs, timing and provenance; angles in the adjust convention.

    ``planned`` is the search's planned pose: the plan's orientation, its centre ``gap_mm`` above
    the planned scalp point along its own axis.
    """
    frame, fmri, planned = head.frame, head.target_ras_mm, np.asarray(result.planned_pose_ras, dtype=float)
    side = frame.side(fmri)

    def value(e):
        return float(np.linalg.norm(e) if direction is None else abs(np.asarray(e) @ direction))

    curve = []
    for angle, e in zip(result.curve_angles_deg, result.curve_e_ras_v_per_m):
        curve.append((_wrap(-side * float(angle)), value(e)))  # search: about the outward normal (-z)
    curve.sort()
    c, _ = result.best_index
    best_pose, best_e, best_scalp = result.best_pose_ras, result.best_e_ras_v_per_m, result.candidates.scalp_ras_mm[c]
    if value(result.planned_e_ras_v_per_m) > value(best_e):  # the planned pose (off the 5° grid) was not beaten
        best_pose, best_e = planned, result.planned_e_ras_v_per_m
        best_scalp = np.asarray(head.plan.coil["scalp_ras_mm"], dtype=float)
    return {
        "coil": coil_model.name,
        "didt_a_per_us": result.didt_a_per_s / 1e6,
        "sphere": result.sphere.as_dict(),
        "target_ras_mm": [float(v) for v in target],
        "target_source": target_source,
        "objective": ({"name": "magnitude", "e_target_v_per_m": "|E|"} if direction is None else
                      {"name": "cortex-normal", "e_target_v_per_m": "|E . n|, n the outward cortical normal",
                       "direction_ras": [float(v) for v in direction]}),
        "gap_mm": gap_mm,
        "planned": {"handle_angle_deg": frame.angle_of(planned, fmri),
                    "e_target_v_per_m": value(result.planned_e_ras_v_per_m),
                    "e_magnitude_v_per_m": float(np.linalg.norm(result.planned_e_ras_v_per_m)),
                    "pose": planned.tolist()},
        "angle_curve": [{"handle_angle_deg": angle, "e_target_v_per_m": e} for angle, e in curve],
        "best": {"handle_angle_deg": frame.angle_of(best_pose, fmri), "centre_ras_mm": best_pose[:3, 3].tolist(),
                 "scalp_ras_mm": [float(v) for v in best_scalp], "pose": np.asarray(best_pose).tolist(),
                 "e_target_v_per_m": value(best_e), "e_magnitude_v_per_m": float(np.linalg.norm(best_e))},
        "search": {"n_centres": int(len(result.candidates.scalp_ras_mm)),
                   "n_angles": int(len(result.candidates.angles_deg)), "n_dipoles": int(coil_model.n_dipoles)},
    }


def cortex_normal(tissue, point_ras_mm, sigma_mm=2.0, half_mm=10.0):
    """Outward unit normal of the cortex (grey or white matter of this T1) at a point.

    Minus the gradient of the brain mask smoothed with a Gaussian of ``sigma_mm``, evaluated at the
    point on a crop of ``half_mm`` around it, in world RAS.

    Raises
    ------
    InputError
        No cortex boundary near the point (a flat smoothed mask there).
    """
    from nibabel.affines import apply_affine
    from scipy import ndimage

    affine = tissue.affine
    voxel = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    centre = apply_affine(np.linalg.inv(affine), point_ras_mm)
    half = np.ceil(half_mm / voxel).astype(int)
    lo = np.maximum(np.round(centre).astype(int) - half, 0)
    hi = np.minimum(np.round(centre).astype(int) + half + 1, tissue.labels.shape)
    crop = tissue.parenchyma[tuple(slice(a, b) for a, b in zip(lo, hi))].astype(float)
    smooth = ndimage.gaussian_filter(crop, sigma_mm / voxel, mode="nearest")
    gradient_ijk = np.array([ndimage.map_coordinates(np.gradient(smooth, axis=d), (centre - lo)[:, None], order=1,
                                                     mode="nearest")[0] for d in range(3)])
    gradient = np.linalg.inv(affine[:3, :3]).T @ gradient_ijk  # d/d(world) of the mask
    norm = np.linalg.norm(gradient)
    if not np.isfinite(norm) or norm < 1e-3:
        raise InputError(f"no cortical surface near {np.round(point_ras_mm, 1).tolist()} RAS mm to take a normal from")
    return -gradient / norm


def _wrap(angle):
    angle = (angle + 180.0) % 360.0 - 180.0
    return 180.0 if angle == -180.0 else angle


def efield_map(coil, pose, head, target, sphere, *, radius_mm=25.0, step_mm=4.0):
    """|E| (V/m) on the plan's T1 grid: brain voxels (grey or white matter) within ``radius_mm`` of ``target``.

    The field is computed on a lattice of every ``step_mm`` (in voxels of the T1, rounded) and
    interpolated trilinearly onto the voxels; voxels outside the brain, the ball or the sphere are 0.

    Returns
    -------
    nibabel.Nifti1Image
        float32, the T1's shape and affine.
    """
    from nibabel.affines import apply_affine
    from scipy import ndimage

    from tmstarget.efield.sphere import efield_at_points

    affine, shape = head.t1_img.affine, head.t1_img.shape[:3]
    voxel = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    step = np.maximum(1, np.round(step_mm / voxel)).astype(int)
    centre = apply_affine(np.linalg.inv(affine), target)
    half = np.ceil(radius_mm / voxel).astype(int)
    lo = np.maximum(np.floor(centre).astype(int) - half, 0)
    hi = np.minimum(np.ceil(centre).astype(int) + half, np.array(shape) - 1)
    out = np.zeros(shape, dtype=np.float32)
    if np.any(hi < lo):
        return _like_t1(out, head.t1_img)
    axes = [np.arange(lo[d], hi[d] + step[d], step[d]) for d in range(3)]
    lattice = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    world = apply_affine(affine, lattice)
    near = np.linalg.norm(world - target, axis=1) <= radius_mm + step_mm * np.sqrt(3)
    norm = np.zeros(len(lattice))
    e = efield_at_points(coil, pose, world[near], sphere)
    norm[near] = np.nan_to_num(np.linalg.norm(e, axis=1), nan=0.0)
    norm = norm.reshape([len(a) for a in axes])
    box = np.stack(np.meshgrid(*[np.arange(lo[d], hi[d] + 1) for d in range(3)], indexing="ij"), axis=-1).reshape(-1, 3)
    box_world = apply_affine(affine, box)
    tissue = head.tissue
    tijk = np.round(apply_affine(np.linalg.inv(tissue.affine), box_world)).astype(int)
    inside_crop = np.all((tijk >= 0) & (tijk < tissue.labels.shape), axis=1)
    brain = np.zeros(len(box), dtype=bool)
    brain[inside_crop] = tissue.parenchyma[tuple(tijk[inside_crop].T)]
    keep = brain & (np.linalg.norm(box_world - target, axis=1) <= radius_mm) & (
        np.linalg.norm(box_world - sphere.centre_ras_mm, axis=1) < sphere.radius_mm)
    coords = ((box[keep] - lo) / step).T
    out[tuple(box[keep].T)] = ndimage.map_coordinates(norm, coords, order=1, mode="nearest")
    return _like_t1(out, head.t1_img)


def _like_t1(data, t1_img):
    """float32 image with the T1's affine, qform and sform (codes kept), no intensity scaling."""
    import nibabel as nib

    header = t1_img.header.copy()
    header.set_data_dtype(np.float32)
    header.set_slope_inter(1.0, 0.0)
    header["descrip"] = b"|E| V/m at 100% output, tmstarget efield"
    img = nib.Nifti1Image(data, t1_img.affine, header)
    img.set_qform(t1_img.get_qform(), int(t1_img.header["qform_code"]))
    img.set_sform(t1_img.get_sform(), int(t1_img.header["sform_code"]))
    return img


def _version():
    from tmstarget import __version__

    return __version__
