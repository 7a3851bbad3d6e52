"""Anatomical left/right test: the exported point must land in the *left* DLPFC.

The T1 has a bright blob only in the left hemisphere around RAS (-38, 44, 30)
(radiological storage, so voxel order says nothing about the side).  Every
written file is read raw, using only the frame the file declares, mapped to a
voxel with the T1's affine, and must hit the blob.  A writer with the
LPS<->RAS flip removed puts the point in the right hemisphere: the same check
fails on it, and our own writer refuses to keep such a file.
"""

import csv
import json
import xml.etree.ElementTree as ET

import nibabel as nib
import numpy as np
import pytest

from navigation_fixtures import FILE_NAMES, REFERENCE_AFFINE, p_ref
from tmstarget.errors import NavigationFormatError
from tmstarget.navigation import NavTarget, load_t1_reference
from tmstarget.navigation.formats import FORMATS
from tmstarget.spaces import D

BLOB = 250


@pytest.fixture(scope="module")
def blob_t1(tmp_path_factory):
    shape = (256, 256, 256)
    data = np.zeros(shape, np.uint8)
    inv = np.linalg.inv(REFERENCE_AFFINE)
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    head = (inv @ [0, 0, 0, 1])[:3]
    data[sum((g - c) ** 2 for g, c in zip(grids, head)) <= 80**2] = 100
    left = (inv @ [-38, 44, 30, 1])[:3]
    data[sum((g - c) ** 2 for g, c in zip(grids, left)) <= 5**2] = BLOB
    img = nib.Nifti1Image(data, REFERENCE_AFFINE)
    img.set_qform(REFERENCE_AFFINE, 1)
    img.set_sform(REFERENCE_AFFINE, 1)
    path = tmp_path_factory.mktemp("blob") / "sub-01_T1w.nii"
    nib.save(img, str(path))
    mirror = (inv @ [38, 44, 30, 1])[:3].round().astype(int)
    assert data[tuple(mirror)] == 100  # the right-hemisphere mirror point is not the blob
    return path, data


def raw_position_ras(fmt, path):
    """Position from the raw file, converted with the frame the file declares."""
    text = path.read_text(encoding="utf-8")
    if fmt == "localite":
        root = ET.fromstring(text.encode())
        m = root.find(".//Matrix4D")
        pos = np.array([float(m.get(f"data{r}3")) for r in range(3)])
        return D[:3, :3] @ pos if root.get("coordinateSpace") == "LPS" else pos
    if fmt == "brainsight":
        lines = text.splitlines()
        assert any(ln.startswith("# Coordinate system: NIfTI:") for ln in lines)
        cols = [ln for ln in lines if ln.startswith("# Target Name")][0][2:].split("\t")
        row = dict(zip(cols, [ln for ln in lines if not ln.startswith("#")][0].split("\t")))
        return np.array([float(row[f"Loc. {a}"]) for a in "XYZ"])
    if fmt == "ant":
        mat = json.loads(text)["TargetMarkers"][0]["CoilTarget"]["CoilPose"][
            "RigidTransformMatrix4x4"
        ]
        return np.array([mat[r][3] for r in range(3)])
    if fmt == "slicer":
        markup = json.loads(text)["markups"][0]
        pos = np.array(markup["controlPoints"][0]["position"])
        return D[:3, :3] @ pos if markup["coordinateSystem"] == "LPS" else pos
    if fmt == "fcsv":
        cs = [ln for ln in text.splitlines() if ln.startswith("# CoordinateSystem")][0]
        row = next(csv.reader([ln for ln in text.splitlines() if not ln.startswith("#")]))
        pos = np.array([float(v) for v in row[1:4]])
        return D[:3, :3] @ pos if cs.split("=")[1].strip() in ("1", "LPS") else pos
    if fmt == "simnibs":
        row = [r for r in csv.reader(text.splitlines()) if r and r[0] == "CoilPos"][0]
        return np.array([float(v) for v in row[1:4]])
    if fmt == "bids":
        row = next(csv.DictReader(text.splitlines(), delimiter="\t"))
        return np.array([float(row[f"coil_{a}"]) for a in "xyz"])
    if fmt == "csv":
        row = next(csv.DictReader(text.splitlines()))
        return np.array([float(row[f"coil_{a}"]) for a in "xyz"])
    if fmt == "json":
        return np.array(json.loads(text)["markers"][0]["coil_centre_ras_mm"])
    raise AssertionError(fmt)


def lands_in_blob(pos_ras, data):
    ijk = (np.linalg.inv(REFERENCE_AFFINE) @ np.r_[pos_ras, 1.0])[:3].round().astype(int)
    if np.any(ijk < 0) or np.any(ijk >= np.array(data.shape)):
        return False
    return bool(data[tuple(ijk)] == BLOB)


CASES = [(fmt, "RAS") for fmt in FORMATS] + [("localite", "LPS"), ("slicer", "LPS")]


@pytest.mark.parametrize("fmt, space", CASES)
def test_export_lands_in_left_dlpfc(tmp_path, blob_t1, fmt, space):
    t1_path, data = blob_t1
    kwargs = {"space": space} if fmt in ("localite", "slicer") else {}
    path = FORMATS[fmt].writer(
        tmp_path / FILE_NAMES[fmt],
        [NavTarget("L-DLPFC", p_ref())],
        t1=load_t1_reference(t1_path),
        **kwargs,
    )
    pos = raw_position_ras(fmt, path)
    assert pos[0] < 0, "left target must have RAS x < 0"
    assert lands_in_blob(pos, data), f"{fmt}: point {pos} is not in the left DLPFC blob"


def test_missing_flip_is_caught(tmp_path, blob_t1, monkeypatch):
    """Remove the RAS->LPS flip from the Localite writer: the point lands on the right."""
    import tmstarget.navigation.localite as loc
    from tmstarget.spaces import pose_to_file

    t1_path, data = blob_t1
    t1ref = load_t1_reference(t1_path)

    def no_flip(pose, *, world, axes):
        return pose_to_file(pose, world="RAS", axes=axes)  # bug: ignores the declared frame

    monkeypatch.setattr(loc, "pose_to_file", no_flip)
    text = loc.render_localite([NavTarget("L-DLPFC", p_ref())], t1ref, "LPS")
    buggy = tmp_path / "buggy.xml"
    buggy.write_text(text, encoding="utf-8")
    pos = raw_position_ras("localite", buggy)
    assert pos[0] > 0 and pos[1] < 0  # mirrored in x and y: right and posterior
    assert not lands_in_blob(pos, data)
    # and the writer's read-back verification refuses to keep such a file
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(NavigationFormatError, match="mm away"):
        loc.write_localite(out / "x.xml", [("L-DLPFC", p_ref())], t1=t1ref, space="LPS")
    assert list(out.iterdir()) == []
