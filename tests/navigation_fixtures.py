"""Synthetic data for navigation tests (spec §7): P_ref, the reference T1, plans.

Test helpers only: hand-written from the spec, sharing no code with tmstarget
(hashes with hashlib), so the navigation tests compare against an independent
reference.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np

S = 1.0 / math.sqrt(2.0)
#: Reference T1 affine (spec §7): 1 mm, radiological (L,A,S) storage.
REFERENCE_AFFINE = np.array(
    [[-1.0, 0.0, 0.0, 90.0], [0.0, 1.0, 0.0, -126.0], [0.0, 0.0, 1.0, -72.0], [0.0, 0.0, 0.0, 1.0]]
)

#: A file name per format key that its writer and reader accept (BIDS needs
#: ``*_markers.tsv``; Localite's own ``InstrumentMarker<timestamp>.xml``).
FILE_NAMES = {
    "localite": "InstrumentMarker20240301101502120.xml",
    "brainsight": "b.txt",
    "ant": "a.mrk",
    "slicer": "s.mrk.json",
    "fcsv": "f.fcsv",
    "simnibs": "s.csv",
    "bids": "sub-01_task-x_markers.tsv",
    "csv": "c.csv",
    "json": "c.json",
}


def p_ref():
    """P_ref (SimNIBS, RAS): x = (-s, s, 0), y = (s, s, 0), z = (0, 0, -1), c = (-38, 44, 30)."""
    pose = np.eye(4)
    pose[:3, 0] = [-S, S, 0.0]
    pose[:3, 1] = [S, S, 0.0]
    pose[:3, 2] = [0.0, 0.0, -1.0]
    pose[:3, 3] = [-38.0, 44.0, 30.0]
    return pose


def random_poses(n, seed=0):
    """``n`` poses: uniform random rotations, centres in the spec §7.2 box."""
    rng = np.random.default_rng(seed)
    poses = []
    for _ in range(n):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        w, x, y, z = q
        rot = np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
            ]
        )
        pose = np.eye(4)
        pose[:3, :3] = rot
        pose[:3, 3] = rng.uniform([-80, -110, -40], [80, 80, 90])
        poses.append(pose)
    return poses


def make_reference_t1(
    path,
    *,
    shape=(256, 256, 256),
    qform=None,
    sform=None,
    qform_code=1,
    sform_code=1,
    head_centre_ras=(0.0, 0.0, 0.0),
    head_radius_mm=80.0,
):
    """Write the spec §7 reference T1 (uint8) with a bright spherical 'head'.

    ``qform``/``sform`` default to :data:`REFERENCE_AFFINE`; pass others to
    make them differ.  Returns the path.
    """
    import nibabel as nib

    qform = REFERENCE_AFFINE if qform is None else np.asarray(qform, dtype=float)
    sform = REFERENCE_AFFINE if sform is None else np.asarray(sform, dtype=float)
    data = np.zeros(shape, dtype=np.uint8)
    inv = np.linalg.inv(sform if sform_code > 0 else qform)
    centre_ijk = (inv @ np.array(list(head_centre_ras) + [1.0]))[:3]
    radius_vox = head_radius_mm / np.abs(np.linalg.det(sform[:3, :3])) ** (1 / 3)
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    dist2 = sum((g - c) ** 2 for g, c in zip(grids, centre_ijk))
    data[dist2 <= radius_vox**2] = 200
    img = nib.Nifti1Image(data, sform)
    img.set_qform(qform, int(qform_code))
    img.set_sform(sform, int(sform_code))
    path = Path(path)
    nib.save(img, str(path))
    return path


def write_plan(
    plan_dir,
    t1_path,
    *,
    pose=None,
    target_ras=(-38.0, 44.0, 30.0),
    name="sgacc-dlpfc-1",
    candidates=None,
    space="T1w",
    t1_sha256=None,
    relative_t1=False,
    extra=None,
):
    """Write a ``target.json`` following the plan contract; returns the plan folder."""
    plan_dir = Path(plan_dir)
    plan_dir.mkdir(parents=True, exist_ok=True)
    t1_path = Path(t1_path)
    doc = {
        "protocol": "sgacc-dlpfc",
        "space": space,
        "participant": "01",
        "target": {
            "name": name,
            "ras_mm": [float(v) for v in target_ras],
            "mni_mm": [float(v) for v in target_ras],
            "voxel_ijk": [128, 170, 102],
            "score": -0.4,
            "method": "cluster",
        },
        "candidates": candidates
        if candidates is not None
        else [
            {
                "rank": 1,
                "name": name,
                "ras_mm": [float(v) for v in target_ras],
                "mni_mm": [float(v) for v in target_ras],
                "score": -0.4,
            },
        ],
        "anatomy": {
            "t1": str(t1_path.relative_to(plan_dir)) if relative_t1 else str(t1_path),
            "t1_sha256": t1_sha256 or hashlib.sha256(Path(t1_path).read_bytes()).hexdigest(),
        },
        "provenance": {"tmstarget_version": "0.1.0"},
    }
    if pose is not None:
        doc["coil"] = coil_block(pose)
    if extra:
        doc.update(extra)
    (plan_dir / "target.json").write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return plan_dir


def coil_block(pose, scalp_to_cortex_mm=14.2):
    pose = np.asarray(pose, dtype=float)
    return {
        "centre_ras_mm": pose[:3, 3].tolist(),
        "matrix": pose.tolist(),
        "handle_direction": (-pose[:3, 1]).tolist(),
        "scalp_to_cortex_mm": scalp_to_cortex_mm,
        "convention": "simnibs",
    }


def write_edited_json(source, dest, edit):
    """Copy the JSON file ``source`` to ``dest`` after ``edit(doc)`` changed it in place.

    Returns ``dest`` (a Path).
    """
    doc = json.loads(Path(source).read_text())
    edit(doc)
    dest = Path(dest)
    dest.write_text(json.dumps(doc))
    return dest
