"""Brainsight (Rogue Research) text export: targets and samples.  Spec §3.4.

* Header lines start with ``# ``; a section starts with a ``# <Kind> Name\t…``
  column line and runs to the next ``#`` line.  Cells are TAB-separated,
  values inside a cell ``;``-separated, missing = ``(null)``.
* ``mXnY`` is component Y of axis X: ``M[:3, j] = (mjn0, mjn1, mjn2)``,
  ``M[:3, 3] = (Loc. X, Loc. Y, Loc. Z)``; Brainsight axes
  ``K_B = diag(-1, 1, -1)`` (z out of the head).
* Frame: ``NIfTI:<intent>`` (v ≤ 13) or ``NIfTI:Q|S:<intent>`` (v14) =
  NIfTI world (RAS).  ``Brainsight`` (internal voxel-corner frame) and
  ``World`` are refused.

The writer emits version 12 (``NIfTI:<intent>`` named after the T1's code,
read with the qform by Brainsight ≤ 2.5.2) or version 14
(``NIfTI:Q:``/``NIfTI:S:``).  Numbers have 4 decimals, as SimNIBS writes.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from tmstarget import __version__
from tmstarget.errors import NavigationFormatError
from tmstarget.navigation._common import (
    NavTarget,
    WarningCollector,
    begin_write,
    fmt_num,
    is_decimal_comma,
    load_t1_reference,
    parse_float,
    read_pose,
    read_text_lines,
)
from tmstarget.spaces import XFORM_NAMES, pose_from_file, pose_to_file

__all__ = ["write_brainsight", "read_brainsight"]

DECIMALS = 4
NULL = "(null)"
POSE_COLUMNS = ["Loc. X", "Loc. Y", "Loc. Z"] + [f"m{a}n{c}" for a in range(3) for c in range(3)]
SECTION_KINDS = ("Target", "Sample", "Electrode", "Planned Landmark", "Session Landmark", "Session")
_NAME_TO_CODE = {v: k for k, v in XFORM_NAMES.items()}
_FRAME_RE = re.compile(r"^NIfTI:(?:(?P<form>[QS]):)?(?P<intent>[A-Za-z0-9-]+)$")


def _frame_name(t1ref, version):
    x = t1ref.xform
    use_q = x.xform in ("qform=sform", "qform") and x.qform_code > 0
    if x.xform == "sform" or x.qform_code <= 0:
        use_q = False
    code = x.qform_code if use_q else x.sform_code
    if code not in XFORM_NAMES:
        raise NavigationFormatError(f"brainsight: unknown NIfTI xform code {code}")
    intent = XFORM_NAMES[code]
    if version == 12:
        return f"NIfTI:{intent}"
    return f"NIfTI:{'Q' if use_q else 'S'}:{intent}"


def render_brainsight(targets, t1ref, version):
    frame = _frame_name(t1ref, version)
    lines = [
        f"# Version: {version}",
        f"# Coordinate system: {frame}",
        f"# Created by: tmstarget {__version__} (T1 {t1ref.name} sha256={t1ref.sha256})",
        "# Units: millimetres, degrees, milliseconds, and microvolts",
        "# Encoding: UTF-8",
        "# Notes: Each column is delimited by a tab. Each value within a column is "
        "delimited by a semicolon.",
        "# Target Name\t" + "\t".join(POSE_COLUMNS),
    ]
    for tgt in targets:
        mat = pose_to_file(tgt.pose_ras, world="RAS", axes="brainsight")
        cells = [tgt.name] + [fmt_num(mat[i, 3], DECIMALS) for i in range(3)]
        for axis in range(3):
            cells += [fmt_num(mat[comp, axis], DECIMALS) for comp in range(3)]
        lines.append("\t".join(cells))
    return "\n".join(lines) + "\n"


def write_brainsight(
    path, targets, *, t1, xform=None, version=12, overwrite=False, provenance=None
):
    """Write Brainsight targets (``*.txt``), one row per target.

    Parameters
    ----------
    path : str or Path
    targets : sequence of NavTarget, (name, pose_ras) pairs or 4×4 arrays
        Poses in SimNIBS axes, RAS mm.  Names may not contain ``;``.
    t1 : str, Path or T1Reference
    xform : {None, "qform", "sform"}
    version : {12, 14}
        12: ``NIfTI:<intent>`` (Brainsight ≤ 2.5.2, reads the qform);
        14: ``NIfTI:Q:<intent>`` or ``NIfTI:S:<intent>`` (Brainsight ≥ 2.5.3).
    overwrite : bool
    provenance : dict, optional

    Raises
    ------
    InvalidPoseError, XformMismatchError, NavigationFormatError, OutputError
        Also when the T1's qform and sform differ, the sform was chosen and
        ``version=12`` (old Brainsight would read the qform).
    """
    if version not in (12, 14):
        raise NavigationFormatError(f"brainsight: version must be 12 or 14; got {version!r}")
    job = begin_write(
        "brainsight",
        targets,
        t1=t1,
        xform=xform,
        overwrite=overwrite,
        provenance=provenance,
        forbidden=";",
        reserved=(NULL,),
        need_pose=True,
        navigator=f"brainsight{version}",
    )
    text = render_brainsight(job.targets, job.t1ref, version)

    def reader(p):
        return read_brainsight(p, t1=job.t1ref)

    return job.write(
        path,
        text,
        reader,
        world=_frame_name(job.t1ref, version),
        coil_axes="brainsight",
    )


# --------------------------------------------------------------------------
# reading


def _check_frame(frame, version, t1, path, collector):
    m = _FRAME_RE.match(frame or "")
    if frame in ("Brainsight",) or (frame or "").lower() == "brainsight":
        raise NavigationFormatError(
            "coordinate system 'Brainsight' is Brainsight's internal frame (origin at the "
            "right-anterior-inferior corner voxel, x R->L, y A->P), not the NIfTI world; "
            "re-export the targets/samples as NIfTI:<intent> (NIfTI:Q:<intent> in v14)",
            path=path,
            key="Coordinate system",
        )
    if frame == "World" or not m or m.group("intent") not in _NAME_TO_CODE:
        raise NavigationFormatError(
            f"coordinate system {frame!r} is not a NIfTI world frame; re-export as "
            "NIfTI:<intent> (v<=13) or NIfTI:Q|S:<intent> (v14)",
            path=path,
            key="Coordinate system",
        )
    form = m.group("form")
    code = _NAME_TO_CODE[m.group("intent")]
    if form and version is not None and version < 14:
        collector.warn(
            f"{frame!r} naming is a version 14 feature but the file says version {version}"
        )
    if t1 is None:
        collector.warn(
            f"coordinate system {frame} not verified against a T1 (pass the T1 to check the "
            "qform/sform and intent code)"
        )
        return
    t1ref = load_t1_reference(t1)
    x = t1ref.xform
    if form == "Q":
        codes, which = (x.qform_code,), "qform"
    elif form == "S":
        codes, which = (x.sform_code,), "sform"
    else:
        codes, which = (x.qform_code, x.sform_code), "qform"
    if not t1ref.agree and x.xform != which:
        raise NavigationFormatError(
            f"coordinate system {frame} is the T1's {which} world, but the T1's qform and "
            f"sform differ and the {x.xform} was chosen; the coordinates would be misplaced",
            path=path,
            key="Coordinate system",
        )
    if code not in codes:
        raise NavigationFormatError(
            f"coordinate system {frame} names NIfTI intent code {code} but the T1 "
            f"{t1ref.name} has qform_code={x.qform_code}, sform_code={x.sform_code}: the "
            "file was probably exported against another image",
            path=path,
            key="Coordinate system",
        )


def read_brainsight(path, *, t1=None, **_ignored):
    """Read a Brainsight ``.txt`` export (versions 7, 12, 13, 14).

    Columns are found by name; unknown extra columns are kept as strings in
    ``info`` (``(null)`` → None).  Targets come back with ``kind="target"``,
    samples with ``kind="sample"``; other sections are skipped with a
    counted warning, as are rows with ``(null)`` in a position/orientation
    column.

    Parameters
    ----------
    path : str or Path
    t1 : str, Path or T1Reference, optional
        When given, the file's ``NIfTI:…`` frame is checked against the T1
        (qform == sform or the matching choice, and the intent code).

    Raises
    ------
    NavigationFormatError
        Non-NIfTI frame (``Brainsight``, ``World``), encoding other than
        UTF-8, units other than millimetres, decimal commas, missing columns.
    InvalidPoseError
        det ≤ 0, shear or scaling beyond the reader tolerance.
    """
    path = Path(path)
    lines = read_text_lines(path, strip=" \r")
    collector = WarningCollector(path)
    header = {}
    sections = []  # (kind, columns, rows)
    current = None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if line.startswith("#"):
            body = line[1:].lstrip(" ")
            first = body.split("\t", 1)[0]
            if "\t" in body and first.endswith(" Name"):
                kind = first[: -len(" Name")]
                current = (kind, body.split("\t"), [])
                sections.append(current)
                continue
            current = None
            if ":" in body:
                key, _, value = body.partition(":")
                header[key.strip().lower()] = value.strip()
            continue
        if current is None:
            raise NavigationFormatError(
                f"line {lineno}: data row outside a '# <Kind> Name' section", path=path
            )
        current[2].append((lineno, line.split("\t")))

    version = header.get("version")
    version_int = None
    if version is None:
        raise NavigationFormatError("missing '# Version:' line: not a Brainsight export", path=path)
    try:
        version_int = int(version)
    except ValueError:
        raise NavigationFormatError(f"unreadable version {version!r}", path=path) from None
    if version_int > 14:
        collector.warn(f"Brainsight file version {version_int} is newer than the tested 7-14")
    encoding = header.get("encoding")
    if encoding is None:
        collector.warn("no '# Encoding:' line; read as UTF-8")
    elif encoding.replace("-", "").upper() != "UTF8":
        raise NavigationFormatError(
            f"encoding {encoding!r} is not supported; export as UTF-8", path=path, key="Encoding"
        )
    units = header.get("units")
    if (
        units is not None
        and "millimetre" not in units.lower()
        and "millimeter" not in units.lower()
    ):
        raise NavigationFormatError(f"units {units!r} are not millimetres", path=path, key="Units")
    frame = header.get("coordinate system")
    if frame is None:
        raise NavigationFormatError(
            "missing '# Coordinate system:' line: the frame cannot be known", path=path
        )
    _check_frame(frame, version_int, t1, path, collector)

    targets = []
    skipped = 0
    for kind, columns, rows in sections:
        if kind not in ("Target", "Sample"):
            if kind not in SECTION_KINDS:
                collector.warn(f"unknown section '{kind}' ignored")
            skipped += len(rows)
            if rows:
                collector.warn(
                    f"skipped {len(rows)} row(s) of the '{kind}' section (not coil poses)"
                )
            continue
        index = {name: i for i, name in enumerate(columns)}
        missing = [c for c in [f"{kind} Name"] + POSE_COLUMNS if c not in index]
        if missing:
            raise NavigationFormatError(
                f"'{kind}' section lacks required column(s) {missing}", path=path
            )
        for lineno, cells in rows:
            if len(cells) > len(columns):
                raise NavigationFormatError(
                    f"line {lineno}: {len(cells)} cells for {len(columns)} columns", path=path
                )
            cells = cells + [""] * (len(columns) - len(cells))
            for cell in cells:
                if is_decimal_comma(cell):
                    raise NavigationFormatError(
                        f"line {lineno}: value {cell!r} uses a decimal comma; tmstarget never "
                        "guesses the decimal mark",
                        path=path,
                    )
            name = cells[index[f"{kind} Name"]]
            raw = [cells[index[c]].strip() for c in POSE_COLUMNS]
            if any(v in (NULL, "") for v in raw):
                skipped += 1
                collector.warn(
                    f"line {lineno}: {kind.lower()} {name!r} has (null) in its position or "
                    "orientation: skipped"
                )
                continue
            vals = [parse_float(v, path=path, key=c) for v, c in zip(raw, POSE_COLUMNS)]
            mat = np.eye(4)
            mat[:3, 3] = vals[:3]
            for axis in range(3):
                mat[:3, axis] = vals[3 + 3 * axis : 6 + 3 * axis]
            what = f"line {lineno} {kind.lower()} {name!r}"
            pose_file = read_pose(mat, what=what, collector=collector)
            pose = read_pose(
                pose_from_file(pose_file, world="RAS", axes="brainsight"),
                what=what,
                collector=collector,
            )
            info = {}
            for col, i in index.items():
                if col in POSE_COLUMNS or col == f"{kind} Name":
                    continue
                value = cells[i].strip()
                info[col] = None if value in (NULL, "") else value
            targets.append(
                NavTarget(name, pose, kind="target" if kind == "Target" else "sample", info=info)
            )
    t1_name = t1_sha = None
    created = header.get("created by", "")
    m = re.search(r"T1 (?P<name>\S+) sha256=(?P<sha>[0-9a-fA-F]{64})", created)
    if m:
        t1_name, t1_sha = m.group("name"), m.group("sha").lower()
    return collector.nav_file(
        "brainsight",
        targets,
        source_frame=frame,
        coil_convention="brainsight",
        version=str(version_int),
        t1_name=t1_name,
        t1_sha256=t1_sha,
        skipped=skipped,
        metadata={"created_by": created},
    )
