"""tmstarget efield on a real plan: efield.json, the |E| map, the dose, --apply, and the SimNIBS adapter.

The plan is the sample patient's left-DLPFC plan (coil on its MNI-space T1). The physics of the field
is tested in the efield package's own tests; here the numbers a user reads are checked against hand
computations from efield.json, the T1 itself, and a fake ``simnibs_python`` that records its input.
"""

import hashlib
import json
import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import tmstarget
from plan_helpers import file_hashes, sample_dlpfc_plan
from tmstarget.cli.main import main

FAKE_SIMNIBS = Path(__file__).resolve().parent / "fixtures" / "fake_simnibs"
M1 = (-38.0, -20.0, 75.0)  # left precentral scalp region of the sample head
RMT = 52.0
ISSUE_KEYS = {"coil", "didt_a_per_us", "sphere", "planned", "angle_curve", "best", "dose", "timing_s", "provenance"}


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    return sample_dlpfc_plan(tmp_path_factory.mktemp("efield") / "plan")


@pytest.fixture(scope="module")
def computed(planned):
    plan_dir, head = planned
    before = file_hashes(plan_dir)
    result = tmstarget.plan_efield(plan_dir, rmt=RMT, m1_ras_mm=M1, head=head)
    return plan_dir, head, result, before


@pytest.mark.slow  # shares a 40-s fixture (plan, tissue segmentation, search)
def test_efield_json_keys_and_types(computed):
    plan_dir, _, result, before = computed
    doc = json.loads((plan_dir / "efield.json").read_text())
    assert doc == json.loads(json.dumps(result.document))
    assert ISSUE_KEYS <= set(doc)
    assert isinstance(doc["coil"], str) and doc["didt_a_per_us"] == pytest.approx(114.73)
    assert len(doc["sphere"]["centre_ras_mm"]) == 3 and 50 < doc["sphere"]["radius_mm"] < 150
    assert {"handle_angle_deg", "e_target_v_per_m"} <= set(doc["planned"])
    assert {"handle_angle_deg", "centre_ras_mm", "pose", "e_target_v_per_m"} <= set(doc["best"])
    pose = np.array(doc["best"]["pose"])
    assert pose.shape == (4, 4)
    np.testing.assert_allclose(pose[:3, :3].T @ pose[:3, :3], np.eye(3), atol=1e-9)
    np.testing.assert_allclose(pose[:3, 3], doc["best"]["centre_ras_mm"])
    for entry in doc["angle_curve"]:
        assert set(entry) == {"handle_angle_deg", "e_target_v_per_m"}
        assert all(isinstance(v, float) for v in entry.values())
    assert set(doc["timing_s"]) >= {"search", "total"}
    assert doc["provenance"]["plan_target_json_sha256"] == hashlib.sha256(
        (plan_dir / "target.json").read_bytes()).hexdigest()
    # target.json and every file of the plan are untouched; efield.json and the map are added
    after = file_hashes(plan_dir)
    assert {k: after[k] for k in before} == before
    assert set(after) - set(before) == {"efield.json", "efield_map.nii.gz"}


@pytest.mark.slow  # shares a 40-s fixture (plan, tissue segmentation, search)
def test_best_beats_planned_and_the_curve_covers_360_degrees(computed):
    _, head, result, _ = computed
    doc = result.document
    curve = doc["angle_curve"]
    assert len(curve) == 72
    angles = np.array([c["handle_angle_deg"] for c in curve])
    np.testing.assert_allclose(np.diff(angles), 5.0, atol=1e-9)
    assert angles.max() - angles.min() == pytest.approx(355.0)
    best = doc["best"]["e_target_v_per_m"]
    assert best >= doc["planned"]["e_target_v_per_m"]
    assert best >= max(c["e_target_v_per_m"] for c in curve) - 1e-9  # the curve's poses are among the searched
    # a 70-mm figure-8 at 115 A/us reaches a cortex 15-20 mm deep with the order of 100 V/m
    assert 40 < best < 250
    # the planned pose is the plan's, lifted to the 4-mm gap along its own axis
    plan_pose = np.array(head.plan.coil["matrix"])
    pose = np.array(doc["planned"]["pose"])
    np.testing.assert_allclose(pose[:3, :3], plan_pose[:3, :3], atol=1e-12)
    np.testing.assert_allclose(pose[:3, 3], np.array(head.plan.coil["scalp_ras_mm"]) - 4.0 * plan_pose[:3, 2],
                               atol=1e-9)
    assert doc["planned"]["handle_angle_deg"] == pytest.approx(head.frame.angle_of(plan_pose, head.target_ras_mm))


@pytest.mark.slow  # shares a 40-s fixture (plan, tissue segmentation, search)
def test_dose_equals_hand_computation(computed):
    _, head, result, _ = computed
    doc = result.document
    dose = doc["dose"]
    hotspot = dose["motor_hotspot"]
    assert dose["rmt_percent"] == RMT and dose["prescription_percent_rmt"] == 90.0  # sgacc-dlpfc: 90 % RMT
    for pose in ("planned", "best"):
        stokes = RMT + 3.0 * (dose["stokes"][pose]["scalp_to_cortex_mm"] - hotspot["scalp_to_cortex_mm"])
        assert dose["stokes"][pose]["output_percent"] == pytest.approx(min(stokes, 100.0), rel=1e-12)
        assert dose["stokes"][pose]["prescribed_output_percent"] == pytest.approx(min(0.9 * stokes, 100), rel=1e-12)
        e_target = doc[pose]["e_target_v_per_m"]
        assert doc[pose]["e_magnitude_v_per_m"] == e_target  # objective |E|
        assert dose["efield_matched"][pose]["e_magnitude_v_per_m"] == e_target
        matched = RMT * hotspot["e_v_per_m"] / e_target
        assert dose["efield_matched"][pose]["output_percent"] == pytest.approx(min(matched, 100.0), rel=1e-12)
    assert dose["stokes"]["planned"]["scalp_to_cortex_mm"] == head.plan.coil["scalp_to_cortex_mm"]
    # the hotspot: on the scalp near the given point, its cortex straight below along the coil axis
    scalp, cortex = np.array(hotspot["scalp_ras_mm"]), np.array(hotspot["cortex_ras_mm"])
    assert np.linalg.norm(scalp - M1) < 15.0
    axis = np.array(hotspot["pose"])[:3, 2]
    np.testing.assert_allclose(cortex, scalp + hotspot["scalp_to_cortex_mm"] * axis, atol=1e-6)
    assert 8.0 < hotspot["scalp_to_cortex_mm"] < 30.0
    assert dose["stokes"]["assumptions"] and dose["efield_matched"]["assumptions"]


@pytest.mark.slow  # shares a 40-s fixture (plan, tissue segmentation, search)
def test_map_on_the_t1_grid_peaks_by_the_target(computed):
    plan_dir, head, result, _ = computed
    img = nib.load(plan_dir / "efield_map.nii.gz")
    t1 = nib.load(head.t1_path)
    assert img.shape == t1.shape
    np.testing.assert_array_equal(img.affine, t1.affine)
    data = np.asarray(img.dataobj)
    target = np.array(result.document["target_ras_mm"])
    peak = t1.affine @ [*np.unravel_index(int(np.argmax(data)), data.shape), 1.0]
    assert np.linalg.norm(peak[:3] - target) < 20.0
    # the voxel of the cortical target holds about the field the search found there
    i, j, k = np.round(np.linalg.inv(t1.affine) @ [*target, 1.0])[:3].astype(int)
    best = result.document["best"]["e_target_v_per_m"]
    assert data[i, j, k] == pytest.approx(best, rel=0.1)
    assert data.max() >= best
    # only brain voxels within 25 mm carry a value
    ijk = np.argwhere(data > 0)
    world = nib.affines.apply_affine(t1.affine, ijk)
    assert np.linalg.norm(world - target, axis=1).max() <= 25.0 + 1e-6
    t1_values = np.asarray(t1.dataobj)[tuple(ijk.T)]
    assert np.percentile(t1_values, 5) > 0  # no background voxel


@pytest.mark.slow
def test_apply_writes_a_new_version_with_the_best_pose(computed, tmp_path, capsys):
    plan_dir, _, _, _ = computed
    before = file_hashes(plan_dir)
    new = tmp_path / "plan-v2"
    env_path = os.environ.get("PATH", "")
    try:
        os.environ["PATH"] = os.pathsep.join(p for p in env_path.split(os.pathsep)
                                            if not (Path(p) / "simnibs_python").exists())
        code = main(["efield", str(plan_dir), "--apply", "--output", str(new), "-q"])
    finally:
        os.environ["PATH"] = env_path
    assert code == 0
    captured = capsys.readouterr()
    doc = json.loads((plan_dir / "efield.json").read_text())
    revised = json.loads((new / "target.json").read_text())
    np.testing.assert_array_equal(np.array(revised["coil"]["matrix"]), np.array(doc["best"]["pose"]))
    assert revised["provenance"]["revision"]["parent_target_json_sha256"] == doc["provenance"][
        "plan_target_json_sha256"]
    assert "E-field best pose" in revised["provenance"]["revision"]["reason"]
    assert (new / "navigation" / "sub-01_simnibs_positions.csv").is_file()
    assert "report.html" in revised["outputs"] and (new / "report.html").stat().st_size > 10_000  # this version's
    after = file_hashes(plan_dir)
    assert {k: after[k] for k in before if k not in ("efield.json", "efield_map.nii.gz")} == {
        k: v for k, v in before.items() if k not in ("efield.json", "efield_map.nii.gz")}
    # without SimNIBS: one line saying what it adds and how to get it
    lines = [line for line in captured.err.splitlines() if "SimNIBS" in line]
    assert len(lines) == 1 and "simnibs.org" in lines[0] and "--m2m" in lines[0]
    assert doc["simnibs"]["available"] is False


@pytest.mark.slow
def test_fake_simnibs_round_trip(planned, tmp_path):
    plan_dir, head = planned
    program = tmp_path / "bin" / "simnibs_python"
    program.parent.mkdir()
    program.write_text(f"#!{sys.executable}\nimport runpy, sys\nsys.path.insert(0, {str(FAKE_SIMNIBS)!r})\n"
                       "runpy.run_path(sys.argv[1], run_name='__main__')\n")
    program.chmod(0o755)
    m2m = tmp_path / "m2m_ernie"
    m2m.mkdir()
    (m2m / "ernie.msh").write_bytes(b"")
    (m2m / "T1.nii.gz").write_bytes(head.t1_path.read_bytes())
    record = tmp_path / "recorded_session.json"
    os.environ["FAKE_SIMNIBS_RECORD"] = str(record)
    try:
        result = tmstarget.plan_efield(plan_dir, "mc-b70", didt_a_per_us=100.0, simnibs=program.parent, m2m=m2m,
                                       head=head)
    finally:
        del os.environ["FAKE_SIMNIBS_RECORD"]
    block = result.document["simnibs"]
    recorded = json.loads(record.read_text())
    assert not Path(recorded["pathfem"]).exists()  # SimNIBS's outputs (named by the head model's id) are not kept
    assert "ernie" not in json.dumps(result.document)
    assert recorded["matsimnibs"] == result.document["best"]["pose"]  # exactly the pose
    assert recorded["didt"] == 100e6
    assert recorded["fnamecoil"] == "Drakaki_BrainStim_2022/MagVenture_MC-B70.ccd"
    assert recorded["map_to_surf"] is True and recorded["map_to_vol"] is True and recorded["open_in_gmsh"] is False
    assert Path(recorded["fnamehead"]) == (m2m / "ernie.msh").resolve()
    assert Path(recorded["subpath"]) == m2m.resolve() and recorded["n_positions"] == 1
    target = result.document["target_ras_mm"]
    assert block["e_target_v_per_m"] == pytest.approx(100.0 + target[0], abs=1.0)  # the fake's field: 100 + x
    assert block["builtin_e_target_v_per_m"] == result.document["best"]["e_target_v_per_m"]
    assert block["ratio_simnibs_to_builtin"] == pytest.approx(block["e_target_v_per_m"] / block[
        "builtin_e_target_v_per_m"])
    assert result.document["didt_a_per_us"] == pytest.approx(100.0)


def test_simnibs_program_and_head_model_errors(tmp_path):
    from tmstarget.efield.simnibs_run import find_simnibs, head_mesh
    from tmstarget.errors import InputError

    with pytest.raises(InputError, match="no simnibs_python"):
        find_simnibs(tmp_path)
    (tmp_path / "m2m_x").mkdir()
    with pytest.raises(InputError, match="no x.msh"):
        head_mesh(tmp_path / "m2m_x")


@pytest.mark.parametrize("args, message", [
    (["--rmt", "50"], "motor hotspot"),
    (["--m1", "0", "0", "80"], "resting motor threshold"),
    (["--rmt", "150", "--m1", "0", "0", "80"], "rmt is a percentage"),
    (["--coil", "nosuch"], "unknown coil"),
    (["--coil", "missing.ccd"], "coil file not found"),
    (["--didt", "-3"], "didt_a_per_us must be a positive number"),
    (["--output", "x"], "add --apply"),
    (["--apply"], "give its output folder"),
    (["--apply", "--output", "{plan}/v2"], "inside"),
    ([], "target.json is not a tmstarget plan"),
])
def test_bad_inputs_one_line(tmp_path, capsys, args, message):
    plan_dir = tmp_path / "not-a-plan"
    plan_dir.mkdir()
    (plan_dir / "target.json").write_text("{}")
    code = main(["efield", str(plan_dir), "-q", *[a.format(plan=plan_dir) for a in args]])
    err = capsys.readouterr().err.strip()
    assert code == 1 and message in err and "\n" not in err, err
    assert not (plan_dir / "efield.json").exists()


def _check_curve(result, frame, fmri_target, sign, every=1):
    """Each curve angle of efield.json, turned into a pose with the adjust convention, gives the search's field
    vector at that pose, and the curve's value there. ``sign``: our angle = sign x the search's (wrapped)."""
    from tmstarget.efield.coils import load_coil
    from tmstarget.efield.sphere import Sphere, efield_at_points

    doc, search = result.document, result.search
    planned = np.array(doc["planned"]["pose"])
    sphere = Sphere(np.array(doc["sphere"]["centre_ras_mm"]), doc["sphere"]["radius_mm"])
    coil = load_coil("Magstim_D70")
    target = np.array(doc["target_ras_mm"])
    by_angle = {round(c["handle_angle_deg"], 6): c["e_target_v_per_m"] for c in doc["angle_curve"]}
    checked = 0
    for angle, e_search in list(zip(search.curve_angles_deg, search.curve_e_ras_v_per_m))[::every]:
        ours = (sign * float(angle) + 180.0) % 360.0 - 180.0
        ours = 180.0 if ours == -180.0 else ours
        pose = planned.copy()
        y = -frame.handle(planned[:3, 2], ours, fmri_target)
        pose[:3, 1], pose[:3, 0] = y, np.cross(y, planned[:3, 2])
        e = efield_at_points(coil, pose, target[None], sphere)[0]
        np.testing.assert_allclose(e, e_search, rtol=1e-6, atol=1e-6 * np.linalg.norm(e_search))
        assert by_angle[round(ours, 6)] == pytest.approx(np.linalg.norm(e_search), rel=1e-12)
        checked += 1
    return checked


@pytest.mark.slow  # shares a 40-s fixture (plan, tissue segmentation, search)
def test_handle_angles_of_the_curve_are_the_adjust_convention(computed):
    _, head, result, _ = computed
    # left target: the search turns about -z (seen from outside, counter-clockwise), we about +z
    assert _check_curve(result, head.frame, head.target_ras_mm, -1.0) == 72
    # the field vector turns with the handle: 90 degrees apart, nearly perpendicular fields on the axis
    e0, e90 = result.search.curve_e_ras_v_per_m[0], result.search.curve_e_ras_v_per_m[18]
    assert abs(e0 @ e90) < 0.2 * np.linalg.norm(e0) * np.linalg.norm(e90)


@pytest.mark.slow
def test_cortex_normal_objective_makes_the_angle_matter(computed, tmp_path):
    from tmstarget.efield.run import cortex_normal

    plan_dir, head, magnitude, _ = computed
    target = np.array(magnitude.document["target_ras_mm"])
    n = cortex_normal(head.tissue, target)
    assert np.linalg.norm(n) == pytest.approx(1.0)
    # outward: brain 2 mm inward, less brain 2 mm outward (labels of this T1: 2 grey, 3 white matter)
    assert head.tissue.label_at(target - 2 * n) >= 2
    assert head.tissue.label_at(target - 2 * n) >= head.tissue.label_at(target + 2 * n)
    result = tmstarget.plan_efield(plan_dir, objective="cortex-normal", head=head)
    doc = result.document
    assert doc["objective"]["name"] == "cortex-normal"
    np.testing.assert_allclose(doc["objective"]["direction_ras"], n)
    curve = np.array([c["e_target_v_per_m"] for c in doc["angle_curve"]])
    assert curve.max() > 2 * curve.min()  # |E.n| turns with the handle, unlike |E| on the axis
    best = doc["best"]
    assert best["e_target_v_per_m"] >= curve.max() - 1e-9
    assert best["e_target_v_per_m"] <= best["e_magnitude_v_per_m"] + 1e-9
    e = result.search.best_e_ras_v_per_m if best["pose"] == result.search.best_pose_ras.tolist() else None
    if e is not None:
        assert best["e_target_v_per_m"] == pytest.approx(abs(e @ n), rel=1e-12)


@pytest.mark.slow
def test_dose_from_a_localite_hotspot_file(computed, tmp_path):
    """The hotspot as a navigator recorded it: its pose is used as is, its depth measured along its axis."""
    from tmstarget.navigation import NavTarget, write_localite

    plan_dir, head, magnitude, _ = computed
    hotspot = magnitude.document["dose"]["motor_hotspot"]
    pose = np.array(hotspot["pose"])  # the --m1 run's hotspot pose, turned 30 degrees about its axis
    a = np.radians(30.0)
    turn = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    pose[:3, :3] = pose[:3, :3] @ turn
    path = tmp_path / "InstrumentMarker20260101120000000.xml"
    write_localite(path, [NavTarget("M1 hotspot", pose)], t1=head.t1_path)
    result = tmstarget.plan_efield(plan_dir, rmt=RMT, hotspot_file=path, head=head)
    recorded = result.document["dose"]["motor_hotspot"]
    np.testing.assert_allclose(recorded["pose"], pose, atol=1e-4)  # the file's precision
    assert recorded["orientation"] == "as recorded" and path.name in recorded["source"]
    assert recorded["scalp_to_cortex_mm"] == pytest.approx(hotspot["scalp_to_cortex_mm"], abs=0.5)
    # on the coil axis |E| barely depends on the handle angle: the same field as the --m1 run, up to the
    # slightly different scalp point under the recorded centre
    assert recorded["e_v_per_m"] == pytest.approx(hotspot["e_v_per_m"], rel=0.03)
    matched = RMT * recorded["e_v_per_m"] / result.document["best"]["e_magnitude_v_per_m"]
    assert result.document["dose"]["efield_matched"]["best"]["output_percent"] == pytest.approx(min(matched, 100))


@pytest.mark.slow
def test_curve_angles_for_a_right_hemisphere_frame(computed):
    """Mirrored head frame (the target counts as right-hemisphere): curve angles turn the other way."""
    import copy

    from tmstarget.coil.adjust import HeadFrame

    plan_dir, head, _, _ = computed
    mirrored = copy.copy(head)
    mirrored.frame = HeadFrame(head.frame.axes_ras @ np.diag([-1.0, 1.0, -1.0]), head.frame.midline_ras_mm, "mirror")
    assert mirrored.frame.side(head.target_ras_mm) == -1.0
    result = tmstarget.plan_efield(plan_dir, head=mirrored, map_radius_mm=5.0)
    assert _check_curve(result, mirrored.frame, head.target_ras_mm, 1.0, every=7) == 11  # both turn about -z
