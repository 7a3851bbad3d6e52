"""Plain CSV and JSON lists of the planned target and its candidates.

Every row/entry carries the T1 identity, the world frame (RAS mm) and the
coil convention (SimNIBS: z into the head, handle = -y).  The CSV holds the
pose as ``pose_RC`` columns (row R, column C of the 4×4, rows 0–2); the JSON
as ``pose_ras`` (list of 4 rows).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from tmstarget.errors import NavigationFormatError
from tmstarget.navigation._common import (
    SIMNIBS_AXES_TEXT,
    WarningCollector,
    begin_write,
    fmt_num,
    load_json_strict,
    parse_float,
    read_marker,
    read_pose,
    read_text_lines,
    tmstarget_declaration,
    xyz_cells,
)

__all__ = [
    "write_candidates_csv",
    "read_candidates_csv",
    "write_candidates_json",
    "read_candidates_json",
    "CSV_COLUMNS",
]

DECIMALS = 10
#: What every plain file declares (and the readers require): RAS world, SimNIBS axes.
_FRAME = {"source_frame": "RAS", "coil_convention": "simnibs"}
POSE_COLS = [f"pose_{r}{c}" for r in range(3) for c in range(4)]
CSV_COLUMNS = (
    [
        "kind",
        "rank",
        "name",
        "method",
        "score",
        "target_x",
        "target_y",
        "target_z",
        "mni_x",
        "mni_y",
        "mni_z",
        "has_pose",
        "coil_x",
        "coil_y",
        "coil_z",
        "handle_x",
        "handle_y",
        "handle_z",
        "normal_x",
        "normal_y",
        "normal_z",
    ]
    + POSE_COLS
    + ["scalp_to_cortex_mm", "world", "coil_convention", "t1_file", "t1_sha256", "xform"]
)


def _opt(value, decimals=DECIMALS):
    if value is None:
        return ""
    if isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool):
        return fmt_num(value, decimals)
    return str(value)


def render_candidates_csv(targets, t1ref):
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for tgt in targets:
        info = tgt.info or {}
        row = dict.fromkeys(CSV_COLUMNS, "")
        row.update(
            kind=tgt.kind,
            rank=_opt(info.get("rank")),
            name=tgt.name,
            method=_opt(info.get("method")),
            score=_opt(info.get("score")),
            has_pose="1" if tgt.has_pose else "0",
            scalp_to_cortex_mm=_opt(info.get("scalp_to_cortex_mm")),
            world="RAS",
            coil_convention="simnibs",
            t1_file=t1ref.name,
            t1_sha256=t1ref.sha256,
            xform=t1ref.xform.xform,
        )
        if isinstance(info.get("rank"), int):
            row["rank"] = str(info["rank"])
        cortex = info.get("cortex_ras_mm")
        if cortex is None and not tgt.has_pose:
            cortex = tgt.position_ras_mm
        if cortex is not None:
            row.update(xyz_cells("target", cortex, DECIMALS))
        mni = info.get("mni_mm")
        if mni is not None:
            row.update(xyz_cells("mni", mni, DECIMALS))
        if tgt.has_pose:
            pose = tgt.pose_ras
            row.update(xyz_cells("coil", pose[:3, 3], DECIMALS))
            row.update(xyz_cells("handle", -pose[:3, 1], DECIMALS))
            row.update(xyz_cells("normal", pose[:3, 2], DECIMALS))
            for r in range(3):
                for c in range(4):
                    row[f"pose_{r}{c}"] = _opt(float(pose[r, c]))
        writer.writerow([row[c] for c in CSV_COLUMNS])
    return buf.getvalue()


def write_candidates_csv(path, targets, *, t1, xform=None, overwrite=False, provenance=None):
    """Write all markers as a plain CSV (RAS mm, SimNIBS axes, T1 identity per row)."""
    job = begin_write(
        "csv", targets, t1=t1, xform=xform, overwrite=overwrite, provenance=provenance
    )
    return job.write(path, render_candidates_csv(job.targets, job.t1ref), read_candidates_csv)


def _info_from(values, path, key_prefix=""):
    info = {}
    for key in ("rank",):
        if values.get(key) not in (None, ""):
            try:
                info[key] = int(values[key])
            except ValueError:
                info[key] = values[key]
    for key in ("method",):
        if values.get(key) not in (None, ""):
            info[key] = values[key]
    for key in ("score", "scalp_to_cortex_mm"):
        if values.get(key) not in (None, ""):
            info[key] = parse_float(values[key], path=path, key=key)
    return info


def read_candidates_csv(path, **_ignored):
    """Read a tmstarget candidates CSV (columns by name)."""
    path = Path(path)
    collector = WarningCollector(path)
    lines = read_text_lines(path, skip_blank=True)
    rows = list(csv.DictReader(io.StringIO("\n".join(lines))))
    if not lines:
        raise NavigationFormatError("empty CSV", path=path)
    header = next(csv.reader(io.StringIO(lines[0])))
    missing = [c for c in ("name", "world", "coil_convention", "has_pose") if c not in header]
    if missing:
        raise NavigationFormatError(
            f"not a tmstarget candidates CSV: missing column(s) {missing}", path=path
        )
    targets = []
    t1_name = t1_sha = None
    for lineno, row in enumerate(rows, start=2):
        if None in row or any(v is None for v in row.values()):
            raise NavigationFormatError(
                f"line {lineno}: wrong number of fields (a decimal comma splits numbers)", path=path
            )
        if row["world"] != "RAS" or row["coil_convention"] != "simnibs":
            raise NavigationFormatError(
                f"line {lineno}: world {row['world']!r} / convention {row['coil_convention']!r}; "
                "expected RAS / simnibs",
                path=path,
            )
        t1_name = t1_name or row.get("t1_file") or None
        t1_sha = t1_sha or (row.get("t1_sha256") or "").lower() or None
        info = _info_from(row, path)
        if all(row.get(f"target_{a}") not in (None, "") for a in "xyz"):
            info["cortex_ras_mm"] = [
                parse_float(row[f"target_{a}"], path=path, key=f"target_{a}") for a in "xyz"
            ]
        if all(row.get(f"mni_{a}") not in (None, "") for a in "xyz"):
            info["mni_mm"] = [
                parse_float(row[f"mni_{a}"], path=path, key=f"mni_{a}") for a in "xyz"
            ]
        pose = None
        what = f"line {lineno} {row['name']!r}"
        if row["has_pose"] == "1":
            mat = np.eye(4)
            for r in range(3):
                for c in range(4):
                    mat[r, c] = parse_float(row[f"pose_{r}{c}"], path=path, key=f"pose_{r}{c}")
            pose = read_pose(mat, what=what, collector=collector)
        elif "cortex_ras_mm" not in info:
            raise NavigationFormatError(f"{what}: neither a pose nor a target position", path=path)
        kind = row.get("kind") or "target"
        targets.append(
            read_marker(row["name"], pose, info.get("cortex_ras_mm"), kind=kind, info=info)
        )
    return collector.nav_file("csv", targets, **_FRAME, t1_name=t1_name, t1_sha256=t1_sha)


# --------------------------------------------------------------------------
# JSON


def render_candidates_json(targets, t1ref):
    markers = []
    for tgt in targets:
        info = dict(tgt.info or {})
        entry = {
            "kind": tgt.kind,
            "rank": info.pop("rank", None),
            "name": tgt.name,
            "method": info.pop("method", None),
            "score": info.pop("score", None),
            "target_ras_mm": info.pop("cortex_ras_mm", None),
            "mni_mm": info.pop("mni_mm", None),
            "scalp_to_cortex_mm": info.pop("scalp_to_cortex_mm", None),
            "pose_ras": None,
            "coil_centre_ras_mm": None,
            "handle_ras": None,
            "normal_ras": None,
        }
        if entry["target_ras_mm"] is None and not tgt.has_pose:
            entry["target_ras_mm"] = [float(v) for v in tgt.position_ras_mm]
        if tgt.has_pose:
            entry["pose_ras"] = [[float(v) + 0.0 for v in row] for row in tgt.pose_ras]
            entry["coil_centre_ras_mm"] = [float(v) for v in tgt.position_ras_mm]
            entry["handle_ras"] = [float(v) + 0.0 for v in tgt.handle_ras]
            entry["normal_ras"] = [float(v) + 0.0 for v in tgt.normal_ras]
        markers.append(entry)
    doc = {
        "tmstarget": tmstarget_declaration(
            t1ref, world="RAS", units="mm", coil_convention="simnibs", axes=SIMNIBS_AXES_TEXT
        ),
        "markers": markers,
    }
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def write_candidates_json(path, targets, *, t1, xform=None, overwrite=False, provenance=None):
    """Write all markers as plain JSON (RAS mm, SimNIBS axes, T1 identity)."""
    job = begin_write(
        "json", targets, t1=t1, xform=xform, overwrite=overwrite, provenance=provenance
    )
    return job.write(path, render_candidates_json(job.targets, job.t1ref), read_candidates_json)


def read_candidates_json(path, **_ignored):
    """Read a tmstarget candidates JSON."""
    path = Path(path)
    collector = WarningCollector(path)
    doc = load_json_strict(path)
    meta = doc.get("tmstarget") if isinstance(doc, dict) else None
    if not isinstance(meta, dict) or not isinstance(doc.get("markers"), list):
        raise NavigationFormatError("not a tmstarget candidates JSON", path=path)
    if meta.get("world") != "RAS" or meta.get("coil_convention") != "simnibs":
        raise NavigationFormatError(
            f"world {meta.get('world')!r} / convention {meta.get('coil_convention')!r}; expected "
            "RAS / simnibs",
            path=path,
        )
    targets = []
    for i, entry in enumerate(doc["markers"]):
        if not isinstance(entry, dict) or "name" not in entry:
            raise NavigationFormatError(f"markers[{i}] is not a marker object", path=path)
        info = {}
        for key, out in (
            ("rank", "rank"),
            ("method", "method"),
            ("score", "score"),
            ("target_ras_mm", "cortex_ras_mm"),
            ("mni_mm", "mni_mm"),
            ("scalp_to_cortex_mm", "scalp_to_cortex_mm"),
        ):
            if entry.get(key) is not None:
                info[out] = entry[key]
        pose = None
        if entry.get("pose_ras") is not None:
            try:
                mat = np.array(entry["pose_ras"], dtype=float)
            except (TypeError, ValueError):
                raise NavigationFormatError(
                    f"markers[{i}].pose_ras is not numeric", path=path
                ) from None
            pose = read_pose(mat, what=f"markers[{i}] {entry['name']!r}", collector=collector)
        elif entry.get("target_ras_mm") is None:
            raise NavigationFormatError(
                f"markers[{i}]: neither pose_ras nor target_ras_mm", path=path
            )
        name, kind = str(entry["name"]), entry.get("kind") or "target"
        targets.append(read_marker(name, pose, entry.get("target_ras_mm"), kind=kind, info=info))
    return collector.nav_file(
        "json",
        targets,
        **_FRAME,
        version=meta.get("version"),
        t1_name=meta.get("t1"),
        t1_sha256=str(meta.get("t1_sha256") or "").lower() or None,  # null means unknown, not "none"
    )
