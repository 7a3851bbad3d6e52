"""Navigation files carry the cortical target beside the coil pose (issue 14 item 15).

Each file is parsed here with a small hand-written reader that follows the
format's own convention (spec §3), not tmstarget's readers, and the second
marker must equal the plan's cortical target in that format's frame:
Localite RAS/LPS (``data03..data23``), Brainsight ``Loc. X/Y/Z`` (NIfTI RAS),
Slicer ``.mrk.json`` (LPS), ``.fcsv`` (``CoordinateSystem = 0``, RAS), SimNIBS
``Generic`` row (RAS), ANT ``SourceInfo`` (RAS; its ``CoilTarget`` list holds
coil poses only), BIDS ``target_*`` (RAS). The numbers are asymmetric so a
flipped or swapped axis changes them.
"""

import csv
import json
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from navigation_fixtures import coil_block, make_reference_t1, p_ref, write_plan
from tmstarget.navigation.export import export_plan

TARGET_COIL = p_ref()[:3, 3]  # (-38, 44, 30)
TARGET_CORTEX = np.array([-40.0, 46.0, 16.0])
CAND_COIL = np.array([-42.0, 38.0, 34.0])
CAND_CORTEX = np.array([-44.0, 40.0, 20.0])
LPS = np.array([-1.0, -1.0, 1.0])
NAMES = ("sgacc-dlpfc-1", "sgacc-dlpfc-2")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A plan (target + one posed candidate) exported in every format, Localite in RAS and in LPS."""
    root = tmp_path_factory.mktemp("cortex")
    make_reference_t1(root / "sub-01_T1w.nii")
    cand = p_ref()
    cand[:3, 3] = CAND_COIL
    candidates = [
        {"rank": 1, "name": NAMES[0], "ras_mm": TARGET_CORTEX.tolist(), "score": -0.4},
        {"rank": 2, "name": NAMES[1], "ras_mm": CAND_CORTEX.tolist(), "score": -0.3, "coil": coil_block(cand)},
    ]
    plan = write_plan(root / "plan", root / "sub-01_T1w.nii", pose=p_ref(), target_ras=TARGET_CORTEX,
                      candidates=candidates)
    ras = export_plan(plan, "all")
    lps = export_plan(plan, ["localite"], root / "lps", localite_space="LPS")
    yield {fmt: paths[0] for fmt, paths in ras.files.items()} | {"localite_lps": lps.files["localite"][0]}
    shutil.rmtree(root, ignore_errors=True)


def _localite(path):
    """name -> (4x4 file matrix, colour); plus the declared coordinateSpace."""
    root = ET.parse(path).getroot()
    out = {}
    for marker in root.iter("Marker"):
        m = marker.find("Matrix4D")
        out[marker.get("description")] = (
            np.array([[float(m.get(f"data{r}{c}")) for c in range(4)] for r in range(4)]), marker.get("color"))
    return root.get("coordinateSpace"), out


@pytest.mark.parametrize("key, frame", [("localite", "RAS"), ("localite_lps", "LPS")])
def test_localite_second_marker_is_the_cortical_target(exported, key, frame):
    space, markers = _localite(exported[key])
    assert space == frame
    flip = LPS if frame == "LPS" else np.ones(3)
    assert list(markers) == [f"{n} {w}" for n in NAMES for w in ("coil", "cortex")]
    for name, coil, cortex in ((NAMES[0], TARGET_COIL, TARGET_CORTEX), (NAMES[1], CAND_COIL, CAND_CORTEX)):
        coil_m, coil_colour = markers[f"{name} coil"]
        cortex_m, cortex_colour = markers[f"{name} cortex"]
        np.testing.assert_allclose(coil_m[:3, 3], flip * coil, atol=1e-6)
        np.testing.assert_allclose(cortex_m[:3, 3], flip * cortex, atol=1e-6)
        assert coil_colour != cortex_colour
        # same orientation; Localite x (column 0) is the coil normal: the cortex lies ahead of the coil along it
        np.testing.assert_allclose(cortex_m[:3, :3], coil_m[:3, :3], atol=1e-9)
        assert (cortex_m[:3, 3] - coil_m[:3, 3]) @ coil_m[:3, 0] > 10.0
    # left hemisphere: x < 0 in RAS, x > 0 in LPS
    assert np.sign(markers[f"{NAMES[0]} cortex"][0][0, 3]) == (1 if frame == "LPS" else -1)


def test_brainsight_second_target_is_the_cortical_target(exported):
    lines = exported["brainsight"].read_text(encoding="utf-8").splitlines()
    assert "# Coordinate system: NIfTI:Scanner" in lines
    start = next(i for i, line in enumerate(lines) if line.startswith("# Target Name\t"))
    columns = lines[start][2:].split("\t")
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("#"):
            break
        rows.append(dict(zip(columns, line.split("\t"))))
    loc = {r["Target Name"]: np.array([float(r[f"Loc. {a}"]) for a in "XYZ"]) for r in rows}
    assert list(loc) == [f"{n} {w}" for n in NAMES for w in ("coil", "cortex")]
    np.testing.assert_allclose(loc[f"{NAMES[0]} cortex"], TARGET_CORTEX, atol=1e-4)
    np.testing.assert_allclose(loc[f"{NAMES[1]} cortex"], CAND_CORTEX, atol=1e-4)
    np.testing.assert_allclose(loc[f"{NAMES[0]} coil"], TARGET_COIL, atol=1e-4)
    # Brainsight z (m2n*) points out of the head: from the cortex back towards the coil
    by_name = {r["Target Name"]: r for r in rows}
    z = np.array([float(by_name[f"{NAMES[0]} cortex"][f"m2n{c}"]) for c in range(3)])
    assert (TARGET_COIL - loc[f"{NAMES[0]} cortex"]) @ z > 10.0


def test_slicer_json_second_control_point_is_the_cortical_target_in_lps(exported):
    doc = json.loads(exported["slicer"].read_text(encoding="utf-8"))
    [markup] = doc["markups"]
    assert markup["coordinateSystem"] == "LPS" and markup["coordinateUnits"] == "mm"
    points = {p["label"]: p for p in markup["controlPoints"]}
    assert list(points) == [f"{n} {w}" for n in NAMES for w in ("coil", "cortex")]
    np.testing.assert_allclose(points[f"{NAMES[0]} cortex"]["position"], [40.0, -46.0, 16.0], atol=1e-9)
    np.testing.assert_allclose(points[f"{NAMES[1]} cortex"]["position"], LPS * CAND_CORTEX, atol=1e-9)
    np.testing.assert_allclose(points[f"{NAMES[0]} coil"]["position"], [38.0, -44.0, 30.0], atol=1e-9)
    assert "orientation" not in points[f"{NAMES[0]} cortex"]  # a point, not a second coil
    assert points[f"{NAMES[0]} cortex"]["positionStatus"] == "defined"


def test_fcsv_second_point_is_the_cortical_target_in_ras(exported):
    lines = exported["fcsv"].read_text(encoding="utf-8").splitlines()
    assert "# CoordinateSystem = 0" in lines
    columns = next(line for line in lines if line.startswith("# columns = "))[len("# columns = "):].split(",")
    rows = [dict(zip(columns, line.split(","))) for line in lines if line and not line.startswith("#")]
    xyz = {r["label"]: np.array([float(r[a]) for a in "xyz"]) for r in rows}
    assert list(xyz) == [f"{n} {w}" for n in NAMES for w in ("coil", "cortex")]
    np.testing.assert_allclose(xyz[f"{NAMES[0]} cortex"], TARGET_CORTEX, atol=1e-6)
    np.testing.assert_allclose(xyz[f"{NAMES[1]} cortex"], CAND_CORTEX, atol=1e-6)
    np.testing.assert_allclose(xyz[f"{NAMES[1]} coil"], CAND_COIL, atol=1e-6)
    assert "cortical target" in next(r["desc"] for r in rows if r["label"].endswith("cortex"))


def test_simnibs_cortical_target_is_a_generic_row_never_a_coil(exported):
    with open(exported["simnibs"], newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))[1:]  # header row (provenance) skipped, as SimNIBS does
    coils = {r[11]: np.array([float(v) for v in r[1:4]]) for r in rows if r[0] == "CoilPos"}
    generic = {r[4]: np.array([float(v) for v in r[1:4]]) for r in rows if r[0] == "Generic"}
    assert sorted(coils) == [f"{n} coil" for n in NAMES]
    assert sorted(generic) == [f"{n} cortex" for n in NAMES]
    np.testing.assert_allclose(generic[f"{NAMES[0]} cortex"], TARGET_CORTEX, atol=1e-9)
    np.testing.assert_allclose(generic[f"{NAMES[1]} cortex"], CAND_CORTEX, atol=1e-9)
    np.testing.assert_allclose(coils[f"{NAMES[0]} coil"], TARGET_COIL, atol=1e-9)


def test_ant_keeps_coil_targets_only_and_records_the_cortical_target(exported):
    doc = json.loads(exported["ant"].read_text(encoding="utf-8"))
    targets = [entry["CoilTarget"] for entry in doc["TargetMarkers"]]
    assert [t["Name"] for t in targets] == list(NAMES)
    centres = [np.array(t["CoilPose"]["RigidTransformMatrix4x4"])[:3, 3] for t in targets]
    np.testing.assert_allclose(centres, [TARGET_COIL, CAND_COIL], atol=1e-9)  # no coil pose inside the head
    cortex = doc["Configuration"]["SourceInfo"]["CorticalTargetsRAS"]
    np.testing.assert_allclose(cortex[NAMES[0]], TARGET_CORTEX, atol=1e-9)
    np.testing.assert_allclose(cortex[NAMES[1]], CAND_CORTEX, atol=1e-9)


def test_bids_rows_carry_coil_and_cortical_target(exported):
    lines = exported["bids"].read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    rows = {r["target_label"]: r for r in (dict(zip(header, line.split("\t"))) for line in lines[1:])}
    assert list(rows) == list(NAMES)
    for name, coil, cortex in ((NAMES[0], TARGET_COIL, TARGET_CORTEX), (NAMES[1], CAND_COIL, CAND_CORTEX)):
        np.testing.assert_allclose([float(rows[name][f"target_{a}"]) for a in "xyz"], cortex, atol=1e-9)
        np.testing.assert_allclose([float(rows[name][f"coil_{a}"]) for a in "xyz"], coil, atol=1e-9)
