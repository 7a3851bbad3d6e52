"""Writers and readers per format: hand-written fixtures, strict parsing,
the left-DLPFC target in every format, round trips through every pair."""

import csv
import io
import itertools
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose

from navigation_fixtures import (
    FILE_NAMES,
    REFERENCE_AFFINE,
    make_reference_t1,
    p_ref,
    write_edited_json,
)
from tmstarget.errors import InvalidPoseError, NavigationFormatError, OutputError
from tmstarget.navigation import (
    NavTarget,
    load_t1_reference,
    read_ant,
    read_bids_markers,
    read_brainsight,
    read_candidates_csv,
    read_candidates_json,
    read_fcsv,
    read_localite,
    read_navigation_file,
    read_simnibs_csv,
    read_slicer_json,
    write_ant,
    write_brainsight,
    write_fcsv,
    write_localite,
    write_simnibs_csv,
)
from tmstarget.navigation.formats import FORMATS, detect_format
from tmstarget.spaces import rotation_angle_deg

FIXTURES = Path(__file__).parent / "fixtures" / "navigation"
FIXTURE_SHA = "0123456789abcdef" * 4


@pytest.fixture(scope="module")
def t1ref(tmp_path_factory):
    return load_t1_reference(make_reference_t1(tmp_path_factory.mktemp("t1") / "sub-01_T1w.nii"))


def assert_pose(target, pose, mm=1e-5, deg=1e-3):
    assert target.has_pose, target.name
    assert np.linalg.norm(target.position_ras_mm - pose[:3, 3]) <= mm
    assert rotation_angle_deg(target.pose_ras, pose) <= deg


# ------------------------------------------------------------- fixtures


def test_fixture_localite_lps():
    res = read_localite(FIXTURES / "localite_instrument_lps.xml")
    assert res.source_frame == "LPS" and res.coil_convention == "localite"
    assert [t.name for t in res.targets] == ["L-DLPFC"]
    assert_pose(res.targets[0], p_ref())
    assert res.t1_sha256 == FIXTURE_SHA


def test_fixture_localite_ras_unset_and_odd_numbers():
    with pytest.warns(UserWarning, match="unset"):
        res = read_localite(FIXTURES / "localite_instrument_ras.xml")
    assert res.skipped == 1
    assert [t.name for t in res.targets] == ["L-DLPFC"]
    assert_pose(res.targets[0], p_ref())


def test_fixture_localite_entry_target():
    res = read_localite(FIXTURES / "localite_entrytarget_lps.xml")
    (tgt,) = res.targets
    assert tgt.name == "L-DLPFC" and not tgt.has_pose
    assert_allclose(tgt.position_ras_mm, [-38.0, 44.0, 30.0])
    assert_allclose(tgt.info["entry_ras_mm"], [-38.0, 44.0, 44.2])


def test_fixture_brainsight_v7():
    res = read_brainsight(FIXTURES / "brainsight_v7_scanner.txt")
    assert res.version == "7"
    assert_pose(res.targets[0], p_ref(), deg=0.05)


def test_fixture_ant(t1ref):
    with pytest.warns(UserWarning, match="without a CoilTarget"):
        res = read_ant(FIXTURES / "ant_ldlpfc.mrk", t1=t1ref)
    assert res.skipped == 1
    assert_pose(res.targets[0], p_ref())
    assert res.targets[0].info["coil_id"].endswith("Cool-B65.ccd")


def test_fixture_ant_image_mismatch(tmp_path):
    other = REFERENCE_AFFINE.copy()
    other[2, 3] = -172.0
    t1 = make_reference_t1(tmp_path / "other.nii", shape=(32, 32, 32), qform=other, sform=other)
    with pytest.raises(NavigationFormatError, match="another image"):
        read_ant(FIXTURES / "ant_ldlpfc.mrk", t1=t1)


def test_fixture_ant_refuses_other_convention(tmp_path):
    path = write_edited_json(
        FIXTURES / "ant_ldlpfc.mrk",
        tmp_path / "x.mrk",
        lambda doc: doc["TargetMarkers"][0]["CoilTarget"].update(CoilAxesConvention="ant"),
    )
    with pytest.raises(NavigationFormatError, match="CoilAxesConvention"):
        read_ant(path)


def test_fixture_slicer_json():
    res = read_slicer_json(FIXTURES / "slicer_ldlpfc.mrk.json")
    assert res.coil_convention == "simnibs"
    assert_pose(res.targets[0], p_ref())


def test_slicer_orientation_without_declaration_is_position_only(tmp_path):
    path = write_edited_json(
        FIXTURES / "slicer_ldlpfc.mrk.json",
        tmp_path / "plain.mrk.json",
        lambda doc: doc.pop("tmstarget"),
    )
    with pytest.warns(UserWarning, match="positions only"):
        res = read_slicer_json(path)
    assert not res.targets[0].has_pose
    assert_allclose(res.targets[0].position_ras_mm, [-38, 44, 30])


def test_fixture_fcsv():
    res = read_fcsv(FIXTURES / "slicer_ldlpfc.fcsv")
    assert_allclose(res.targets[0].position_ras_mm, [-38, 44, 30])
    assert res.t1_sha256 == FIXTURE_SHA


def test_fixture_fcsv_current_slicer():
    with pytest.warns(UserWarning, match="positionStatus"):
        res = read_fcsv(FIXTURES / "slicer_current_lps.fcsv")
    assert res.skipped == 1
    (tgt,) = res.targets
    assert tgt.name == "L-DLPFC, left"
    assert_allclose(tgt.position_ras_mm, [-38, 44, 30])


@pytest.mark.parametrize(
    "row",
    [
        "1,-38,5,44,30,0,0,0,1,1,1,1,p,,",  # decimal comma in x: one field too many
        "1,-38,5,44,30,5,0,0,0,1,1,1,1,p,,",  # two decimal commas
    ],
)
def test_fcsv_decimal_comma_refused(tmp_path, row):
    path = tmp_path / "x.fcsv"
    path.write_text(
        "# Markups fiducial file version = 4.11\n# CoordinateSystem = 0\n"
        "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n" + row + "\n"
    )
    with pytest.raises(NavigationFormatError, match="fields"):
        read_fcsv(path)


def test_fcsv_slicer3_refused(tmp_path):
    path = tmp_path / "x.fcsv"
    path.write_text("p,10,20,30,1,1\n")
    with pytest.raises(NavigationFormatError, match="Slicer-3"):
        read_fcsv(path)


def test_fixture_simnibs_csv():
    res = read_simnibs_csv(FIXTURES / "simnibs_positions.csv")
    coil, cortex = res.targets
    assert_pose(coil, p_ref())
    assert coil.name == "L-DLPFC"
    assert cortex.name == "cortex" and not cortex.has_pose


def test_simnibs_csv_errors(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("CoilPos,-38,44,30,0,0,-1,0.707107,0.707107,0,0,L-DLPFC,extra,more\n")
    with pytest.raises(NavigationFormatError, match="fields"):
        read_simnibs_csv(path)
    path.write_text("CoilPos,-38,44,30,0,0,-2,0.707107,0.707107,0,0,L-DLPFC\n")
    with pytest.raises(NavigationFormatError, match="unit vector"):
        read_simnibs_csv(path)
    path.write_text("Bogus,1,2,3,x\n")
    with pytest.raises(NavigationFormatError, match="unknown row type"):
        read_simnibs_csv(path)


def test_fixture_bids():
    with pytest.warns(UserWarning, match="skipped"):
        res = read_bids_markers(FIXTURES / "sub-01_task-sgaccdlpfc_stimsys-tms_markers.tsv")
    coil, cortex = res.targets
    assert_pose(coil, p_ref())
    assert_allclose(coil.info["cortex_ras_mm"], [-40, 46, 16])
    assert not cortex.has_pose
    assert_allclose(cortex.position_ras_mm, [-40, 46, 16])
    assert res.skipped == 1


def test_bids_requires_tmstarget_sidecar(tmp_path):
    tsv = tmp_path / "sub-01_task-x_markers.tsv"
    tsv.write_text((FIXTURES / "sub-01_task-sgaccdlpfc_stimsys-tms_markers.tsv").read_text())
    with pytest.raises(NavigationFormatError, match="sidecar"):
        read_bids_markers(tsv)
    with pytest.warns(UserWarning):
        res = read_bids_markers(tsv, assume_tmstarget=True)
    assert_pose(res.targets[0], p_ref())


def test_fixture_plain_csv_and_json():
    for reader, name in (
        (read_candidates_csv, "candidates.csv"),
        (read_candidates_json, "candidates.json"),
    ):
        res = reader(FIXTURES / name)
        target, cand = res.targets
        assert_pose(target, p_ref())
        assert target.info["rank"] == 1
        assert not cand.has_pose
        assert_allclose(cand.position_ras_mm, [-44, 40, 20])
        assert res.t1_sha256 == FIXTURE_SHA


@pytest.mark.parametrize(
    "name, fmt",
    [
        ("localite_instrument_lps.xml", "localite"),
        ("brainsight_v12_scanner.txt", "brainsight"),
        ("ant_ldlpfc.mrk", "ant"),
        ("slicer_ldlpfc.mrk.json", "slicer"),
        ("slicer_ldlpfc.fcsv", "fcsv"),
        ("simnibs_positions.csv", "simnibs"),
        ("sub-01_task-sgaccdlpfc_stimsys-tms_markers.tsv", "bids"),
        ("candidates.csv", "csv"),
        ("candidates.json", "json"),
    ],
)
def test_detect_format(name, fmt):
    assert detect_format(FIXTURES / name) == fmt
    with pytest.warns() if fmt in ("brainsight", "ant", "bids") else _nowarn():
        res = read_navigation_file(FIXTURES / name)
    assert res.format == fmt
    p = p_ref()
    first = res.targets[0]
    assert np.linalg.norm(first.position_ras_mm - p[:3, 3]) < 1e-4


class _nowarn:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ------------------------------------------------------------- readers: errors


#: (old, new, error, match): one edit of a valid fixture and the error it must raise.
LOCALITE_EDITS = [
    (' coordinateSpace="LPS"', "", NavigationFormatError, "coordinateSpace"),
    ('coordinateSpace="LPS"', 'coordinateSpace="IJK"', NavigationFormatError, "RAS or LPS"),
    ('data13="-44.000000"', 'data13="-44,000000"', NavigationFormatError, "decimal comma"),
    ('data00="0.000000"', 'data00="0.2"', InvalidPoseError, "orthonormal"),
    ('data20="-1.000000"', 'data20="1.000000"', InvalidPoseError, "det"),  # mirrored
]
BRAINSIGHT_EDITS = [
    ("-38.0000\t44.0000", "-38,0000\t44.0000", NavigationFormatError, "decimal comma"),
    ("\tm2n2\n", "\tm2n9\n", NavigationFormatError, "m2n2"),  # missing column
]


@pytest.mark.parametrize(
    "reader, fixture, old, new, error, match",
    [(read_localite, "localite_instrument_lps.xml", *edit) for edit in LOCALITE_EDITS]
    + [(read_brainsight, "brainsight_v12_scanner.txt", *edit) for edit in BRAINSIGHT_EDITS],
)
def test_edited_fixture_refused(tmp_path, reader, fixture, old, new, error, match):
    path = tmp_path / fixture
    path.write_text((FIXTURES / fixture).read_text().replace(old, new, 1))
    with pytest.raises(error, match=match):
        reader(path)


def test_brainsight_intent_code_mismatch(tmp_path):
    t1 = make_reference_t1(tmp_path / "aligned.nii", shape=(32, 32, 32), qform_code=2, sform_code=2)
    with pytest.raises(NavigationFormatError, match="intent code"):
        read_brainsight(FIXTURES / "brainsight_v12_scanner.txt", t1=t1)


def test_non_utf8_refused(tmp_path):
    path = tmp_path / "b.txt"
    path.write_bytes("# Version: 12\n# Notes: caf\xe9\n".encode("latin-1"))
    with pytest.raises(NavigationFormatError, match="UTF-8"):
        read_brainsight(path)


# ------------------------------------------------------------- writers


def _strict_parse(fmt, path):
    text = path.read_bytes().decode("utf-8")  # strict UTF-8
    assert not text.startswith("\ufeff") and "\r" not in text
    if fmt == "localite":
        root = ET.fromstring(path.read_bytes())
        assert root.tag == "InstrumentMarkerList"
    elif fmt in ("ant", "slicer", "json"):
        json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    elif fmt == "brainsight":
        rows = [ln.split("\t") for ln in text.splitlines() if not ln.startswith("#")]
        header = [ln for ln in text.splitlines() if ln.startswith("# Target Name")][0][2:].split(
            "\t"
        )
        assert all(len(r) == len(header) for r in rows)
    elif fmt == "bids":
        rows = list(csv.reader(io.StringIO(text), delimiter="\t", strict=True))
        assert len({len(r) for r in rows}) == 1
        for side in path.parent.glob("*.json"):
            json.loads(side.read_text())
    else:
        lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
        rows = list(csv.reader(io.StringIO("\n".join(lines)), strict=True))
        assert rows
    prov = json.loads(path.with_name(path.name + ".provenance.json").read_text())
    assert prov["t1_sha256"] in text
    return text


@pytest.fixture(scope="module")
def dlpfc_targets():
    """Left DLPFC target at RAS (-38, 44, 30) plus two candidates, one position-only."""
    cand = p_ref()
    cand[:3, 3] = [-42.0, 38.0, 34.0]
    return [
        NavTarget("L-DLPFC", p_ref(), kind="target", info={"rank": 1}),
        NavTarget("cand-2", cand, kind="candidate", info={"rank": 2}),
    ]


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_left_dlpfc_every_format(tmp_path, t1ref, dlpfc_targets, fmt):
    path = FORMATS[fmt].writer(tmp_path / FILE_NAMES[fmt], dlpfc_targets, t1=t1ref)
    _strict_parse(fmt, path)
    res = read_navigation_file(path, fmt, t1=t1ref)
    assert [t.name for t in res.targets] == ["L-DLPFC", "cand-2"]
    for want, got in zip(dlpfc_targets, res.targets):
        assert np.linalg.norm(got.position_ras_mm - want.position_ras_mm) <= 0.01
        if fmt != "fcsv":
            assert rotation_angle_deg(got.pose_ras, want.pose_ras) <= 0.01
    # left hemisphere stays left after reading back
    assert res.targets[0].position_ras_mm[0] < 0
    assert res.t1_sha256 == t1ref.sha256


PAIR_FORMATS = [k for k in FORMATS]


@pytest.mark.parametrize("first, second", list(itertools.permutations(PAIR_FORMATS, 2)))
def test_round_trip_every_pair(tmp_path, t1ref, dlpfc_targets, first, second):
    a = FORMATS[first].writer(tmp_path / "a" / FILE_NAMES[first], dlpfc_targets, t1=t1ref)
    mid = read_navigation_file(a, first, t1=t1ref).targets
    if FORMATS[second].pose_required and not all(t.has_pose for t in mid):
        with pytest.raises(NavigationFormatError, match="no coil pose"):
            FORMATS[second].writer(tmp_path / "b" / FILE_NAMES[second], mid, t1=t1ref)
        return
    b = FORMATS[second].writer(tmp_path / "b" / FILE_NAMES[second], mid, t1=t1ref)
    final = read_navigation_file(b, second, t1=t1ref).targets
    assert [t.name for t in final] == [t.name for t in dlpfc_targets]
    for want, got in zip(dlpfc_targets, final):
        assert np.linalg.norm(got.position_ras_mm - want.position_ras_mm) <= 0.01
        if got.has_pose:
            assert rotation_angle_deg(got.pose_ras, want.pose_ras) <= 0.01
        else:
            assert "fcsv" in (first, second)


def test_position_only_targets(tmp_path, t1ref):
    targets = [NavTarget("cortex", None, position_ras_mm=[-38.0, 44.0, 30.0])]
    for fmt in ("slicer", "fcsv", "simnibs", "bids", "csv", "json"):
        path = FORMATS[fmt].writer(tmp_path / FILE_NAMES[fmt], targets, t1=t1ref)
        res = read_navigation_file(path, fmt)
        assert not res.targets[0].has_pose
        assert_allclose(res.targets[0].position_ras_mm, [-38, 44, 30], atol=1e-6)
    for fmt in ("localite", "brainsight", "ant"):
        with pytest.raises(NavigationFormatError, match="no coil pose"):
            FORMATS[fmt].writer(tmp_path / ("x_" + FILE_NAMES[fmt]), targets, t1=t1ref)


def test_no_overwrite_without_flag(tmp_path, t1ref):
    path = write_localite(tmp_path / "x.xml", [("L-DLPFC", p_ref())], t1=t1ref)
    before = path.read_bytes()
    moved = p_ref()
    moved[:3, 3] += 1.0
    with pytest.raises(OutputError, match="overwrite"):
        write_localite(path, [("L-DLPFC", moved)], t1=t1ref)
    assert path.read_bytes() == before
    write_localite(path, [("L-DLPFC", moved)], t1=t1ref, overwrite=True)
    assert read_localite(path).targets[0].position_ras_mm[0] == pytest.approx(-37.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.xml", "x.xml.provenance.json"]


@pytest.mark.parametrize(
    "writer, fname, bad",
    [
        (write_brainsight, "b.txt", "a;b"),
        (write_fcsv, "f.fcsv", "a,b"),
        (write_localite, "x.xml", "tab\there"),
        (write_simnibs_csv, "s.csv", ""),
    ],
)
def test_unsafe_names_refused(tmp_path, t1ref, writer, fname, bad):
    with pytest.raises(NavigationFormatError, match="name"):
        writer(tmp_path / fname, [(bad, p_ref())], t1=t1ref)
    assert list(tmp_path.iterdir()) == []


def test_duplicate_names_refused(tmp_path, t1ref):
    with pytest.raises(NavigationFormatError, match="duplicate"):
        write_ant(tmp_path / "a.mrk", [("x", p_ref()), ("x", p_ref())], t1=t1ref)


def test_localite_xml_escapes_names(tmp_path, t1ref):
    name = 'L-DLPFC <"5&6">'
    path = write_localite(tmp_path / "x.xml", [(name, p_ref())], t1=t1ref)
    assert read_localite(path).targets[0].name == name


def test_brainsight_v14_and_sform_choice(tmp_path):
    sform = REFERENCE_AFFINE.copy()
    sform[0, 3] = 95.0
    t1 = make_reference_t1(tmp_path / "t1.nii", shape=(64, 64, 64), sform=sform)
    with pytest.raises(NavigationFormatError, match="version 14"):
        write_brainsight(tmp_path / "b12.txt", [("L", p_ref())], t1=t1, xform="sform")
    path = write_brainsight(
        tmp_path / "b14.txt", [("L", p_ref())], t1=t1, xform="sform", version=14
    )
    assert "# Coordinate system: NIfTI:S:Scanner" in path.read_text()
    # ANT (qform) and Slicer (ITK: sform for codes 1/1) follow their navigators
    with pytest.raises(NavigationFormatError, match="uses the qform"):
        write_ant(tmp_path / "a.mrk", [("L", p_ref())], t1=t1, xform="sform")
    from tmstarget.navigation import write_slicer_json

    with pytest.raises(NavigationFormatError, match="uses the sform"):
        write_slicer_json(tmp_path / "s.mrk.json", [("L", p_ref())], t1=t1, xform="qform")


def test_verification_failure_leaves_nothing(tmp_path, t1ref, monkeypatch):
    """A writer whose output does not read back is deleted and raises."""
    import tmstarget.navigation.localite as loc

    real = loc.render_localite

    def corrupt(targets, t1ref_, space):
        return real(targets, t1ref_, space).replace('data03="-38.0000000000"', 'data03="-37.0"')

    monkeypatch.setattr(loc, "render_localite", corrupt)
    with pytest.raises(NavigationFormatError, match="mm away"):
        write_localite(tmp_path / "x.xml", [("L-DLPFC", p_ref())], t1=t1ref)
    assert list(tmp_path.iterdir()) == []


def test_navtarget_pickles():
    import pickle

    tgt = NavTarget("x", p_ref(), info={"rank": 1})
    back = pickle.loads(pickle.dumps(tgt))
    assert back.name == "x" and back.info == {"rank": 1}
    assert_allclose(back.pose_ras, p_ref())


def test_navtarget_is_read_only():
    tgt = NavTarget("x", p_ref())
    with pytest.raises(ValueError):
        tgt.pose_ras[0, 3] = 0.0
    with pytest.raises(NavigationFormatError):
        NavTarget("x", p_ref(), position_ras_mm=[0.0, 0.0, 0.0])
    with pytest.raises(NavigationFormatError):
        NavTarget("x", None)


def test_plain_json_null_t1_hash_reads_as_unknown(tmp_path):
    """`"t1_sha256": null` means the T1 is not identified: None, never the string "none"."""
    doc = json.loads((FIXTURES / "candidates.json").read_text())
    doc["tmstarget"]["t1_sha256"] = None
    path = tmp_path / "candidates.json"
    path.write_text(json.dumps(doc))
    assert read_candidates_json(path).t1_sha256 is None
