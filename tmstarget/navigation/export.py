"""Export a plan folder to navigation files.

``export_plan(plan_dir, formats, output_dir, t1_choice)`` reads
``PLAN_DIR/target.json``, checks the T1 (sha256 recomputed and compared,
qform/sform per spec §5.2), checks every pose (rigid, centre within the
T1's field of view + 50 mm, normal pointing into the head), then writes each
format into a staging folder (each file verified by reading it back) and
moves the files into place only when all succeeded.

Plans without a coil pose
-------------------------
When ``target.json`` has no ``coil`` block the target is exported as a
**position only** (the cortical target, RAS mm) in the formats that can
hold one (Slicer ``.mrk.json`` without orientation, ``.fcsv``, SimNIBS
``Generic`` row, BIDS ``target_*`` with n/a pose columns, plain CSV/JSON).
Formats that always carry an orientation (Localite, Brainsight, ANT) are
refused when asked for by name, and skipped (reported) under ``all``:
tmstarget never invents a coil orientation a clinician could follow.

Coil and cortex
---------------
Where the format can show two markers, each coil pose is written as
``"<name> coil"`` followed by ``"<name> cortex"``, the cortical target
(:func:`with_cortex_markers`; the mode per format is
:attr:`FormatSpec.cortex`): Localite and Brainsight get a second marker /
target with the coil's orientation at the cortical point, Slicer
(``.mrk.json``, ``.fcsv``) a second control point, SimNIBS a ``Generic`` row
(never a second ``CoilPos``, which SimNIBS would simulate).  ANT visor2's
``.mrk`` holds coil targets only, so the cortical target goes into its
``SourceInfo`` (``CorticalTargetsRAS``) and the coil target keeps the plan's
name; BIDS and the plain CSV/JSON carry it in the same row (``target_*``).

qform and sform
---------------
They agree when every corner of the T1's field of view maps within 0.1 mm
(spec §5.2); the sform is then used and the measured difference recorded in
every ``<file>.provenance.json`` (``xform``, ``affine_used``,
``qform_sform_max_difference_mm``).  Further apart, the export is refused
unless ``t1_choice`` (``--affine``) names the transform.  With a choice, a
navigator known to read the *other* transform (ANT visor2 and SimNIBS: qform;
Slicer: ITK's rule; Brainsight 12: qform) is refused when asked for by name,
and under ``all`` it is skipped and reported in ``ExportResult.skipped`` (one
reason per format) while every valid format is written.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tmstarget._fileio import sha256_file
from tmstarget.errors import InputError, NavigationFormatError, OrientationError, OutputError
from tmstarget.navigation._common import NavTarget, check_navigator_xform, load_t1_reference
from tmstarget.navigation.bids import bids_sidecar_paths
from tmstarget.navigation.formats import FORMATS, normalize_formats
from tmstarget.navigation.localite import localite_marker_filename
from tmstarget.navigation.markers import (
    check_head_geometry,
    head_centroid_ras,
    plan_markers,
    with_cortex_markers,
)
from tmstarget.spaces import angle_between_deg, validate_pose

__all__ = [
    "export_plan",
    "load_plan",
    "Plan",
    "ExportResult",
    "plan_markers",
    "check_head_geometry",
    "with_cortex_markers",
]

HANDLE_TOL_DEG = 1.0
KNOWN_SPACES = {
    "T1w",
    "MNI152NLin2009cAsym",
    "MNI152NLin2009cSym",
    "MNI152NLin2009aSym",
    "MNI152NLin6Asym",
    "MNI152NLin6Sym",
    "MNI152Lin",
    "MNI305",
    "MNIColin27",
}


@dataclass(frozen=True)
class Plan:
    """The parts of ``target.json`` the navigation export uses."""

    plan_dir: Path
    target_json: Path
    protocol: str
    space: str
    participant: str
    target: NavTarget
    candidates: tuple
    t1_path: Path
    t1_sha256: str
    anatomy_xform: str | None
    raw: dict = field(repr=False)

    @property
    def markers(self):
        return plan_markers(self)


@dataclass
class ExportResult:
    """What :func:`export_plan` wrote.

    Attributes
    ----------
    output_dir : Path
    files : dict
        Format key → list of written paths (provenance sidecars included).
    skipped : dict
        Format key → reason (only under ``all``: no coil pose, or a navigator
        that reads the T1 transform the coordinates do not refer to).
    markers : list of str
    warnings : list of str
    """

    output_dir: Path
    files: dict
    skipped: dict
    markers: list
    warnings: list

    def all_files(self):
        return [p for paths in self.files.values() for p in paths]


def _err(msg, path, key=None):
    return InputError(msg, path=path, key=key)


def _vec3(value, path, key):
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise _err(f"must be a list of 3 numbers; got {value!r}", path, key)
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _err(f"must hold finite numbers; got {value!r}", path, key)
        out.append(float(v))
    return np.array(out)


def _coil_pose(coil, path, key):
    """Validate a ``coil`` block; return (pose_ras, scalp_to_cortex_mm)."""
    if not isinstance(coil, dict):
        raise _err("must be an object", path, key)
    convention = coil.get("convention")
    if convention != "simnibs":
        raise _err(
            f"convention = {convention!r}; tmstarget only exports poses stored in the SimNIBS "
            "convention ('simnibs': z into the head, y away from the handle)",
            path,
            f"{key}.convention",
        )
    matrix = coil.get("matrix")
    try:
        arr = np.array(matrix, dtype=float)
    except (TypeError, ValueError):
        raise _err("matrix must be a 4x4 list of numbers", path, f"{key}.matrix") from None
    try:
        pose = validate_pose(arr, what=f"{key}.matrix")
    except OrientationError as exc:
        raise type(exc)(exc.message, path=path, key=f"{key}.matrix") from None
    if "centre_ras_mm" in coil:
        centre = _vec3(coil["centre_ras_mm"], path, f"{key}.centre_ras_mm")
        if np.linalg.norm(centre - pose[:3, 3]) > 0.01:
            raise _err(
                f"centre_ras_mm {centre.tolist()} disagrees with the matrix centre "
                f"{pose[:3, 3].tolist()}",
                path,
                f"{key}.centre_ras_mm",
            )
    if "handle_direction" in coil:
        # The handle may be given before or after projection into the coil plane:
        # compare its in-plane part with -y (catches the y / -y confusion, 180 deg).
        handle = _vec3(coil["handle_direction"], path, f"{key}.handle_direction")
        z = pose[:3, 2]
        in_plane = handle - float(handle @ z) * z
        if np.linalg.norm(in_plane) < 1e-6 * max(np.linalg.norm(handle), 1.0):
            raise _err(
                "handle_direction has no component in the coil plane (zero or parallel to the "
                "coil normal)",
                path,
                f"{key}.handle_direction",
            )
        ang = angle_between_deg(in_plane, -pose[:3, 1])
        if ang > HANDLE_TOL_DEG:
            raise _err(
                f"handle_direction {handle.tolist()} is {ang:.1f} deg (in the coil plane) from "
                "the matrix handle -y = " + str((-pose[:3, 1]).round(6).tolist()) + "; in the "
                "SimNIBS convention the handle is -y (y points away from the handle)",
                path,
                f"{key}.handle_direction",
            )
    dist = coil.get("scalp_to_cortex_mm")
    if dist is not None and (isinstance(dist, bool) or not isinstance(dist, (int, float))):
        raise _err("scalp_to_cortex_mm must be a number", path, f"{key}.scalp_to_cortex_mm")
    return pose, (None if dist is None else float(dist))


def _info(entry, path, key):
    info = {}
    if "ras_mm" in entry:
        info["cortex_ras_mm"] = _vec3(entry["ras_mm"], path, f"{key}.ras_mm").tolist()
    if entry.get("mni_mm") is not None:
        info["mni_mm"] = _vec3(entry["mni_mm"], path, f"{key}.mni_mm").tolist()
    for name in ("score", "method", "rank"):
        value = entry.get(name)
        if value is not None:
            if isinstance(value, float) and not math.isfinite(value):
                continue
            info[name] = value
    return info


def _refuse_constant(name):
    raise ValueError(f"JSON constant {name} (NaN/Infinity) is not allowed")


def load_plan(plan_dir):
    """Read and validate ``PLAN_DIR/target.json`` (see module docstring)."""
    plan_dir = Path(plan_dir)
    path = plan_dir / "target.json"
    if not path.is_file():
        raise InputError(
            "no target.json in the plan folder (run 'tmstarget plan' first)", path=plan_dir
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"not valid JSON: {exc}", path=path) from exc
    if not isinstance(raw, dict):
        raise InputError("top level must be an object", path=path)
    for key in ("protocol", "space", "target", "anatomy"):
        if key not in raw:
            raise _err("required key missing", path, key)
    space = raw["space"]
    if space not in KNOWN_SPACES:
        raise _err(
            f"space {space!r} is not a known space name ({', '.join(sorted(KNOWN_SPACES))}); "
            "bare 'MNI' is ambiguous",
            path,
            "space",
        )
    anatomy = raw["anatomy"]
    if not isinstance(anatomy, dict) or not anatomy.get("t1") or not anatomy.get("t1_sha256"):
        raise _err("anatomy must give 't1' (path) and 't1_sha256'", path, "anatomy")
    t1_path = Path(anatomy["t1"])
    if not t1_path.is_absolute():
        t1_path = plan_dir / t1_path
    anatomy_xform = anatomy.get("xform")
    if anatomy_xform not in (None, "qform", "sform", "qform=sform"):
        raise _err("xform must be 'qform', 'sform' or 'qform=sform'", path, "anatomy.xform")

    target = raw["target"]
    if not isinstance(target, dict):
        raise _err("must be an object", path, "target")
    name = target.get("name") or f"{raw['protocol']}-1"
    info = _info(target, path, "target")
    info.setdefault("rank", 1)
    coil = raw.get("coil")
    if coil is not None:
        pose, dist = _coil_pose(coil, path, "coil")
        if dist is not None:
            info["scalp_to_cortex_mm"] = dist
        tgt = NavTarget(str(name), pose, kind="target", info=info)
    else:
        if "cortex_ras_mm" not in info:
            raise _err("target.ras_mm is required", path, "target.ras_mm")
        tgt = NavTarget(
            str(name), None, position_ras_mm=info["cortex_ras_mm"], kind="target", info=info
        )

    candidates = []
    for i, cand in enumerate(raw.get("candidates") or []):
        key = f"candidates[{i}]"
        if not isinstance(cand, dict):
            raise _err("must be an object", path, key)
        cinfo = _info(cand, path, key)
        cname = str(cand.get("name") or f"candidate-{cand.get('rank', i + 1)}")
        if cand.get("coil") is not None:
            pose, dist = _coil_pose(cand["coil"], path, f"{key}.coil")
            if dist is not None:
                cinfo["scalp_to_cortex_mm"] = dist
            candidates.append(NavTarget(cname, pose, kind="candidate", info=cinfo))
        elif "cortex_ras_mm" in cinfo:
            candidates.append(
                NavTarget(
                    cname,
                    None,
                    position_ras_mm=cinfo["cortex_ras_mm"],
                    kind="candidate",
                    info=cinfo,
                )
            )
        else:
            raise _err("needs ras_mm or a coil pose", path, key)
    return Plan(
        plan_dir=plan_dir,
        target_json=path,
        protocol=str(raw["protocol"]),
        space=space,
        participant=str(raw.get("participant") or "unknown"),
        target=tgt,
        candidates=tuple(candidates),
        t1_path=t1_path,
        t1_sha256=str(anatomy["t1_sha256"]).lower(),
        anatomy_xform=anatomy_xform,
        raw=raw,
    )


def _dest_name(fmt, participant, localite_name):
    sub = f"sub-{participant}"
    return {
        "localite": Path("localite") / localite_name,
        "brainsight": Path(f"{sub}_brainsight_targets.txt"),
        "ant": Path(f"{sub}_ant_targets.mrk"),
        "slicer": Path(f"{sub}_slicer_targets.mrk.json"),
        "fcsv": Path(f"{sub}_slicer_targets.fcsv"),
        "simnibs": Path(f"{sub}_simnibs_positions.csv"),
        "csv": Path(f"{sub}_candidates.csv"),
        "json": Path(f"{sub}_candidates.json"),
    }.get(fmt)


def _bids_name(participant, protocol):
    task = "".join(ch for ch in protocol if ch.isalnum()) or "tms"
    label = "".join(ch for ch in participant if ch.isalnum()) or "unknown"
    return Path("nibs") / f"sub-{label}_task-{task}_stimsys-tms_markers.tsv"


def _outputs(rel):
    """All files a writer creates for main file ``rel`` (relative paths)."""
    out = [rel, rel.with_name(rel.name + ".provenance.json")]
    if rel.name.endswith("_markers.tsv"):
        out += list(bids_sidecar_paths(rel))
    return out


def export_plan(
    plan_dir,
    formats,
    output_dir=None,
    t1_choice=None,
    *,
    localite_space="RAS",
    force=False,
    brainsight_version=None,
    dry_run=False,
    when=None,
):
    """Write a plan's target (and candidates with poses) in navigation formats.

    Parameters
    ----------
    plan_dir : str or Path
        Folder with ``target.json``.
    formats : str or list of str
        Format keys (:data:`FORMATS`) or ``"all"``.
    output_dir : str or Path, optional
        Default ``PLAN_DIR/navigation``.
    t1_choice : {None, "qform", "sform"}
        Which T1 transform the plan's coordinates refer to, required only when
        qform and sform differ (recorded in every provenance file).
    localite_space : {"RAS", "LPS"}
    force : bool
        Replace existing files (otherwise refused, nothing written).
    brainsight_version : {None, 12, 14}
        Default 12 when qform == sform, 14 (``NIfTI:Q|S:``) when they differ.
    dry_run : bool
        Run every check and return the files that would be written, writing none
        (:func:`prepare_export` then :func:`write_export` do both halves without repeating the checks).
    when : datetime, optional
        Time stamp of the Localite file name (default now).

    Returns
    -------
    ExportResult

    Raises
    ------
    InputError, OrientationError (incl. XformMismatchError, InvalidPoseError),
    NavigationFormatError, OutputError
        Nothing is written when any check or any format fails.
    """
    prepared = prepare_export(plan_dir, formats, output_dir, t1_choice, localite_space=localite_space, force=force,
                              brainsight_version=brainsight_version, when=when)
    return prepared.result() if dry_run else write_export(prepared)


@dataclass
class PreparedExport:
    """Everything :func:`export_plan` checks and computes before it writes (:func:`prepare_export`).

    ``result()`` is what a dry run returns; :func:`write_export` writes the files
    without reading the plan's T1 again (its sha256, qform/sform check and head
    centroid are done once here).
    """

    plan: Plan
    output_dir: Path
    t1ref: object
    jobs: list
    skipped: dict
    markers: list
    warnings: list
    options: dict
    force: bool

    def result(self, files=None):
        """The :class:`ExportResult` (the files that will be, or were, written)."""
        if files is None:
            files = {k: [self.output_dir / out for out in _outputs(rel)] for k, rel, _ in self.jobs}
        return ExportResult(output_dir=self.output_dir, files=files, skipped=self.skipped,
                            markers=[m.name for m in self.markers], warnings=self.warnings)


def prepare_export(plan_dir, formats, output_dir=None, t1_choice=None, *, localite_space="RAS", force=False,
                   brainsight_version=None, when=None):
    """Every check of :func:`export_plan` (same parameters), nothing written: a :class:`PreparedExport`."""
    plan = load_plan(plan_dir)
    keys, from_all = normalize_formats(formats)
    if localite_space not in ("RAS", "LPS"):
        raise InputError(f"localite space must be RAS or LPS; got {localite_space!r}")
    output_dir = Path(output_dir) if output_dir is not None else plan.plan_dir / "navigation"

    t1ref = load_t1_reference(plan.t1_path, t1_choice, expected_sha256=plan.t1_sha256)
    if plan.anatomy_xform in ("qform", "sform") and not t1ref.agree:
        if t1ref.xform.xform != plan.anatomy_xform:
            raise OrientationError(
                f"the plan says its coordinates refer to the T1 {plan.anatomy_xform}, but "
                f"--affine {t1ref.xform.xform} was chosen and the two differ by "
                f"{t1ref.xform.max_difference_mm:.2f} mm"
            )

    warnings_out = []
    skipped = {}
    if not plan.target.has_pose:
        pose_keys = [k for k in keys if FORMATS[k].pose_required]
        if pose_keys and not from_all:
            raise NavigationFormatError(
                f"the plan has no coil pose (no 'coil' block in target.json), and "
                f"{', '.join(pose_keys)} store a full coil orientation; tmstarget does not invent "
                "one. Plan with a scalp coil pose, or export position-only formats "
                "(slicer, fcsv, simnibs, bids, csv, json)"
            )
        for k in pose_keys:
            skipped[k] = "plan has no coil pose (position-only plan)"
        keys = [k for k in keys if k not in pose_keys]
        warnings_out.append(
            "plan has no coil pose: exported the cortical target position only"
            + (f"; skipped {', '.join(pose_keys)}" if pose_keys else "")
        )

    nav_markers = plan_markers(plan)
    all_markers = plan_markers(plan, all_candidates=True)
    centroid = None
    if any(m.has_pose for m in all_markers):
        centroid = head_centroid_ras(plan.t1_path, t1ref.affine)
    cortex = {
        m.name: np.array(m.info["cortex_ras_mm"])
        for m in all_markers
        if m.has_pose and "cortex_ras_mm" in m.info
    }
    check_head_geometry(all_markers, t1ref, centroid, cortex)

    if brainsight_version is None:
        brainsight_version = 12 if t1ref.agree else 14
    if from_all:
        # an all-formats request writes what is valid: a navigator that reads the other transform is reported
        for k in list(keys):
            try:
                check_navigator_xform(t1ref, f"brainsight{brainsight_version}" if k == "brainsight" else k)
            except NavigationFormatError as exc:
                skipped[k] = exc.message
                keys.remove(k)
    localite_name = localite_marker_filename(when)

    jobs = []
    for k in keys:
        rel = (
            _bids_name(plan.participant, plan.protocol)
            if k == "bids"
            else _dest_name(k, plan.participant, localite_name)
        )
        markers = all_markers if k in ("csv", "json") else with_cortex_markers(nav_markers, FORMATS[k].cortex)
        jobs.append((k, rel, markers))

    _refuse_overwriting(output_dir, jobs, force)  # before writing anything
    return PreparedExport(plan=plan, output_dir=output_dir, t1ref=t1ref, jobs=jobs, skipped=skipped,
                          markers=nav_markers, warnings=warnings_out, force=force,
                          options={"localite_space": localite_space, "brainsight_version": brainsight_version})


def _refuse_overwriting(output_dir, jobs, force):
    """Refuse existing files unless ``force``; return the old Localite files ``force`` replaces."""
    conflicts = []
    for _k, rel, _ in jobs:
        for out in _outputs(rel):
            if (output_dir / out).exists():
                conflicts.append(str(output_dir / out))
    old_localite = []
    if any(k == "localite" for k, _, _ in jobs) and (output_dir / "localite").is_dir():
        old_localite = sorted((output_dir / "localite").glob("InstrumentMarker*.xml"))
        conflicts += [str(p) for p in old_localite]
    if conflicts and not force:
        raise OutputError(
            "refusing to overwrite existing navigation file(s): "
            + ", ".join(sorted(set(conflicts)))
            + "; use --force to replace them",
            path=output_dir,
        )
    return old_localite


def write_export(prepared):
    """Write the files of a :class:`PreparedExport` (each verified by reading it back), all or none.

    The plan's ``target.json`` is read again (its sha256 goes into every
    provenance file, and :meth:`tmstarget.outputs.plan.Plan.save` rewrites it
    with the final ``outputs`` list between the checks and the writing): a
    change to anything else is refused, and so are files that appeared since.
    """
    plan = prepared.plan
    raw = load_plan(plan.plan_dir).raw
    if {k: v for k, v in raw.items() if k != "outputs"} != {k: v for k, v in plan.raw.items() if k != "outputs"}:
        raise InputError("target.json changed since the navigation export was checked", path=plan.target_json)
    output_dir, t1ref, jobs, force = prepared.output_dir, prepared.t1ref, prepared.jobs, prepared.force
    localite_space = prepared.options["localite_space"]
    brainsight_version = prepared.options["brainsight_version"]
    old_localite = _refuse_overwriting(output_dir, jobs, force)
    plan_prov = {
        "target_json_sha256": sha256_file(plan.target_json),
        "protocol": plan.protocol,
        "space": plan.space,
        "participant": plan.participant,
        "template": None if plan.space == "T1w" else plan.space,
        "transform": (raw.get("provenance") or {}).get("transform"),
        "tmstarget_version_plan": (raw.get("provenance") or {}).get("tmstarget_version"),
    }

    output_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmstarget-export-", dir=output_dir))
    files = {}
    try:
        for k, rel, markers in jobs:
            spec = FORMATS[k]
            kwargs = {"t1": t1ref, "provenance": plan_prov}
            if k == "localite":
                kwargs["space"] = localite_space
            elif k == "brainsight":
                kwargs["version"] = brainsight_version
            elif k == "bids":
                kwargs["coordinate_system"] = "IndividualMRI" if plan.space == "T1w" else plan.space
            elif k == "ant":
                coil = raw.get("coil") or {}
                kwargs["coil_type"] = str(coil.get("coil_type") or "")
                kwargs["coil_id"] = str(coil.get("coil_id") or "")
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            spec.writer(staging / rel, markers, **kwargs)
            files[k] = [output_dir / out for out in _outputs(rel)]
        # every format written and verified: move into place
        if force:
            for old in old_localite:
                old.unlink()
                prov = old.with_name(old.name + ".provenance.json")
                if prov.exists():
                    prov.unlink()
        for _k, rel, _ in jobs:
            for out in _outputs(rel):
                dest = output_dir / out
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / out, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return prepared.result(files)
