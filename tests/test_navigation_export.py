"""export_plan, compare_recorded and the export/navigation CLI handlers."""

import argparse
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from navigation_fixtures import (
    REFERENCE_AFFINE,
    coil_block,
    make_reference_t1,
    p_ref,
    write_plan,
)
from tmstarget.cli.navigation import add_subcommands
from tmstarget.errors import (
    InputError,
    NavigationFormatError,
    OrientationError,
    OutputError,
    XformMismatchError,
)
from tmstarget.navigation import read_navigation_file
from tmstarget.navigation.compare import compare_recorded
from tmstarget.navigation.export import export_plan, load_plan
from tmstarget.navigation.formats import FORMATS
from tmstarget.spaces import rotation_angle_deg

FIXTURES = Path(__file__).parent / "fixtures" / "navigation"


@pytest.fixture(scope="module")
def t1_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("anat")
    make_reference_t1(d / "sub-01_T1w.nii")
    return d


@pytest.fixture
def plan(tmp_path, t1_dir):
    shutil.copy(t1_dir / "sub-01_T1w.nii", tmp_path / "sub-01_T1w.nii")
    cand = p_ref()
    cand[:3, 3] = [-42.0, 38.0, 34.0]
    candidates = [
        {"rank": 1, "name": "sgacc-dlpfc-1", "ras_mm": [-38, 44, 30], "score": -0.4},
        {
            "rank": 2,
            "name": "sgacc-dlpfc-2",
            "ras_mm": [-44, 40, 20],
            "score": -0.3,
            "coil": coil_block(cand),
        },
        {"rank": 3, "name": "sgacc-dlpfc-3", "ras_mm": [-30, 50, 25], "score": -0.2},
    ]
    return write_plan(
        tmp_path / "plan",
        tmp_path / "sub-01_T1w.nii",
        pose=p_ref(),
        target_ras=(-40.0, 46.0, 16.0),
        candidates=candidates,
    )


def _parser():
    parser = argparse.ArgumentParser(prog="tmstarget")
    add_subcommands(parser.add_subparsers(dest="command"))
    return parser


def test_export_all_formats(plan):
    res = export_plan(plan, "all")
    out = plan / "navigation"
    assert res.output_dir == out
    assert set(res.files) == set(FORMATS)
    assert res.markers == ["sgacc-dlpfc-1", "sgacc-dlpfc-2"]
    for fmt, paths in res.files.items():
        for p in paths:
            assert p.is_file(), p
        nav = read_navigation_file(paths[0], fmt, t1=plan.parent / "sub-01_T1w.nii")
        names = [t.name for t in nav.targets]
        if fmt in ("csv", "json"):
            assert names == ["sgacc-dlpfc-1", "sgacc-dlpfc-2", "sgacc-dlpfc-3"]
        elif FORMATS[fmt].cortex:  # coil pose and cortical target, both shown (tests/test_navigation_cortex.py)
            assert names == [f"sgacc-dlpfc-{i} {what}" for i in (1, 2) for what in ("coil", "cortex")]
        else:
            assert names == ["sgacc-dlpfc-1", "sgacc-dlpfc-2"]
        first = nav.targets[0]
        assert np.linalg.norm(first.position_ras_mm - [-38, 44, 30]) <= 0.01
        if fmt != "fcsv":
            assert rotation_angle_deg(first.pose_ras, p_ref()) <= 0.01
        prov = json.loads(paths[1].read_text())
        assert prov["t1_file"] == "sub-01_T1w.nii"
        assert prov["plan"]["space"] == "T1w"
    assert (out / "localite").is_dir()
    assert list((out / "localite").glob("InstrumentMarker*.xml"))
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]


def test_export_never_overwrites_without_force(plan):
    export_plan(plan, ["brainsight"])
    path = plan / "navigation" / "sub-01_brainsight_targets.txt"
    before = path.read_bytes()
    with pytest.raises(OutputError, match="--force"):
        export_plan(plan, ["brainsight", "ant"])
    assert path.read_bytes() == before
    assert not (plan / "navigation" / "sub-01_ant_targets.mrk").exists()
    export_plan(plan, ["brainsight", "ant"], force=True)
    assert (plan / "navigation" / "sub-01_ant_targets.mrk").exists()


def test_export_localite_force_replaces_old_marker_file(plan):
    export_plan(plan, ["localite"])
    with pytest.raises(OutputError):
        export_plan(plan, ["localite"], localite_space="LPS")
    export_plan(plan, ["localite"], localite_space="LPS", force=True)
    files = list((plan / "navigation" / "localite").glob("InstrumentMarker*.xml"))
    assert len(files) == 1
    assert 'coordinateSpace="LPS"' in files[0].read_text()


def test_export_custom_output_and_failure_writes_nothing(plan, tmp_path, monkeypatch):
    out = tmp_path / "elsewhere"
    import tmstarget.navigation.ant as ant

    # the third format writes a file that does not read back: nothing at all is kept
    monkeypatch.setattr(ant, "render_ant", lambda *a, **k: "{}")
    with pytest.raises(NavigationFormatError):
        export_plan(plan, ["localite", "brainsight", "ant"], out)
    assert not [p for p in out.rglob("*") if p.is_file()]


def test_export_refuses_changed_t1(plan):
    t1 = plan.parent / "sub-01_T1w.nii"
    with open(t1, "r+b") as fh:
        fh.seek(-1, 2)
        fh.write(b"\x01")
    with pytest.raises(NavigationFormatError, match="sha256"):
        export_plan(plan, "all")
    assert not (plan / "navigation").exists()


def test_export_qform_sform_mismatch(tmp_path):
    sform = REFERENCE_AFFINE.copy()
    sform[0, 3] = 95.0
    t1 = make_reference_t1(tmp_path / "t1.nii", sform=sform)
    plan = write_plan(tmp_path / "plan", t1, pose=p_ref())
    with pytest.raises(XformMismatchError, match="--affine"):
        export_plan(plan, "all")
    assert not (plan / "navigation").exists()
    # with a choice, the navigators that would read the other transform are refused by name
    with pytest.raises(NavigationFormatError, match="uses the qform"):
        export_plan(plan, ["ant"], t1_choice="sform")
    res = export_plan(plan, ["localite", "brainsight", "csv"], t1_choice="qform")
    bs = res.files["brainsight"][0].read_text()
    assert "Version: 14" in bs and "NIfTI:Q:Scanner" in bs
    prov = json.loads(res.files["localite"][1].read_text())
    assert prov["xform"] == "qform"


def test_export_plan_without_coil(tmp_path, t1_dir):
    plan = write_plan(tmp_path / "plan", t1_dir / "sub-01_T1w.nii", pose=None)
    with pytest.raises(NavigationFormatError, match="no coil pose"):
        export_plan(plan, ["localite"])
    res = export_plan(plan, "all")
    assert set(res.skipped) == {"localite", "brainsight", "ant"}
    assert "fcsv" in res.files and "localite" not in res.files
    nav = read_navigation_file(res.files["slicer"][0])
    assert not nav.targets[0].has_pose
    assert np.allclose(nav.targets[0].position_ras_mm, [-38, 44, 30])


def test_export_refuses_outward_normal(tmp_path, t1_dir):
    flipped = p_ref()
    flipped[:3, 2] *= -1
    flipped[:3, 0] *= -1  # still a rotation, but the normal points out of the head
    plan = write_plan(tmp_path / "plan", t1_dir / "sub-01_T1w.nii", pose=flipped)
    with pytest.raises(OrientationError, match="points away"):
        export_plan(plan, "all")
    assert not (plan / "navigation").exists()


def test_export_refuses_pose_outside_fov(tmp_path, t1_dir):
    far = p_ref()
    far[:3, 3] = [-38.0, 44.0, 400.0]
    plan = write_plan(
        tmp_path / "plan", t1_dir / "sub-01_T1w.nii", pose=far, target_ras=(-38.0, 44.0, 380.0)
    )
    with pytest.raises(OrientationError, match="field of view"):
        export_plan(plan, "all")


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d: d["coil"].update(convention="localite"), "convention"),
        (
            lambda d: d["coil"].update(
                handle_direction=list(-np.array(d["coil"]["handle_direction"]))
            ),
            "handle",
        ),
        (lambda d: d["coil"].update(centre_ras_mm=[0, 0, 0]), "centre"),
        (lambda d: d.update(space="MNI"), "ambiguous"),
        (lambda d: d.pop("anatomy"), "anatomy"),
    ],
)
def test_load_plan_validation(tmp_path, t1_dir, edit, match):
    plan = write_plan(tmp_path / "plan", t1_dir / "sub-01_T1w.nii", pose=p_ref())
    doc = json.loads((plan / "target.json").read_text())
    edit(doc)
    (plan / "target.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match=match):
        load_plan(plan)


def test_load_plan_accepts_unprojected_handle(tmp_path, t1_dir):
    """A handle given before projection into the coil plane is accepted (same in-plane part)."""
    plan = write_plan(tmp_path / "plan", t1_dir / "sub-01_T1w.nii", pose=p_ref())
    doc = json.loads((plan / "target.json").read_text())
    pose = p_ref()
    doc["coil"]["handle_direction"] = (-pose[:3, 1] + 0.6 * pose[:3, 2]).tolist()
    (plan / "target.json").write_text(json.dumps(doc))
    assert load_plan(plan).target.has_pose


def test_load_plan_mirrored_matrix(tmp_path, t1_dir):
    bad = p_ref()
    bad[:3, 0] *= -1
    plan = write_plan(tmp_path / "plan", t1_dir / "sub-01_T1w.nii", pose=bad)
    with pytest.raises(OrientationError, match="det"):
        load_plan(plan)


def test_relative_t1_path(tmp_path, t1_dir):
    plan_dir = tmp_path / "plan"
    plan_dir.mkdir()
    shutil.copy(t1_dir / "sub-01_T1w.nii", plan_dir / "sub-01_T1w.nii")
    plan = write_plan(plan_dir, plan_dir / "sub-01_T1w.nii", pose=p_ref(), relative_t1=True)
    assert load_plan(plan).t1_path == plan_dir / "sub-01_T1w.nii"
    export_plan(plan, ["json"])


def test_compare_recorded(plan):
    res = compare_recorded(plan, FIXTURES / "localite_trigger_ras.xml")
    (row,) = res
    assert row["distance_mm"] == pytest.approx(0.0, abs=1e-6)
    assert row["angle_deg"] == pytest.approx(0.0, abs=1e-3)
    assert row["didt_a_per_s"] == pytest.approx(6.2e7)
    assert row["onset_ms"] == 31615
    assert row["distance_to_cortical_target_mm"] == pytest.approx(np.linalg.norm([2, 2, 14]))


def test_compare_brainsight_samples(plan):
    rows = compare_recorded(plan, FIXTURES / "brainsight_v12_scanner.txt")
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == {"L-DLPFC", "Sample 1", "Sample 2"}
    assert by_name["Sample 2"]["distance_mm"] == pytest.approx(2.0, abs=1e-4)
    assert by_name["Sample 2"]["angle_deg"] < 0.01


def test_compare_refuses_other_t1(plan):
    with pytest.raises(NavigationFormatError, match="another image"):
        compare_recorded(plan, FIXTURES / "localite_instrument_lps.xml")


def test_cli_export_import_compare(plan, capsys):
    parser = _parser()
    args = parser.parse_args(
        ["export", str(plan), "--format", "localite", "--format", "bids", "--localite-space", "LPS"]
    )
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert "localite" in out and "bids" in out
    xml = next((plan / "navigation" / "localite").glob("*.xml"))
    args = parser.parse_args(["navigation", "import", str(xml), "--json"])
    assert args.handler(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["source_frame"] == "LPS"
    assert np.allclose(doc["markers"][0]["position_ras_mm"], [-38, 44, 30])
    assert np.allclose(doc["markers"][0]["handle_ras"], [-(2**-0.5), -(2**-0.5), 0])
    args = parser.parse_args(["navigation", "import", str(xml)])
    assert args.handler(args) == 0
    assert "sgacc-dlpfc-1" in capsys.readouterr().out
    args = parser.parse_args(["navigation", "compare", str(plan), str(xml)])
    assert args.handler(args) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("index\tname")
    assert len(table) == 5  # target and candidate 2, each as coil and cortex markers
    args = parser.parse_args(["navigation", "compare", str(plan), str(xml), "--json"])
    assert args.handler(args) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["distance_mm"] == pytest.approx(0.0, abs=1e-6)


def test_cli_rejects_unknown_format(plan):
    parser = _parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["export", str(plan), "--format", "localight"])
    with pytest.raises(SystemExit):
        parser.parse_args(["export", str(plan)])


def test_cli_errors_are_tmstarget_errors(plan):
    parser = _parser()
    args = parser.parse_args(["export", str(plan), "--format", "localite"])
    args.handler(args)
    with pytest.raises(OutputError):
        args.handler(args)
    args = parser.parse_args(["navigation", "import", str(plan / "missing.xml")])
    with pytest.raises(NavigationFormatError, match="not found"):
        args.handler(args, stdout=io.StringIO())
