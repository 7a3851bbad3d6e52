"""qform/sform tolerance (issue 14 item 6, spec §5.2) on the real T1 and at the 0.1 mm boundary.

The real T1 (``pydecnef-sub1/anat/T1w.nii.gz``) has qform and sform about
0.01 mm apart over its field of view; navigation files must be written for
it without ``--affine`` (sform used, difference recorded). Above 0.1 mm the
refusal stays. With ``--affine`` and an all-formats request, the formats
whose navigator reads the other transform are reported one line each and the
valid ones written.

References are computed here with numpy on nibabel's raw header transforms
(corners of the field of view = outer faces of the corner voxels).
"""

import json
import shutil
import xml.etree.ElementTree as ET

import nibabel as nib
import numpy as np
import pytest

from navigation_fixtures import REFERENCE_AFFINE, make_reference_t1, p_ref, write_plan
from tmstarget.coil.plan_coils import xform_used
from tmstarget.errors import NavigationFormatError, XformMismatchError
from tmstarget.navigation.export import export_plan
from tmstarget.navigation.formats import FORMATS
from tmstarget.outputs.plan import navigation_writer
from tmstarget.spaces import check_qform_sform

REAL_T1 = ("pydecnef-sub1", "anat", "T1w.nii.gz")


def _fov_corner_shift_mm(a, b, shape):
    corners = np.array([[i, j, k, 1.0] for i in (-0.5, shape[0] - 0.5) for j in (-0.5, shape[1] - 0.5)
                        for k in (-0.5, shape[2] - 0.5)])
    return float(np.linalg.norm((corners @ a.T - corners @ b.T)[:, :3], axis=1).max())


def _real_t1(shared_data):
    path = shared_data.joinpath(*REAL_T1)
    if not path.is_file():
        pytest.skip(f"{path} absent")
    return path


def test_real_t1_qform_and_sform_agree_within_tolerance(shared_data):
    img = nib.load(_real_t1(shared_data))
    qform, qcode = img.header.get_qform(coded=True)
    sform, scode = img.header.get_sform(coded=True)
    assert (int(qcode), int(scode)) == (1, 1)
    shift = _fov_corner_shift_mm(qform, sform, img.shape)
    assert 0.005 < shift < 0.1, shift  # the fixture is what the issue says: rounding, not a real disagreement
    assert not np.allclose(qform, sform, rtol=1e-5, atol=1e-6)  # the old rule refused it
    check = check_qform_sform(img)
    assert check.xform == "qform=sform" and check.affine_used == "sform" and not check.chosen
    np.testing.assert_array_equal(check.affine, sform)
    assert check.max_difference_mm == pytest.approx(shift, rel=1e-6)
    assert xform_used(img) == "qform=sform"  # what a native plan records in target.json


def _head_pose_on(t1_path):
    """A coil pose 60 mm left-anterior-superior of the head centroid, z pointing at it; cortex 15 mm below."""
    img = nib.load(t1_path)
    data = np.asarray(img.dataobj, dtype=np.float32)
    ijk = np.argwhere(data > 0.2 * np.percentile(data[::2, ::2, ::2], 99)).mean(axis=0)
    centroid = img.affine[:3, :3] @ ijk + img.affine[:3, 3]
    out = np.array([-0.6, 0.5, 0.62])
    out /= np.linalg.norm(out)
    z = -out
    y = np.cross(z, [1.0, 0.0, 0.0])
    y /= np.linalg.norm(y)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2] = np.cross(y, z), y, z
    pose[:3, 3] = centroid + 60.0 * out
    return pose, pose[:3, 3] + 15.0 * z


def test_real_t1_navigation_files_written_without_affine(shared_data, tmp_path):
    t1 = _real_t1(shared_data)
    pose, cortex = _head_pose_on(t1)
    plan = write_plan(tmp_path / "plan", t1, pose=pose, target_ras=cortex, name="dlpfc-1")
    result = export_plan(plan, "all")
    assert result.skipped == {}
    assert set(result.files) == set(FORMATS)
    shift = _fov_corner_shift_mm(*(getattr(nib.load(t1).header, f"get_{x}")() for x in ("qform", "sform")),
                                 nib.load(t1).shape)
    for fmt, paths in result.files.items():
        provenance = json.loads(paths[1].read_text())
        assert provenance["xform"] == "qform=sform", fmt
        assert provenance["affine_used"] == "sform", fmt
        assert provenance["qform_sform_max_difference_mm"] == pytest.approx(shift, rel=1e-6), fmt
    xml = result.files["localite"][0]
    assert "affine=sform" in xml.read_text()
    matrix = ET.parse(xml).getroot().find("./InstrumentMarker/Marker/Matrix4D")
    np.testing.assert_allclose([float(matrix.get(f"data{r}3")) for r in range(3)], pose[:3, 3], atol=1e-6)


def _rotated_about_centre(affine, shape, angle_rad):
    """``affine`` rotated about the volume centre by ``angle_rad`` about z (corners move, the centre stays)."""
    centre = affine @ np.array([(shape[0] - 1) / 2, (shape[1] - 1) / 2, (shape[2] - 1) / 2, 1.0])
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    rot = np.eye(4)
    rot[:2, :2] = [[c, -s], [s, c]]
    to, back = np.eye(4), np.eye(4)
    to[:3, 3], back[:3, 3] = -centre[:3], centre[:3]
    return back @ rot @ to @ affine


@pytest.mark.parametrize("target_mm, accepted", [(0.08, True), (0.12, False)])
def test_tolerance_is_every_fov_corner_within_0_1_mm(target_mm, accepted):
    shape = (160, 192, 176)
    half_diag_xy = np.hypot(shape[0] / 2, shape[1] / 2)  # 1-mm voxels: corner radius in the rotation plane
    qform = _rotated_about_centre(REFERENCE_AFFINE, shape, target_mm / half_diag_xy)
    img = nib.Nifti1Image(np.zeros(shape, np.uint8), REFERENCE_AFFINE)
    img.set_qform(qform, 1)
    img.set_sform(REFERENCE_AFFINE, 1)
    shift = _fov_corner_shift_mm(img.header.get_qform(), img.header.get_sform(), shape)
    assert shift == pytest.approx(target_mm, abs=2e-3)
    if accepted:
        check = check_qform_sform(img)
        assert check.xform == "qform=sform" and check.affine_used == "sform"
        np.testing.assert_array_equal(check.affine, img.header.get_sform())
        assert check.max_difference_mm == pytest.approx(shift, rel=1e-6)
    else:
        with pytest.raises(XformMismatchError, match=r"--affine qform\|sform"):
            check_qform_sform(img)


@pytest.fixture(scope="module")
def mismatched_t1(tmp_path_factory):
    """Reference T1 whose sform is 5 mm right of its qform (both code 1)."""
    sform = REFERENCE_AFFINE.copy()
    sform[0, 3] = 95.0
    return make_reference_t1(tmp_path_factory.mktemp("mismatch") / "t1.nii", sform=sform)


def test_affine_sform_with_all_formats_writes_the_valid_ones(mismatched_t1, tmp_path):
    plan = write_plan(tmp_path / "plan", mismatched_t1, pose=p_ref())
    with pytest.raises(NavigationFormatError, match="uses the qform"):  # by name: still refused
        export_plan(plan, ["ant"], t1_choice="sform")
    result = export_plan(plan, "all", t1_choice="sform")
    # ANT visor2 and SimNIBS read the qform: refused; Slicer (ITK, codes 1/1) reads the sform
    assert set(result.skipped) == {"ant", "simnibs"}
    assert set(result.files) == set(FORMATS) - {"ant", "simnibs"}
    for fmt, reason in result.skipped.items():
        assert "\n" not in reason and "qform" in reason and "sform" in reason, (fmt, reason)
    assert not list((plan / "navigation").glob("*ant*")) and not list((plan / "navigation").glob("*simnibs*"))
    provenance = json.loads(result.files["localite"][1].read_text())
    assert provenance["xform"] == "sform" and provenance["affine_used"] == "sform"
    assert provenance["qform_sform_max_difference_mm"] == pytest.approx(5.0)


def test_plan_navigation_writer_reports_each_refused_format_in_one_line(mismatched_t1, tmp_path):
    plan = write_plan(tmp_path / "plan", mismatched_t1, pose=p_ref())
    messages = []
    navigation_writer("all", "sform", messages.append)(plan)
    assert sorted(m.split(" ", 1)[0] for m in messages) == ["ant", "simnibs"]
    for message in messages:
        assert "\n" not in message and "navigation file not written" in message
    assert (plan / "navigation" / "sub-01_brainsight_targets.txt").is_file()
    # without --affine the whole set is skipped, in one line naming --affine
    other = write_plan(tmp_path / "plan2", mismatched_t1, pose=p_ref())
    messages.clear()
    navigation_writer("all", None, messages.append)(other)
    assert len(messages) == 1 and messages[0].startswith("navigation files not written:")
    assert "--affine" in messages[0] and not (other / "navigation").exists()


def test_cli_export_all_with_affine_warns_per_refused_format(mismatched_t1, tmp_path, capsys):
    from test_navigation_export import _parser

    plan = write_plan(tmp_path / "plan", mismatched_t1, pose=p_ref())
    args = _parser().parse_args(["export", str(plan), "--format", "all", "--affine", "sform"])
    assert args.handler(args) == 0
    err = capsys.readouterr().err.splitlines()
    assert sorted(line.split()[1] for line in err) == ["ant", "simnibs"]
    assert all(line.startswith("warning: ") for line in err)
    shutil.rmtree(plan / "navigation")
