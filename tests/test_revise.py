"""tmstarget.revise_plan: a new plan version with the coil rotated, moved along the scalp, or set to a pose.

References are independent of tmstarget's coil code: rotations by Rodrigues' formula written here, the
scalp checked on the T1's own intensities, navigation files parsed by hand from the spec's layouts.
"""

import hashlib
import json
import math

import nibabel as nib
import numpy as np
import pytest

import tmstarget
from plan_helpers import file_hashes, sample_dlpfc_plan
from tmstarget.errors import InputError, OutputError


def _rotate(v, axis, angle_deg):
    """Rodrigues: v turned right-handed about the unit ``axis`` by ``angle_deg``."""
    k = np.asarray(axis, float) / np.linalg.norm(axis)
    a = math.radians(angle_deg)
    return v * math.cos(a) + np.cross(k, v) * math.sin(a) + k * (k @ v) * (1 - math.cos(a))


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A left-DLPFC plan of the sample patient (coil on its MNI-space T1) and its PlanHead."""
    return sample_dlpfc_plan(tmp_path_factory.mktemp("revise") / "plan")


def test_angle_change_rotates_y_about_z_by_exactly_that_angle(parent, tmp_path):
    plan_dir, head = parent
    old = np.array(json.loads((plan_dir / "target.json").read_text())["coil"]["matrix"])
    start = head.frame.angle_of(old, head.target_ras_mm)
    before = file_hashes(plan_dir)
    new = tmstarget.revise_plan(plan_dir, tmp_path / "v2", handle_angle_deg=start + 30.0, reason="test rotation",
                                head=head)
    pose = np.array(new.coil["matrix"])
    # left target: +30 deg toward lateral is right-handed about z (into the head)
    np.testing.assert_allclose(pose[:3, 1], _rotate(old[:3, 1], old[:3, 2], 30.0), atol=1e-9)
    np.testing.assert_allclose(pose[:3, 2], old[:3, 2], atol=1e-12)
    np.testing.assert_allclose(pose[:3, 3], old[:3, 3], atol=1e-9)
    assert new.coil["handle_angle_deg"] == pytest.approx(start + 30.0, abs=1e-9)
    assert new.coil["scalp_to_cortex_mm"] == pytest.approx(json.loads(
        (plan_dir / "target.json").read_text())["coil"]["scalp_to_cortex_mm"], abs=1e-6)  # same axis, same depth
    assert file_hashes(plan_dir) == before


def test_handle_angle_convention_by_hand():
    from tmstarget.coil.adjust import HeadFrame

    frame = HeadFrame(np.eye(3), np.zeros(3), "test")
    down = np.array([0.0, 0.0, -1.0])  # a coil flat on the vertex
    left, right, mid = (-40.0, 30.0, 50.0), (40.0, 30.0, 50.0), (2.0, 30.0, 50.0)
    np.testing.assert_allclose(frame.handle(down, 0, left), [0, -1, 0], atol=1e-12)  # posterior
    np.testing.assert_allclose(frame.handle(down, 90, left), [-1, 0, 0], atol=1e-12)  # lateral = left
    np.testing.assert_allclose(frame.handle(down, 90, right), [1, 0, 0], atol=1e-12)  # lateral = right
    np.testing.assert_allclose(frame.handle(down, 90, mid), [-1, 0, 0], atol=1e-12)  # midline: toward the left
    s = 1 / math.sqrt(2)
    np.testing.assert_allclose(frame.handle(down, 45, left), [-s, -s, 0], atol=1e-12)  # the DLPFC rule, left
    np.testing.assert_allclose(frame.handle(down, 45, right), [s, -s, 0], atol=1e-12)
    # right target: +d turns the handle about -z
    h0, h1 = frame.handle(down, 10, right), frame.handle(down, 35, right)
    np.testing.assert_allclose(h1, _rotate(h0, -down, 25.0), atol=1e-12)
    pose = np.eye(4)
    pose[:3, 2], pose[:3, 1] = down, -frame.handle(down, 135, right)
    pose[:3, 0] = np.cross(pose[:3, 1], pose[:3, 2])
    assert frame.angle_of(pose, right) == pytest.approx(135.0)


def test_moved_point_stays_on_the_scalp_and_depth_is_measured_again(parent, tmp_path):
    plan_dir, head = parent
    doc = json.loads((plan_dir / "target.json").read_text())
    scalp = np.array(doc["coil"]["scalp_ras_mm"])
    z_old = np.array(doc["coil"]["matrix"])[:3, 2]
    step = np.array([0.0, 0.0, 1.0]) - z_old[2] * z_old  # upward along the scalp ...
    asked = scalp + 10.0 * step / np.linalg.norm(step) - 3.0 * z_old  # ... 10 mm, and 3 mm off the surface
    new = tmstarget.revise_plan(plan_dir, tmp_path / "v2", scalp_point_ras_mm=asked, reason="moved", head=head)
    coil = new.coil
    point, z = np.array(coil["scalp_ras_mm"]), np.array(coil["matrix"])[:3, 2]
    assert 7.0 < np.linalg.norm(point - scalp) < 13.0
    np.testing.assert_allclose(coil["centre_ras_mm"], point, atol=1e-6)  # the plan's coil touches the scalp
    # on the T1 itself: air 4 mm outside the point, head 4 mm inside (the sample T1's background is 0)
    t1 = nib.load(plan_dir / doc["anatomy"]["t1"])
    data = np.asarray(t1.dataobj, dtype=float)

    def value(p):
        i, j, k = np.round(np.linalg.inv(t1.affine) @ [*p, 1.0])[:3].astype(int)
        return data[i, j, k]

    inside, outside = value(point + 4 * z), value(point - 4 * z)
    assert outside < 0.1 * inside, (outside, inside)
    assert coil["angle_from_scalp_normal_deg"] == pytest.approx(0.0, abs=1e-6)
    assert coil["scalp_to_cortex_mm"] != pytest.approx(doc["coil"]["scalp_to_cortex_mm"], abs=1e-3)
    entry = np.array(coil["cortex_entry_ras_mm"])
    np.testing.assert_allclose(entry, point + coil["scalp_to_cortex_mm"] * z, atol=1e-6)
    assert coil["scalp_to_target_mm"] == pytest.approx(np.linalg.norm(np.array(doc["target"]["ras_mm"]) - point))
    # the target's tissue warning describes the revised coil's axis, once
    warnings = json.loads((tmp_path / "v2" / "target.json").read_text())["qc"]["warnings"]
    tissue = [w for w in warnings if w.startswith("the target: the fMRI voxel lies in")]
    assert len(tissue) == (0 if coil["target_in_grey_matter"] else 1)
    if tissue and coil["cortical_shift_mm"] is not None:
        assert f"{coil['cortical_shift_mm']:+.1f} mm" in tissue[0]


def test_new_folder_navigation_files_hold_the_new_pose(parent, tmp_path):
    plan_dir, head = parent
    before = file_hashes(plan_dir)
    old = np.array(json.loads((plan_dir / "target.json").read_text())["coil"]["matrix"])
    pose = old.copy()
    pose[:3, 0], pose[:3, 1] = -old[:3, 0], -old[:3, 1]  # handle turned round (180 deg about z)
    new_dir = tmp_path / "v2"
    tmstarget.revise_plan(plan_dir, new_dir, pose=pose, reason="handle reversed", head=head)
    doc = json.loads((new_dir / "target.json").read_text())
    np.testing.assert_allclose(doc["coil"]["matrix"], pose, atol=1e-12)
    revision = doc["provenance"]["revision"]
    assert revision["parent_target_json_sha256"] == hashlib.sha256((plan_dir / "target.json").read_bytes()).hexdigest()
    assert revision["version"] == 2 and revision["reason"] == "handle reversed"
    np.testing.assert_allclose(revision["changes"]["pose"], pose)
    # SimNIBS CSV (spec: CoilPos,x,y,z,ez_x,ez_y,ez_z,ey_x,ey_y,ey_z,dist,name; RAS mm, SimNIBS axes)
    rows = [line.split(",") for line in (new_dir / "navigation/sub-01_simnibs_positions.csv").read_text().splitlines()]
    coil = [r for r in rows if r[0] == "CoilPos"][0]
    np.testing.assert_allclose([float(v) for v in coil[1:4]], pose[:3, 3], atol=1e-6)
    np.testing.assert_allclose([float(v) for v in coil[4:7]], pose[:3, 2], atol=1e-6)
    np.testing.assert_allclose([float(v) for v in coil[7:10]], pose[:3, 1], atol=1e-6)
    # every provenance sidecar hashes the new target.json
    sha = hashlib.sha256((new_dir / "target.json").read_bytes()).hexdigest()
    sidecars = list((new_dir / "navigation").rglob("*.provenance.json"))
    assert len(sidecars) >= 8
    for sidecar in sidecars:
        assert sha in sidecar.read_text()
    assert set(doc["outputs"]) == set(file_hashes(new_dir))
    assert file_hashes(plan_dir) == before
    # a second revision chains the versions
    v3 = tmstarget.revise_plan(new_dir, tmp_path / "v3", handle_angle_deg=10.0, reason="again", navigation=None)
    assert v3.provenance["revision"]["version"] == 3
    assert v3.provenance["revision"]["parent_target_json_sha256"] == sha
    assert v3.provenance["revision"]["parent_history"][0]["reason"] == "handle reversed"


@pytest.mark.parametrize("kwargs, message", [
    ({"handle_angle_deg": 10.0, "reason": ""}, "needs a reason"),
    ({"reason": "x"}, "nothing to revise"),
    ({"handle_angle_deg": 10.0, "pose": np.eye(4), "reason": "x"}, "not both"),
    ({"pose": np.diag([2.0, 1, 1, 1]), "reason": "x"}, "pose"),
    ({"pose": np.eye(3), "reason": "x"}, "4x4"),
    ({"handle_angle_deg": float("nan"), "reason": "x"}, "finite"),
])
def test_bad_inputs_one_line(parent, tmp_path, kwargs, message):
    plan_dir, head = parent
    with pytest.raises(InputError) as info:
        tmstarget.revise_plan(plan_dir, tmp_path / "v2", head=head, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "v2").exists()


@pytest.mark.parametrize("where", ["same", "inside"])
def test_output_in_the_plan_folder_is_refused(parent, where):
    plan_dir, head = parent
    before = file_hashes(plan_dir)
    output = plan_dir if where == "same" else plan_dir / "v2"
    with pytest.raises(OutputError) as info:
        tmstarget.revise_plan(plan_dir, output, handle_angle_deg=0.0, reason="x", head=head, force=True)
    assert "\n" not in str(info.value)
    assert file_hashes(plan_dir) == before
