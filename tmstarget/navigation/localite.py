"""Localite TMS Navigator XML: InstrumentMarkerList (write/read),
TriggerMarkerList and EntryTargetList (read).  Spec §3.1–§3.3.

Frame: the root's ``coordinateSpace="RAS|LPS"`` is the only declaration
(NIfTI → RAS is Localite's own rule of thumb).  Axes: Localite's coil
convention ``K_L`` (x = normal into the head, y = toward the handle,
z = x_sim): ``M_file = W·M_sim·K_L``.  Which NIfTI transform Localite uses
is unknown [U]: the choice is recorded in the comment and the provenance.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

from tmstarget.errors import NavigationFormatError
from tmstarget.navigation._common import (
    NavTarget,
    WarningCollector,
    begin_write,
    fmt_num,
    parse_float,
    provenance_comment,
    read_pose,
)
from tmstarget.spaces import D, pose_from_file, pose_to_file

__all__ = ["write_localite", "read_localite", "localite_marker_filename"]

DECIMALS = 10
#: Marker colours: coil poses red, cortical targets (``kind="cortex"``) cyan.
COIL_COLOR = "#ff0000"
CORTEX_COLOR = "#00ffff"


def localite_marker_filename(when=None):
    """``InstrumentMarker<yyyyMMddHHmmssSSS>.xml`` for ``when`` (default now)."""
    when = when or datetime.now()
    return f"InstrumentMarker{when.strftime('%Y%m%d%H%M%S')}{when.microsecond // 1000:03d}.xml"


def render_localite(targets, t1ref, space):
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<InstrumentMarkerList coordinateSpace="{space}">',
        f"    <!--{provenance_comment(t1ref, world=space, axes='Localite')}-->",
    ]
    for idx, tgt in enumerate(targets):
        mat = pose_to_file(tgt.pose_ras, world=space, axes="localite")
        d = {f"data{r}{c}": fmt_num(mat[r, c], DECIMALS) for r in range(3) for c in range(4)}
        lines.append(f'    <InstrumentMarker alwaysVisible="false" index="{idx}" selected="false">')
        color = CORTEX_COLOR if tgt.kind == "cortex" else COIL_COLOR
        lines.append(
            f'        <Marker additionalInformation="" color="{color}" '
            f'description={quoteattr(tgt.name)} set="true">'
        )
        for r in range(3):
            cells = " ".join(f'data{r}{c}="{d[f"data{r}{c}"]}"' for c in range(4))
            prefix = "            <Matrix4D " if r == 0 else "                "
            lines.append(prefix + cells)
        lines.append('                data30="0.0" data31="0.0" data32="0.0" data33="1.0"/>')
        lines.append("        </Marker>")
        lines.append("    </InstrumentMarker>")
    lines.append("</InstrumentMarkerList>")
    return "\n".join(lines) + "\n"


def write_localite(path, targets, *, t1, xform=None, space="RAS", overwrite=False, provenance=None):
    """Write a Localite InstrumentMarkerList XML, one marker per target.

    Parameters
    ----------
    path : str or Path
        Output file; Localite expects ``InstrumentMarkers/InstrumentMarker<ts>.xml``
        (see :func:`localite_marker_filename`).
    targets : sequence of NavTarget, (name, pose_ras) pairs or 4×4 arrays
        Poses in SimNIBS axes, RAS mm; every marker needs a pose.
    t1 : str, Path or T1Reference
        The T1 loaded in TMS Navigator (name + sha256 go in the comment).
    xform : {None, "qform", "sform"}
        Required when the T1's qform and sform differ.
    space : {"RAS", "LPS"}
        ``coordinateSpace`` of the file (RAS for NIfTI data).
    overwrite : bool
    provenance : dict, optional
        Extra plan provenance for ``<path>.provenance.json``.

    Raises
    ------
    InvalidPoseError, XformMismatchError, NavigationFormatError, OutputError
    """
    if space not in ("RAS", "LPS"):
        raise NavigationFormatError(f"localite: space must be 'RAS' or 'LPS'; got {space!r}")
    job = begin_write(
        "localite",
        targets,
        t1=t1,
        xform=xform,
        overwrite=overwrite,
        provenance=provenance,
        need_pose=True,
    )
    text = render_localite(job.targets, job.t1ref, space)
    return job.write(path, text, read_localite, world=space, coil_axes="localite")


# --------------------------------------------------------------------------
# reading


def _parse_xml(path):
    try:
        tree = ET.parse(str(path))
    except ET.ParseError as exc:
        raise NavigationFormatError(f"not well-formed XML: {exc}", path=path) from exc
    except OSError as exc:
        raise NavigationFormatError(f"cannot read file: {exc}", path=path) from exc
    return tree.getroot()


def _space(root, path):
    space = root.get("coordinateSpace")
    if space is None:
        raise NavigationFormatError(
            "missing coordinateSpace attribute: the frame (RAS or LPS) cannot be known, "
            "refusing to guess",
            path=path,
            key="coordinateSpace",
        )
    if space.strip().upper() not in ("RAS", "LPS"):
        raise NavigationFormatError(
            f"coordinateSpace must be RAS or LPS; got {space!r}", path=path, key="coordinateSpace"
        )
    return space.strip().upper()


def _matrix(elem, path, what):
    if elem is None:
        raise NavigationFormatError(f"{what}: missing <Matrix4D>", path=path)
    mat = np.empty((4, 4))
    for r in range(4):
        for c in range(4):
            key = f"data{r}{c}"
            raw = elem.get(key)
            if raw is None:
                raise NavigationFormatError(f"{what}: Matrix4D lacks {key}", path=path, key=key)
            mat[r, c] = parse_float(raw, path=path, key=key, allow_nan=True)
    return mat


def is_unset_raw(mat, tol=1e-9):
    """Localite 'coil not tracked' markers: raw 3×3 ≈ I with zero translation, or 3×3 ≈ 0.

    Checked on the raw file matrix, *before* any frame/axis conversion.
    """
    rot = mat[:3, :3]
    if not np.all(np.isfinite(mat)):
        return False
    if np.allclose(rot, np.eye(3), atol=tol) and np.allclose(mat[:3, 3], 0.0, atol=tol):
        return True
    return bool(np.allclose(rot, 0.0, atol=tol))


def _to_sim(raw, space, what, collector):
    pose_file = read_pose(raw, what=what, collector=collector)
    sim = pose_from_file(pose_file, world=space, axes="localite")
    return read_pose(sim, what=what, collector=collector)


_T1_RE = re.compile(r"T1=(?P<name>\S+)\s+sha256=(?P<sha>[0-9a-fA-F]{64})")


def _t1_from_comments(path):
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    for comment in re.findall(r"<!--(.*?)-->", text, flags=re.S):
        m = _T1_RE.search(comment)
        if m:
            return m.group("name"), m.group("sha").lower()
    return None, None


def _response_value(raw):
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    return value


def read_localite(path, **_ignored):
    """Read a Localite InstrumentMarkerList, TriggerMarkerList or EntryTargetList.

    Returns poses in SimNIBS axes, RAS mm (``M_sim = W⁻¹·M_L·K_L``).

    * Unset markers (raw 3×3 ≈ I and zero translation, or 3×3 ≈ 0, checked
      before conversion) are skipped with a counted warning.
    * TriggerMarkers: ``info`` holds ``didt_a_per_s`` (valueA × 1e6; None when
      NaN or 0.0: never a default), ``amplitude_pct_mso``, ``response_uv``,
      ``onset_ms`` (recordingTime) and ``coil`` (1-based, from the file name).
    * EntryTargets: positions only, Target markers with ``info.entry_ras_mm``.

    Raises
    ------
    NavigationFormatError
        Malformed XML, missing/unknown ``coordinateSpace``, bad numbers.
    InvalidPoseError
        det ≤ 0, shear or scaling beyond the reader tolerance.
    """
    path = Path(path)
    root = _parse_xml(path)
    space = _space(root, path)
    collector = WarningCollector(path)
    t1_name, t1_sha = _t1_from_comments(path)
    targets = []
    skipped = 0
    if root.tag == "InstrumentMarkerList":
        kind_version = "InstrumentMarkerList"
        for idx, im in enumerate(root.iter("InstrumentMarker")):
            marker = im.find("Marker")
            if marker is None:
                raise NavigationFormatError(f"InstrumentMarker #{idx} has no <Marker>", path=path)
            name = marker.get("description", "")
            raw = _matrix(marker.find("Matrix4D"), path, f"InstrumentMarker #{idx}")
            if is_unset_raw(raw):
                skipped += 1
                continue
            pose = _to_sim(raw, space, f"InstrumentMarker #{idx} {name!r}", collector)
            targets.append(
                NavTarget(
                    name,
                    pose,
                    kind="marker",
                    info={"index": im.get("index"), "set": marker.get("set")},
                )
            )
        if skipped:
            collector.warn(
                f"skipped {skipped} unset instrument marker(s) (identity or zero matrix)"
            )
    elif root.tag == "TriggerMarkerList":
        kind_version = "TriggerMarkerList"
        m = re.search(r"Coil(\d+)", path.name)
        coil = int(m.group(1)) + 1 if m else None
        for idx, tm in enumerate(root.iter("TriggerMarker")):
            name = tm.get("description", "")
            raw = _matrix(tm.find("Matrix4D"), path, f"TriggerMarker #{idx}")
            if is_unset_raw(raw):
                skipped += 1
                continue
            values = {}
            rv = tm.find("ResponseValues")
            if rv is not None:
                for val in rv.findall("Value"):
                    values[val.get("key")] = _response_value(val.get("response"))
            value_a = values.get("valueA")
            didt = None if value_a in (None, 0.0) else value_a * 1e6
            onset = tm.get("recordingTime")
            onset_ms = None
            if onset is not None:
                onset_ms = parse_float(onset, path=path, key="recordingTime")
                onset_ms = int(onset_ms) if onset_ms.is_integer() else onset_ms
            pose = _to_sim(raw, space, f"TriggerMarker #{idx}", collector)
            targets.append(
                NavTarget(
                    name or f"trigger-{idx + 1:04d}",
                    pose,
                    kind="sample",
                    info={
                        "index": idx,
                        "didt_a_per_s": didt,
                        "amplitude_pct_mso": values.get("amplitudeA"),
                        "response_uv": values.get("response"),
                        "onset_ms": onset_ms,
                        "coil": coil,
                        "set": tm.get("set"),
                    },
                )
            )
        if skipped:
            collector.warn(
                f"skipped {skipped} unset trigger marker(s) (coil not tracked: identity or zero "
                "matrix)"
            )
        missing = sum(1 for t in targets if t.info["didt_a_per_s"] is None)
        if missing:
            collector.warn(
                f"{missing} trigger marker(s) have no di/dt (valueA NaN or 0): left as None"
            )
    elif root.tag == "EntryTargetList":
        kind_version = "EntryTargetList"
        entries = {}
        for elem in root.iter("Entry"):
            entries[elem.get("index")] = _point(elem, space, path)
        for elem in root.iter("Target"):
            marker = elem.find("Marker")
            name = "" if marker is None else marker.get("description", "")
            pos = _point(elem, space, path)
            if pos is None:
                skipped += 1
                continue
            entry = entries.pop(elem.get("index"), None)
            info = {"index": elem.get("index")}
            if entry is not None:
                info["entry_ras_mm"] = [float(v) for v in entry]
            targets.append(NavTarget(name, None, position_ras_mm=pos, kind="target", info=info))
        for index, entry in entries.items():
            if entry is not None:
                targets.append(
                    NavTarget("", None, position_ras_mm=entry, kind="entry", info={"index": index})
                )
    else:
        raise NavigationFormatError(
            f"unknown Localite root element <{root.tag}>; expected InstrumentMarkerList, "
            "TriggerMarkerList or EntryTargetList",
            path=path,
        )
    return collector.nav_file(
        "localite",
        targets,
        source_frame=space,
        coil_convention="localite" if kind_version != "EntryTargetList" else None,
        version=kind_version,
        t1_name=t1_name,
        t1_sha256=t1_sha,
        skipped=skipped,
    )


def _point(elem, space, path):
    marker = elem.find("Marker")
    vec = None if marker is None else marker.find("ColVec3D")
    if vec is None:
        raise NavigationFormatError(f"<{elem.tag}> without Marker/ColVec3D", path=path)
    if marker.get("set", "true").lower() == "false":
        return None
    vals = np.array([parse_float(vec.get(f"data{i}"), path=path, key=f"data{i}") for i in range(3)])
    return vals if space == "RAS" else (D[:3, :3] @ vals)
