"""ANT Neuro visor2 ``.mrk`` (JSON) coil targets.  Spec §3.5.

``RigidTransformMatrix4x4`` is a list of rows in SimNIBS convention
(``"CoilAxesConvention": "simnibs"``), in the world of the associated image.
The format holds coil targets only (a second ``CoilTarget`` at the cortex
would be offered as a coil pose inside the head), so each target's cortical
point is recorded in ``SourceInfo.CorticalTargetsRAS`` (name → RAS mm), for
the record, not for visor2.  ``AssociatedImageInfo`` stores that image's qform (quaternion b, c, d;
qoffset; pixdim[0..3] with pixdim[0] = qfac), so visor2 is taken to place
coordinates with the **qform** (inferred, [U]); the writer therefore refuses
a plan whose coordinates refer to a differing sform.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tmstarget import __version__
from tmstarget.errors import NavigationFormatError
from tmstarget.navigation._common import (
    NavTarget,
    WarningCollector,
    begin_write,
    load_json_strict,
    load_t1_reference,
    read_pose,
)

__all__ = ["write_ant", "read_ant", "qform_from_params"]


def render_ant(targets, t1ref, coil_type="", coil_id=""):
    doc = {
        "Configuration": {
            "SourceInfo": {
                "AppName": "tmstarget",
                "AppVersion": __version__,
                "T1File": t1ref.name,
                "T1Sha256": t1ref.sha256,
                "World": f"RAS mm of the T1 {t1ref.xform.xform}",
                "CoilAxes": "simnibs (z into the head, y away from the handle, handle = -y)",
                "CorticalTargetsRAS": {
                    t.name: [float(v) for v in t.info["cortex_ras_mm"]]
                    for t in targets
                    if "cortex_ras_mm" in t.info
                },
            },
            "AssociatedImageInfo": {
                "NIfTI_quatern": [float(v) for v in t1ref.quatern],
                "NIfTI_qoffset": [float(v) for v in t1ref.qoffset],
                "NIfTI_pixdim": [float(v) for v in t1ref.pixdim],
            },
        },
        "TargetMarkers": [],
    }
    for tgt in targets:
        rows = [[float(v) + 0.0 for v in row] for row in tgt.pose_ras]
        rows[3] = [0.0, 0.0, 0.0, 1.0]
        doc["TargetMarkers"].append(
            {
                "CoilTarget": {
                    "Name": tgt.name,
                    "CoordinateSystem": "ASSOCIATED_IMAGE",
                    "PositionalUnit": "mm",
                    "CoilAxesConvention": "simnibs",
                    "CoilInfo": {"Type": coil_type, "Id": coil_id},
                    "CoilPose": {"RigidTransformMatrix4x4": rows},
                }
            }
        )
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def write_ant(
    path, targets, *, t1, xform=None, coil_type="", coil_id="", overwrite=False, provenance=None
):
    """Write an ANT Neuro visor2 ``.mrk`` file, one ``CoilTarget`` per target.

    Parameters
    ----------
    path : str or Path
    targets : sequence of NavTarget, (name, pose_ras) pairs or 4×4 arrays
    t1 : str, Path or T1Reference
        Its qform fills ``AssociatedImageInfo``.
    xform : {None, "qform", "sform"}
    coil_type, coil_id : str
        ``CoilInfo`` (empty = unknown; never guessed).
    overwrite : bool
    provenance : dict, optional

    Raises
    ------
    InvalidPoseError, XformMismatchError, NavigationFormatError, OutputError
        Also when the T1 has no qform, or its qform differs from the sform the
        coordinates refer to.
    """
    job = begin_write(
        "ant",
        targets,
        t1=t1,
        xform=xform,
        overwrite=overwrite,
        provenance=provenance,
        need_pose=True,
    )
    text = render_ant(job.targets, job.t1ref, coil_type=coil_type, coil_id=coil_id)

    def reader(p):
        return read_ant(p, t1=job.t1ref)

    return job.write(path, text, reader)


def qform_from_params(quatern, qoffset, pixdim):
    """Rebuild a NIfTI qform affine from (b, c, d), qoffset and pixdim[0..3]."""
    from nibabel.quaternions import fillpositive, quat2mat

    b, c, d = (float(v) for v in quatern)
    quat = fillpositive([b, c, d], w2_thresh=-1e-6)
    rot = quat2mat(quat)
    qfac = float(pixdim[0]) if float(pixdim[0]) != 0 else 1.0
    zooms = np.array([float(v) for v in pixdim[1:4]])
    if qfac < 0:
        zooms[-1] *= -1
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag(zooms)
    aff[:3, 3] = [float(v) for v in qoffset]
    return aff


def _check_image(info, t1, path, collector):
    if t1 is None:
        if info:
            collector.warn("AssociatedImageInfo not checked against a T1 (pass the T1 to verify)")
        return
    t1ref = load_t1_reference(t1)
    if not info:
        collector.warn("no AssociatedImageInfo: cannot verify the file belongs to this T1")
        return
    try:
        quatern = info["NIfTI_quatern"]
        qoffset = info["NIfTI_qoffset"]
        pixdim = info["NIfTI_pixdim"]
        if len(quatern) != 3 or len(qoffset) != 3 or len(pixdim) != 4:
            raise ValueError
        file_q = qform_from_params(quatern, qoffset, pixdim)
        t1_q = qform_from_params(t1ref.quatern, t1ref.qoffset, t1ref.pixdim)
    except (KeyError, TypeError, ValueError):
        raise NavigationFormatError(
            "AssociatedImageInfo must hold NIfTI_quatern[3], NIfTI_qoffset[3] and NIfTI_pixdim[4]",
            path=path,
            key="AssociatedImageInfo",
        ) from None
    if not np.allclose(file_q, t1_q, atol=1e-5):
        raise NavigationFormatError(
            f"AssociatedImageInfo (qform quatern {list(quatern)}, qoffset {list(qoffset)}, "
            f"pixdim {list(pixdim)}) does not match the T1 {t1ref.name} (quatern "
            f"{list(t1ref.quatern)}, qoffset {list(t1ref.qoffset)}, pixdim {list(t1ref.pixdim)}): "
            "the markers were placed on another image",
            path=path,
            key="AssociatedImageInfo",
        )


def read_ant(path, *, t1=None, **_ignored):
    """Read an ANT Neuro visor2 ``.mrk`` file.

    Each ``CoilTarget`` must declare ``CoordinateSystem == "ASSOCIATED_IMAGE"``,
    ``PositionalUnit == "mm"`` and ``CoilAxesConvention == "simnibs"``; other
    values are refused (their meaning is unverified).  Entries without a
    ``CoilTarget`` are skipped with a counted warning.  ``info["coil_id"]``
    keeps ``CoilInfo.Id`` for grouping.

    Parameters
    ----------
    t1 : str, Path or T1Reference, optional
        When given, ``AssociatedImageInfo`` must match the T1's qform
        (atol 1e-5); a mismatch is an error.
    """
    path = Path(path)
    collector = WarningCollector(path)
    doc = load_json_strict(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("TargetMarkers"), list):
        raise NavigationFormatError("not an ANT .mrk file: no 'TargetMarkers' list", path=path)
    config = doc.get("Configuration") or {}
    info = config.get("AssociatedImageInfo") if isinstance(config, dict) else None
    _check_image(info, t1, path, collector)
    source = config.get("SourceInfo", {}) if isinstance(config, dict) else {}
    targets = []
    skipped = 0
    for idx, entry in enumerate(doc["TargetMarkers"]):
        ct = entry.get("CoilTarget") if isinstance(entry, dict) else None
        if ct is None:
            skipped += 1
            continue
        for key, expected in (
            ("CoordinateSystem", "ASSOCIATED_IMAGE"),
            ("PositionalUnit", "mm"),
            ("CoilAxesConvention", "simnibs"),
        ):
            if ct.get(key) != expected:
                raise NavigationFormatError(
                    f"TargetMarkers[{idx}]: {key} = {ct.get(key)!r}; only {expected!r} is "
                    "supported (other values are unverified)",
                    path=path,
                    key=key,
                )
        try:
            mat = np.array(ct["CoilPose"]["RigidTransformMatrix4x4"], dtype=float)
        except (KeyError, TypeError, ValueError):
            raise NavigationFormatError(
                f"TargetMarkers[{idx}]: CoilPose.RigidTransformMatrix4x4 missing or not numeric",
                path=path,
            ) from None
        name = ct.get("Name", "")
        pose = read_pose(mat, what=f"TargetMarkers[{idx}] {name!r}", collector=collector)
        coil = ct.get("CoilInfo") or {}
        coil_info = {"coil_type": coil.get("Type"), "coil_id": coil.get("Id")}
        targets.append(NavTarget(name, pose, kind="target", info=coil_info))
    if skipped:
        collector.warn(f"skipped {skipped} entr(y/ies) without a CoilTarget")
    sha = source.get("T1Sha256") if isinstance(source, dict) else None
    return collector.nav_file(
        "ant",
        targets,
        source_frame="ASSOCIATED_IMAGE (RAS)",
        coil_convention="simnibs",
        version=f"{source.get('AppName', '?')} {source.get('AppVersion', '?')}",
        t1_name=source.get("T1File") if isinstance(source, dict) else None,
        t1_sha256=sha.lower() if isinstance(sha, str) else None,
        skipped=skipped,
        metadata={"associated_image_info": info},
    )
