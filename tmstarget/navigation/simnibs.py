"""SimNIBS positions CSV (``TMSLIST.add_positions_from_csv``).  Spec §3.8.

Coil rows ``CoilPos,px,py,pz,ez_x,ez_y,ez_z,ey_x,ey_y,ey_z,dist,name``:
``ez`` = z (into the head), ``ey`` = y (away from the handle),
``x = ey × ez``.  SimNIBS does not normalise them, so exact unit vectors are
written (17 significant digits).  Position-only targets become
``Generic,x,y,z,name`` rows.  The optional header row (detected by SimNIBS
when row 1, column 2 is not a number) carries the provenance.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np

from tmstarget import __version__
from tmstarget.errors import NavigationFormatError
from tmstarget.navigation._common import (
    NavTarget,
    WarningCollector,
    begin_write,
    parse_float,
    read_pose,
    read_text_lines,
)
from tmstarget.spaces import pose_from_axes

__all__ = ["write_simnibs_csv", "read_simnibs_csv"]

HEADER = [
    "type",
    "x",
    "y",
    "z",
    "ez_x",
    "ez_y",
    "ez_z",
    "ey_x",
    "ey_y",
    "ey_z",
    "dist",
    "name",
]


def _num(v):
    v = float(v) + 0.0
    return repr(v)


def render_simnibs_csv(targets, t1ref):
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    prov = (
        f"tmstarget {__version__}; T1={t1ref.name} sha256={t1ref.sha256}; world=RAS "
        f"({t1ref.xform.xform}); axes=simnibs (ez into head, ey away from handle)"
    )
    writer.writerow(HEADER + [prov])
    for tgt in targets:
        if tgt.has_pose:
            pose = tgt.pose_ras
            row = ["CoilPos"] + [_num(v) for v in pose[:3, 3]]
            row += [_num(v) for v in pose[:3, 2]] + [_num(v) for v in pose[:3, 1]]
            dist = tgt.info.get("scalp_to_cortex_mm") if tgt.info else None
            row += [_num(dist) if dist is not None else "0", tgt.name]
        else:
            row = ["Generic"] + [_num(v) for v in tgt.position_ras_mm] + [tgt.name]
        writer.writerow(row)
    return buf.getvalue()


def write_simnibs_csv(path, targets, *, t1, xform=None, overwrite=False, provenance=None):
    """Write a SimNIBS positions CSV (RAS mm, SimNIBS axes).

    ``dist`` is the target's ``info["scalp_to_cortex_mm"]`` when known, else 0
    (SimNIBS uses it only in MNI ↔ subject transforms).

    Raises
    ------
    InvalidPoseError, XformMismatchError, NavigationFormatError, OutputError
        Also when qform ≠ sform and the sform was chosen (SimNIBS charm keeps
        the qform with ``--forceqform``).
    """
    job = begin_write(
        "simnibs", targets, t1=t1, xform=xform, overwrite=overwrite, provenance=provenance
    )
    return job.write(path, render_simnibs_csv(job.targets, job.t1ref), read_simnibs_csv)


def _is_float(text):
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def read_simnibs_csv(path, **_ignored):
    """Read a SimNIBS positions CSV.

    ``CoilPos`` rows become poses (``z = ez``, ``y = ey``, ``x = y × z``;
    checked for unit length/orthogonality, then orthonormalised); ``Generic``,
    ``Fiducial``, ``Electrode`` and ``ReferenceElectrode`` rows become
    positions.  With a header row every row must have the header's number of
    fields or fewer (SimNIBS rows may omit trailing columns); without one,
    ``CoilPos`` rows need exactly 11 or 12 fields and ``Generic`` rows 4 or 5.

    Raises
    ------
    NavigationFormatError
        Unknown row types, unexpected field counts (a decimal comma splits
        numbers), unreadable numbers.
    """
    path = Path(path)
    collector = WarningCollector(path)
    lines = read_text_lines(path, skip_blank=True)
    rows = list(csv.reader(io.StringIO("\n".join(lines))))
    if not rows:
        raise NavigationFormatError("empty SimNIBS CSV", path=path)
    header = None
    if len(rows[0]) < 2 or not _is_float(rows[0][1]):
        header = rows[0]
        rows = rows[1:]
    t1_name = t1_sha = None
    if header:
        m = re.search(r"T1=(?P<name>\S+) sha256=(?P<sha>[0-9a-fA-F]{64})", ",".join(header))
        if m:
            t1_name, t1_sha = m.group("name"), m.group("sha").lower()
    width = None
    if header is not None:
        width = len(header)
        if header and header[-1].startswith("tmstarget"):
            width -= 1  # the provenance cell is not a data column
    targets = []
    skipped = 0
    for i, row in enumerate(rows, start=2 if header else 1):
        kind = row[0].strip() if row else ""
        if kind == "CoilPos":
            top = 12 if width is None else max(width, 12)
            if not 11 <= len(row) <= top:
                raise NavigationFormatError(
                    f"row {i}: CoilPos row has {len(row)} fields; expected 11-{top} "
                    "(a decimal comma would split numbers; tmstarget never guesses)",
                    path=path,
                )
            vals = [parse_float(v, path=path, key=HEADER[j + 1]) for j, v in enumerate(row[1:11])]
            centre = np.array(vals[0:3])
            ez = np.array(vals[3:6])
            ey = np.array(vals[6:9])
            for name, vec in (("ez", ez), ("ey", ey)):
                if abs(np.linalg.norm(vec) - 1.0) > 5e-3:
                    raise NavigationFormatError(
                        f"row {i}: {name} has length {np.linalg.norm(vec):.4f}, not a unit vector",
                        path=path,
                    )
            name = row[11] if len(row) > 11 else ""
            mat = pose_from_axes(centre, ey, ez)
            pose = read_pose(mat, what=f"row {i} {name!r}", collector=collector)
            targets.append(NavTarget(name, pose, kind="target", info={"dist_mm": vals[9]}))
        elif kind in ("Generic", "Fiducial", "Electrode", "ReferenceElectrode"):
            if header is None:
                allowed = (4, 5) if kind in ("Generic", "Fiducial") else (4, 5, 7, 8)
            else:
                allowed = range(4, max(width, 8) + 1)
            if len(row) not in allowed:
                raise NavigationFormatError(
                    f"row {i}: {kind} row has {len(row)} fields (a decimal comma would split "
                    "numbers; tmstarget never guesses)",
                    path=path,
                )
            pos = np.array([parse_float(v, path=path, key="xyz") for v in row[1:4]])
            if (
                kind in ("Electrode", "ReferenceElectrode")
                and len(row) >= 7
                and all(_is_float(v) for v in row[4:7])
            ):
                name = row[7] if len(row) > 7 else ""
            else:
                name = row[4] if len(row) > 4 else ""
            targets.append(NavTarget(name, None, position_ras_mm=pos, kind=kind.lower()))
        else:
            raise NavigationFormatError(f"row {i}: unknown row type {kind!r}", path=path)
    return collector.nav_file(
        "simnibs",
        targets,
        source_frame="RAS",
        coil_convention="simnibs",
        t1_name=t1_name,
        t1_sha256=t1_sha,
        skipped=skipped,
    )
