"""3D Slicer legacy markups ``.fcsv`` (positions only).  Spec §3.7.

``# CoordinateSystem``: ``0``/``RAS`` = RAS, ``1``/``LPS`` = LPS; ``2`` (IJK)
is refused, and so is a missing line (old Slicer defaulted to RAS, current
Slicer to LPS).  Old Slicer parsed the value with ``atoi``, reading ``LPS``
as 0 = RAS (a silent mirror), so the writer always emits
``# CoordinateSystem = 0`` with RAS values, which every version reads alike.
The ``ow,ox,oy,oz`` orientation is never converted and never read.
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
    fmt_num,
    parse_float,
    read_text_lines,
)
from tmstarget.spaces import D3

__all__ = ["write_fcsv", "read_fcsv"]

DECIMALS = 10
DEFAULT_COLUMNS = [
    "id",
    "x",
    "y",
    "z",
    "ow",
    "ox",
    "oy",
    "oz",
    "vis",
    "sel",
    "lock",
    "label",
    "desc",
    "associatedNodeID",
]
_POSITION_STATUS = {"0", "1", "2", "3", "undefined", "preview", "defined", "missing"}
_DEFINED = {"2", "defined"}


def _clean(text):
    return text.replace(",", " ").replace('"', "'")


def render_fcsv(targets, t1ref):
    lines = [
        "# Markups fiducial file version = 4.11",
        "# CoordinateSystem = 0",
        "# columns = " + ",".join(DEFAULT_COLUMNS),
    ]
    for i, tgt in enumerate(targets, start=1):
        what = "cortical target" if tgt.kind == "cortex" else ("coil centre" if tgt.has_pose else "target")
        desc = _clean(
            f"tmstarget {__version__} {what}; T1 {t1ref.name} sha256={t1ref.sha256}; "
            f"RAS ({t1ref.xform.xform}); orientation not stored"
        )
        x, y, z = (fmt_num(v, DECIMALS) for v in tgt.position_ras_mm)
        lines.append(f"{i},{x},{y},{z},0,0,0,1,1,1,1,{tgt.name},{desc},")
    return "\n".join(lines) + "\n"


def write_fcsv(path, targets, *, t1, xform=None, overwrite=False, provenance=None):
    """Write a legacy Slicer ``.fcsv`` (``CoordinateSystem = 0``, RAS values).

    Positions only: the coil centre of each pose, or the target position.
    Names may not contain ``,`` or ``"`` (old Slicer does not parse quotes).
    """
    job = begin_write(
        "fcsv",
        targets,
        t1=t1,
        xform=xform,
        overwrite=overwrite,
        provenance=provenance,
        forbidden=',"',
    )
    return job.write(
        path,
        render_fcsv(job.targets, job.t1ref),
        read_fcsv,
        coil_axes="none (positions only)",
        position_only=True,
    )


def _split(line, path, lineno):
    rows = list(csv.reader(io.StringIO(line), delimiter=",", quotechar='"', doublequote=True))
    if len(rows) != 1:
        raise NavigationFormatError(f"line {lineno}: cannot split into fields", path=path)
    return rows[0]


def read_fcsv(path, **_ignored):
    """Read a Slicer ``.fcsv`` file as positions (RAS mm).

    Raises
    ------
    NavigationFormatError
        No version line (Slicer-3 format), missing or unknown
        ``CoordinateSystem`` (``2`` = IJK included), an unexpected number of
        fields (a decimal comma splits numbers), unreadable numbers.
    """
    path = Path(path)
    lines = read_text_lines(path)
    collector = WarningCollector(path)
    version = None
    space = None
    columns = None
    rows = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if line.startswith("#"):
            m = re.match(r"#\s*Markups fiducial file version\s*=\s*(.*)$", line)
            if m:
                version = m.group(1).strip()
                continue
            m = re.match(r"#\s*CoordinateSystem\s*=\s*(.*)$", line)
            if m:
                value = m.group(1).strip()
                if value in ("0", "RAS"):
                    space = "RAS"
                elif value in ("1", "LPS"):
                    space = "LPS"
                else:
                    raise NavigationFormatError(
                        f"CoordinateSystem = {value!r} is not supported (0/RAS or 1/LPS; 2 = IJK "
                        "voxel indices is refused)",
                        path=path,
                        key="CoordinateSystem",
                    )
                continue
            m = re.match(r"#\s*columns\s*=\s*(.*)$", line)
            if m:
                columns = [c.strip() for c in m.group(1).split(",")]
            continue
        rows.append((lineno, line))
    if version is None:
        raise NavigationFormatError(
            "no '# Markups fiducial file version' line: Slicer-3 style files "
            "(label,x,y,z,sel,vis) are not supported",
            path=path,
        )
    if space is None:
        raise NavigationFormatError(
            "no '# CoordinateSystem' line: old Slicer assumed RAS and current Slicer assumes "
            "LPS, so the frame is ambiguous; add '# CoordinateSystem = 0' (RAS) or '= 1' (LPS)",
            path=path,
            key="CoordinateSystem",
        )
    if columns is None:
        columns = list(DEFAULT_COLUMNS)
    elif columns[:4] != ["id", "x", "y", "z"] or "label" not in columns:
        raise NavigationFormatError(
            f"unexpected column layout {columns}; expected it to start with id,x,y,z and "
            "to contain label",
            path=path,
            key="columns",
        )
    n = len(columns)
    label_idx = columns.index("label")
    desc_idx = columns.index("desc") if "desc" in columns else None
    targets = []
    skipped = 0
    t1_name = t1_sha = None
    for lineno, line in rows:
        fields = _split(line, path, lineno)
        status = "defined"
        if (
            len(fields) == n + 2
            and fields[n].strip() in _POSITION_STATUS
            and fields[n + 1].strip().lower() in ("0", "1", "true", "false")
        ):
            status = fields[n].strip()
        elif len(fields) != n:
            raise NavigationFormatError(
                f"line {lineno}: {len(fields)} fields where the header lists {n} (a decimal "
                "comma would split numbers; tmstarget never guesses)",
                path=path,
            )
        for idx, col in enumerate(columns):
            if col in ("vis", "sel", "lock") and fields[idx].strip() not in ("", "0", "1"):
                raise NavigationFormatError(
                    f"line {lineno}: {col} = {fields[idx]!r} is not 0/1 (shifted fields?)",
                    path=path,
                )
        if status not in _DEFINED:
            skipped += 1
            collector.warn(f"line {lineno}: point with positionStatus {status!r} skipped")
            continue
        pos = np.array([parse_float(fields[i], path=path, key=columns[i]) for i in (1, 2, 3)])
        if space == "LPS":
            pos = D3 @ pos
        desc = fields[desc_idx] if desc_idx is not None else ""
        m = re.search(r"T1 (?P<name>\S+) sha256=(?P<sha>[0-9a-fA-F]{64})", desc)
        if m and t1_sha is None:
            t1_name, t1_sha = m.group("name"), m.group("sha").lower()
        targets.append(
            NavTarget(
                fields[label_idx],
                None,
                position_ras_mm=pos,
                kind="target",
                info={"id": fields[0], "description": desc},
            )
        )
    return collector.nav_file(
        "fcsv",
        targets,
        source_frame=space,
        version=version,
        t1_name=t1_name,
        t1_sha256=t1_sha,
        skipped=skipped,
    )
