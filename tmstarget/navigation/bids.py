"""BIDS NIBS-style markers (BEP037 draft v6.2; **unstable**).  Spec §3.9.

Files: ``sub-<l>[_ses-<l>]_task-<l>[_stimsys-tms]_markers.tsv`` with its
``_markers.json`` sidecar and ``_coordsystem.json``.

tmstarget's reading of the under-specified draft columns (stated in the
sidecar and ``NIBSCoordinateSystemDescription``):

* ``coil_x/y/z`` = coil centre; ``normal_x/y/z`` = SimNIBS z (into the head);
  ``direction_x/y/z`` = handle direction ``h = -y_sim``;
* ``coil_transform`` = JSON array of 16 numbers, row-major, SimNIBS axes;
* ``target_x/y/z`` = the cortical target (when known);
* all in the RAS mm world of the T1 named in the sidecar.

The reader refuses files without the tmstarget sidecar declaration unless
the caller states ``assume_tmstarget=True`` (the columns then mean the above).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tmstarget.errors import NavigationFormatError
from tmstarget.navigation._common import (
    SIMNIBS_AXES_TEXT,
    WarningCollector,
    begin_write,
    is_decimal_comma,
    load_json_strict,
    parse_float,
    read_marker,
    read_pose,
    read_text_lines,
    tmstarget_declaration,
    xyz_cells,
)
from tmstarget.spaces import angle_between_deg, pose_from_axes

__all__ = ["write_bids_markers", "read_bids_markers", "bids_sidecar_paths", "BIDS_COLUMNS"]

DECIMALS = 10
NA = "n/a"
BIDS_COLUMNS = [
    "target_id",
    "target_group",
    "target_label",
    "target_description",
    "peeling_depth",
    "target_x",
    "target_y",
    "target_z",
    "entry_x",
    "entry_y",
    "entry_z",
    "coil_transform",
    "coil_x",
    "coil_y",
    "coil_z",
    "normal_x",
    "normal_y",
    "normal_z",
    "direction_x",
    "direction_y",
    "direction_z",
    "electric_field_max_x",
    "electric_field_max_y",
    "electric_field_max_z",
]

_DESCRIPTIONS = {
    "target_id": "Marker number (1 = the planned target, then candidates by rank).",
    "target_group": "Producer of the marker (tmstarget).",
    "target_label": "Marker name as shown in the navigator.",
    "target_description": "Free text: kind, rank and T1 identity.",
    "peeling_depth": "Not used by tmstarget (n/a).",
    "target_x": "Cortical target, RAS x (mm) in the T1 world.",
    "target_y": "Cortical target, RAS y (mm).",
    "target_z": "Cortical target, RAS z (mm).",
    "entry_x": "Not used by tmstarget (n/a).",
    "entry_y": "Not used by tmstarget (n/a).",
    "entry_z": "Not used by tmstarget (n/a).",
    "coil_transform": "Coil pose: JSON array of 16 numbers, row-major 4x4, SimNIBS coil axes "
    "(columns x, y, z, centre), RAS mm.",
    "coil_x": "Coil centre, RAS x (mm).",
    "coil_y": "Coil centre, RAS y (mm).",
    "coil_z": "Coil centre, RAS z (mm).",
    "normal_x": "Coil normal = SimNIBS z axis, pointing INTO the head (RAS unit vector).",
    "normal_y": "Coil normal, y component.",
    "normal_z": "Coil normal, z component.",
    "direction_x": "Handle direction h = -y (SimNIBS y points away from the handle), "
    "RAS unit vector.",
    "direction_y": "Handle direction, y component.",
    "direction_z": "Handle direction, z component.",
    "electric_field_max_x": "Not computed (n/a).",
    "electric_field_max_y": "Not computed (n/a).",
    "electric_field_max_z": "Not computed (n/a).",
}


def bids_sidecar_paths(tsv_path):
    """Return ``(markers_json, coordsystem_json)`` paths for a ``*_markers.tsv``."""
    tsv_path = Path(tsv_path)
    if not tsv_path.name.endswith("_markers.tsv"):
        raise NavigationFormatError(
            f"BIDS markers file must be named *_markers.tsv; got {tsv_path.name!r}"
        )
    stem = tsv_path.name[: -len("_markers.tsv")]
    return tsv_path.with_name(stem + "_markers.json"), tsv_path.with_name(
        stem + "_coordsystem.json"
    )


def _declaration(t1ref):
    return tmstarget_declaration(
        t1ref,
        world="RAS",
        units="mm",
        coil_axes="simnibs",
        axes=SIMNIBS_AXES_TEXT,
        normal="normal_* = SimNIBS z, into the head",
        direction="direction_* = handle = -y",
        coil_transform="JSON array of 16 numbers, row-major, SimNIBS convention",
    )


def render_bids(targets, t1ref, coordinate_system):
    out_lines = ["\t".join(BIDS_COLUMNS)]
    for i, tgt in enumerate(targets, start=1):
        row = dict.fromkeys(BIDS_COLUMNS, NA)
        row["target_id"] = str(i)
        row["target_group"] = "tmstarget"
        row["target_label"] = tgt.name
        rank = tgt.info.get("rank") if tgt.info else None
        row["target_description"] = (
            f"tmstarget {tgt.kind}{'' if rank is None else f' rank {rank}'}; "
            f"T1 {t1ref.name} sha256={t1ref.sha256}"
        )
        cortex = tgt.info.get("cortex_ras_mm") if tgt.info else None
        if not tgt.has_pose:
            cortex = tgt.position_ras_mm
        if cortex is not None:
            row.update(xyz_cells("target", cortex, DECIMALS))
        if tgt.has_pose:
            pose = tgt.pose_ras
            row["coil_transform"] = json.dumps([float(v) + 0.0 for v in pose.reshape(-1)])
            row.update(xyz_cells("coil", pose[:3, 3], DECIMALS))
            row.update(xyz_cells("normal", pose[:3, 2], DECIMALS))
            row.update(xyz_cells("direction", -pose[:3, 1], DECIMALS))
        out_lines.append("\t".join(row[c] for c in BIDS_COLUMNS))
    sidecar = {c: {"Description": _DESCRIPTIONS[c]} for c in BIDS_COLUMNS}
    for c in BIDS_COLUMNS:
        if c.endswith(("_x", "_y", "_z")) and not c.startswith(("normal", "direction")):
            sidecar[c]["Units"] = "mm"
    sidecar["tmstarget"] = _declaration(t1ref)
    coordsystem = {
        "IntendedFor": t1ref.name,
        "NIBSCoordinateSystem": coordinate_system,
        "NIBSCoordinateUnits": "mm",
        "NIBSCoordinateSystemDescription": (
            f"RAS world (+x right, +y anterior, +z superior, mm) of the T1 {t1ref.name} "
            f"(sha256 {t1ref.sha256}, {t1ref.xform.xform}). Coil axes in the SimNIBS "
            "convention: normal_* = z, into the head; direction_* = handle = -y; "
            "coil_transform = 16 numbers, row-major 4x4 (columns x, y, z, centre)."
        ),
        "tmstarget": _declaration(t1ref),
    }
    return (
        "\n".join(out_lines) + "\n",
        json.dumps(sidecar, indent=2, allow_nan=False) + "\n",
        json.dumps(coordsystem, indent=2, allow_nan=False) + "\n",
    )


def write_bids_markers(
    path,
    targets,
    *,
    t1,
    xform=None,
    coordinate_system="IndividualMRI",
    overwrite=False,
    provenance=None,
):
    """Write ``*_markers.tsv`` + ``_markers.json`` + ``_coordsystem.json``.

    Parameters
    ----------
    path : str or Path
        Must end with ``_markers.tsv``.
    coordinate_system : str
        ``NIBSCoordinateSystem``: ``IndividualMRI`` for a native T1, else the
        full template name (e.g. ``MNI152NLin2009cAsym``).
    """
    path = Path(path)
    json_path, coord_path = bids_sidecar_paths(path)
    job = begin_write(
        "bids", targets, t1=t1, xform=xform, overwrite=overwrite, provenance=provenance
    )
    tsv, sidecar, coordsystem = render_bids(job.targets, job.t1ref, coordinate_system)

    def reader(p, companions):
        return read_bids_markers(p, sidecar=companions[json_path.name])

    return job.write(path, tsv, reader, companions={json_path: sidecar, coord_path: coordsystem})


def _cell_float(row, col, path, lineno):
    value = row.get(col, NA)
    if value is None or value.strip() in (NA, ""):
        return None
    return parse_float(value, path=path, key=f"line {lineno} {col}")


def _vec(row, prefix, path, lineno):
    vals = [_cell_float(row, f"{prefix}_{a}", path, lineno) for a in "xyz"]
    if all(v is None for v in vals):
        return None
    if any(v is None for v in vals):
        raise NavigationFormatError(f"line {lineno}: {prefix}_x/y/z are partly n/a", path=path)
    return np.array(vals)


def read_bids_markers(path, *, sidecar=None, assume_tmstarget=False, **_ignored):
    """Read a BIDS NIBS ``*_markers.tsv`` written with tmstarget's column meanings.

    Columns are found by name.  The pose comes from ``coil_transform`` when
    present (cross-checked against ``coil_*``, ``normal_*``, ``direction_*``:
    disagreement > 0.01 mm / 0.01° is an error), else from those columns;
    rows without any pose or target position are skipped with a warning.

    Parameters
    ----------
    sidecar : path, optional
        The ``_markers.json`` (default: beside the TSV).
    assume_tmstarget : bool
        Read a file whose sidecar lacks the tmstarget declaration with
        tmstarget's column meanings anyway.
    """
    path = Path(path)
    collector = WarningCollector(path)
    if sidecar is None:
        sidecar = bids_sidecar_paths(path)[0] if path.name.endswith("_markers.tsv") else None
    meta = None
    if sidecar is not None and Path(sidecar).is_file():
        doc = load_json_strict(sidecar)
        meta = doc.get("tmstarget") if isinstance(doc, dict) else None
    if (
        not isinstance(meta, dict)
        or meta.get("coil_axes") != "simnibs"
        or meta.get("world") != "RAS"
    ):
        if not assume_tmstarget:
            raise NavigationFormatError(
                "no tmstarget declaration in the _markers.json sidecar: the draft BIDS NIBS "
                "columns (direction_*, coil_transform) have no agreed meaning, so tmstarget "
                "will not guess; pass assume_tmstarget=True if the file follows tmstarget's "
                "conventions (RAS mm, normal = z into head, direction = handle = -y)",
                path=path,
            )
        collector.warn("column meanings assumed to follow tmstarget's conventions, as requested")
        meta = meta or {}
    lines = read_text_lines(path, strip=" \r", skip_blank=True)
    if not lines:
        raise NavigationFormatError("empty markers.tsv", path=path)
    header = lines[0].split("\t")
    missing = [c for c in ("target_label",) if c not in header]
    if missing:
        raise NavigationFormatError(f"missing required column(s) {missing}", path=path)
    targets = []
    skipped = 0
    for lineno, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        if len(cells) != len(header):
            raise NavigationFormatError(
                f"line {lineno}: {len(cells)} cells for {len(header)} columns", path=path
            )
        for cell in cells:
            if is_decimal_comma(cell):
                raise NavigationFormatError(
                    f"line {lineno}: value {cell!r} uses a decimal comma", path=path
                )
        row = dict(zip(header, cells))
        name = row["target_label"]
        pose = None
        centre = _vec(row, "coil", path, lineno)
        normal = _vec(row, "normal", path, lineno)
        handle = _vec(row, "direction", path, lineno)
        transform = row.get("coil_transform", NA).strip()
        what = f"line {lineno} {name!r}"
        if transform not in (NA, ""):
            try:
                vals = json.loads(transform)
                mat = np.array(vals, dtype=float).reshape(4, 4)
            except (ValueError, TypeError):
                raise NavigationFormatError(
                    f"{what}: coil_transform must be a JSON array of 16 numbers", path=path
                ) from None
            pose = read_pose(mat, what=what, collector=collector)
            if centre is not None and np.linalg.norm(centre - pose[:3, 3]) > 0.01:
                raise NavigationFormatError(
                    f"{what}: coil_* disagrees with coil_transform", path=path
                )
            if normal is not None and angle_between_deg(normal, pose[:3, 2]) > 0.01:
                raise NavigationFormatError(
                    f"{what}: normal_* disagrees with coil_transform", path=path
                )
            if handle is not None and angle_between_deg(handle, -pose[:3, 1]) > 0.01:
                raise NavigationFormatError(
                    f"{what}: direction_* disagrees with the handle (-y) of coil_transform",
                    path=path,
                )
        elif centre is not None and normal is not None and handle is not None:
            pose = read_pose(
                pose_from_axes(centre, -handle, normal), what=what, collector=collector
            )
        cortex = _vec(row, "target", path, lineno)
        info = {"target_id": row.get("target_id")}
        if cortex is not None:
            info["cortex_ras_mm"] = [float(v) for v in cortex]
        if pose is None and cortex is None:
            skipped += 1
            collector.warn(f"{what}: no pose and no target position (n/a): skipped")
            continue
        targets.append(read_marker(name, pose, cortex, info=info))
    return collector.nav_file(
        "bids",
        targets,
        source_frame="RAS",
        coil_convention="simnibs",
        version="BEP037 v6.2 (draft)",
        t1_name=meta.get("t1"),
        t1_sha256=str(meta["t1_sha256"]).lower() if meta.get("t1_sha256") else None,
        skipped=skipped,
    )
