"""3D Slicer markups JSON (``.mrk.json``).  Spec §3.6.

* ``@schema`` must match Slicer's ``.*markups-schema-v1\\.[0-9]+\\.[0-9]+\\.json#*$``.
* ``coordinateSystem`` ∈ {LPS, RAS}; Slicer assumes LPS when it is absent, so
  tmstarget refuses such a file unless the caller states ``assume``.
* ``orientation`` is a row-major 3×3 whose *columns* are the local axes
  (``[o0, o3, o6]`` = x).  For LPS, ``R_file = D₃·R_RAS``.
* Slicer has no coil semantics: tmstarget stores SimNIBS coil axes in
  ``orientation`` and declares it in a top-level ``"tmstarget"`` key.  An
  orientation is read as a coil pose only when that declaration is present;
  otherwise the point is position-only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from tmstarget.errors import NavigationFormatError
from tmstarget.navigation._common import (
    SIMNIBS_AXES_TEXT,
    WarningCollector,
    begin_write,
    load_json_strict,
    read_marker,
    read_pose,
    tmstarget_declaration,
)
from tmstarget.spaces import D3

__all__ = ["write_slicer_json", "read_slicer_json", "SLICER_SCHEMA"]

SLICER_SCHEMA = (
    "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/"
    "Resources/Schema/markups-schema-v1.0.3.json#"
)
_SCHEMA_RE = re.compile(r".*markups-schema-v1\.[0-9]+\.[0-9]+\.json#*$", re.IGNORECASE)


def render_slicer_json(targets, t1ref, space):
    points = []
    for i, tgt in enumerate(targets, start=1):
        pos = tgt.position_ras_mm.copy()
        if space == "LPS":
            pos = D3 @ pos
        point = {
            "id": str(i),
            "label": tgt.name,
            "description": "cortical target" if tgt.kind == "cortex" else ("coil centre" if tgt.has_pose else ""),
            "position": [float(v) + 0.0 for v in pos],
        }
        if tgt.has_pose:
            rot = tgt.pose_ras[:3, :3]
            if space == "LPS":
                rot = D3 @ rot
            point["orientation"] = [float(v) + 0.0 for v in rot.reshape(-1)]
        point.update(
            {"selected": True, "locked": True, "visibility": True, "positionStatus": "defined"}
        )
        points.append(point)
    doc = {
        "@schema": SLICER_SCHEMA,
        "tmstarget": tmstarget_declaration(
            t1ref,
            axes=SIMNIBS_AXES_TEXT,
            note="orientation columns are SimNIBS coil axes; points without orientation "
            "are positions only",
        ),
        "markups": [
            {
                "type": "Fiducial",
                "coordinateSystem": space,
                "coordinateUnits": "mm",
                "controlPoints": points,
            }
        ],
    }
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def write_slicer_json(
    path, targets, *, t1, xform=None, space="LPS", overwrite=False, provenance=None
):
    """Write a Slicer ``.mrk.json`` point list (LPS by default, as Slicer).

    Targets with a pose get an ``orientation`` (SimNIBS coil axes);
    position-only targets get none.

    Raises
    ------
    InvalidPoseError, XformMismatchError, NavigationFormatError, OutputError
        Also when qform ≠ sform and the chosen one is not the one ITK (hence
        Slicer) would use for these codes.
    """
    if space not in ("RAS", "LPS"):
        raise NavigationFormatError(f"slicer: space must be 'RAS' or 'LPS'; got {space!r}")
    job = begin_write(
        "slicer", targets, t1=t1, xform=xform, overwrite=overwrite, provenance=provenance
    )
    text = render_slicer_json(job.targets, job.t1ref, space)
    return job.write(path, text, read_slicer_json, world=space)


def _vector(value, n, what, path):
    if not isinstance(value, list) or len(value) != n:
        raise NavigationFormatError(
            f"{what} must be a list of {n} numbers; got {value!r}", path=path
        )
    try:
        arr = np.array([float(v) for v in value])
    except (TypeError, ValueError):
        raise NavigationFormatError(f"{what} must be numeric; got {value!r}", path=path) from None
    if isinstance(value, list) and any(isinstance(v, (str, bool)) for v in value):
        raise NavigationFormatError(
            f"{what} must hold numbers, not strings; got {value!r}", path=path
        )
    if not np.all(np.isfinite(arr)):
        raise NavigationFormatError(f"{what} holds non-finite values", path=path)
    return arr


def read_slicer_json(path, *, assume=None, **_ignored):
    """Read a Slicer ``.mrk.json`` file.

    Parameters
    ----------
    assume : {None, "LPS", "RAS"}
        Frame for markups without ``coordinateSystem`` (Slicer's silent
        default is LPS; tmstarget refuses to guess unless told).

    Raises
    ------
    NavigationFormatError
        ``@schema`` missing or not Slicer's, no/unknown ``coordinateSystem``
        (without ``assume``), units other than mm, malformed points.
    """
    path = Path(path)
    if assume not in (None, "LPS", "RAS"):
        raise NavigationFormatError(f"assume must be None, 'LPS' or 'RAS'; got {assume!r}")
    doc = load_json_strict(path)
    collector = WarningCollector(path)
    if not isinstance(doc, dict):
        raise NavigationFormatError(
            "not a Slicer markups file (top level is not an object)", path=path
        )
    schema = doc.get("@schema")
    if not isinstance(schema, str) or not _SCHEMA_RE.match(schema):
        raise NavigationFormatError(
            f"@schema {schema!r} is not a Slicer markups schema (markups-schema-v1.x.y.json)",
            path=path,
            key="@schema",
        )
    markups = doc.get("markups")
    if not isinstance(markups, list):
        raise NavigationFormatError("'markups' must be a list", path=path, key="markups")
    meta = doc.get("tmstarget") if isinstance(doc.get("tmstarget"), dict) else None
    coil_axes = bool(meta) and str(meta.get("axes", "")).lower().startswith("simnibs")
    targets = []
    skipped = 0
    frames = set()
    ignored_orientation = 0
    for m_idx, markup in enumerate(markups):
        if not isinstance(markup, dict):
            raise NavigationFormatError(f"markups[{m_idx}] is not an object", path=path)
        points = markup.get("controlPoints", [])
        if markup.get("type") != "Fiducial":
            skipped += len(points)
            collector.warn(
                f"markups[{m_idx}] of type {markup.get('type')!r} skipped (only point lists "
                "are read)"
            )
            continue
        space = markup.get("coordinateSystem")
        if space is None:
            if assume is None:
                raise NavigationFormatError(
                    f"markups[{m_idx}] has no coordinateSystem; Slicer would silently assume "
                    "LPS. Re-save it from Slicer, or state the frame (assume='LPS' / "
                    "--assume-space LPS)",
                    path=path,
                    key="coordinateSystem",
                )
            space = assume
            collector.warn(f"markups[{m_idx}]: no coordinateSystem, {assume} assumed as requested")
        if space not in ("LPS", "RAS"):
            raise NavigationFormatError(
                f"markups[{m_idx}]: coordinateSystem must be LPS or RAS; got {space!r}",
                path=path,
                key="coordinateSystem",
            )
        frames.add(space)
        units = markup.get("coordinateUnits", "mm")
        if isinstance(units, list) and units:
            units = units[0]
        if units != "mm":
            raise NavigationFormatError(
                f"markups[{m_idx}]: coordinateUnits {units!r} is not mm",
                path=path,
                key="coordinateUnits",
            )
        if not isinstance(points, list):
            raise NavigationFormatError(f"markups[{m_idx}].controlPoints must be a list", path=path)
        for p_idx, point in enumerate(points):
            what = f"markups[{m_idx}].controlPoints[{p_idx}]"
            if not isinstance(point, dict):
                raise NavigationFormatError(f"{what} is not an object", path=path)
            status = point.get("positionStatus", "defined")
            if status != "defined":
                skipped += 1
                collector.warn(f"{what} has positionStatus {status!r}: skipped")
                continue
            pos = _vector(point.get("position"), 3, f"{what}.position", path)
            if space == "LPS":
                pos = D3 @ pos
            name = str(point.get("label", ""))
            orientation = point.get("orientation")
            pose = None
            if orientation is not None and coil_axes:
                rot = _vector(orientation, 9, f"{what}.orientation", path).reshape(3, 3)
                if space == "LPS":
                    rot = D3 @ rot
                mat = np.eye(4)
                mat[:3, :3] = rot
                mat[:3, 3] = pos
                pose = read_pose(mat, what=f"{what} {name!r}", collector=collector)
            elif orientation is not None:
                ignored_orientation += 1
            targets.append(read_marker(name, pose, pos, info={"id": point.get("id")}))
    if ignored_orientation:
        collector.warn(
            f"{ignored_orientation} point orientation(s) ignored: the file does not declare "
            "coil axes (no tmstarget key), so they are read as positions only"
        )
    return collector.nav_file(
        "slicer",
        targets,
        source_frame="/".join(sorted(frames)) or None,
        coil_convention="simnibs" if coil_axes else None,
        version=schema.rsplit("/", 1)[-1],
        t1_name=meta.get("t1") if meta else None,
        t1_sha256=str(meta.get("t1_sha256")).lower() if meta and meta.get("t1_sha256") else None,
        skipped=skipped,
    )
