"""Frames, poses, coil conventions and qform/sform checks (tmstarget.spaces)."""

import math
import warnings

import nibabel as nib
import numpy as np
import pytest
from numpy.testing import assert_allclose

from navigation_fixtures import REFERENCE_AFFINE, S, p_ref, random_poses
from tmstarget.errors import InvalidPoseError, OrientationError, XformMismatchError
from tmstarget.spaces import (
    COIL_AXES,
    D,
    angle_between_deg,
    check_qform_sform,
    coil_axes_matrix,
    handle_ras,
    itk_nifti_xform,
    lps2ras,
    normal_ras,
    orthonormalize_pose,
    pose_difference,
    pose_from_file,
    pose_to_file,
    ras2lps,
    rotation_angle_deg,
    validate_pose,
)


def test_ras2lps_points_and_poses():
    assert_allclose(ras2lps([-38.0, 44.0, 30.0]), [38.0, -44.0, 30.0])
    pts = np.array([[1.0, 2.0, 3.0], [-4.0, 5.0, -6.0]])
    assert_allclose(ras2lps(pts), [[-1, -2, 3], [4, -5, -6]])
    assert_allclose(lps2ras(ras2lps(pts)), pts)
    pose = p_ref()
    lps = ras2lps(pose)
    assert_allclose(lps, D @ pose)
    assert_allclose(lps[:3, 3], [38.0, -44.0, 30.0])
    # D is a rotation: the pose stays right-handed
    assert np.linalg.det(lps[:3, :3]) == pytest.approx(1.0)
    assert_allclose(lps2ras(lps), pose)


def test_ras2lps_rejects_bad_shape():
    with pytest.raises(OrientationError, match="shape"):
        ras2lps([1.0, 2.0])


def test_left_hemisphere_sign():
    """A left-hemisphere point has x < 0 in RAS and x > 0 in LPS."""
    assert ras2lps([-38.0, 44.0, 30.0])[0] > 0


@pytest.mark.parametrize(
    "label, change",
    [
        ("mirror", lambda m: m.__setitem__((slice(0, 3), 0), -m[:3, 0])),
        ("shear", lambda m: m.__setitem__((0, 1), m[0, 1] + 0.05)),
        ("scale", lambda m: m.__setitem__((slice(0, 3), slice(0, 3)), m[:3, :3] * 1.1)),
        ("nan", lambda m: m.__setitem__((1, 3), np.nan)),
        ("bottom", lambda m: m.__setitem__((3, 0), 0.5)),
    ],
)
def test_validate_pose_rejects(label, change):
    pose = p_ref()
    change(pose)
    with pytest.raises(InvalidPoseError):
        validate_pose(pose)


def test_validate_pose_messages():
    pose = p_ref()
    pose[:3, 0] *= -1
    with pytest.raises(InvalidPoseError, match="det"):
        validate_pose(pose, what="marker 'x'")
    with pytest.raises(InvalidPoseError, match="4x4"):
        validate_pose(np.eye(3))


def test_orthonormalize_tolerances():
    pose = p_ref()
    rounded = np.round(pose, 4)
    out = orthonormalize_pose(rounded)
    assert_allclose(out[:3, :3].T @ out[:3, :3], np.eye(3), atol=1e-12)
    assert rotation_angle_deg(out, pose) < 0.01
    noisy = pose.copy()
    noisy[0, 0] += 2e-3
    with pytest.warns(UserWarning, match="nearest rotation"):
        orthonormalize_pose(noisy)
    bad = pose.copy()
    bad[0, 1] += 0.02
    with pytest.raises(InvalidPoseError, match="orthonormal"):
        orthonormalize_pose(bad)
    mirrored = pose.copy()
    mirrored[:3, 2] *= -1
    with pytest.raises(InvalidPoseError, match="det"):
        orthonormalize_pose(mirrored)


def test_coil_axes_are_proper_rotations():
    for name, k in COIL_AXES.items():
        assert_allclose(k.T @ k, np.eye(3), err_msg=name)
        assert np.linalg.det(k) == pytest.approx(1.0), name
    for name in ("simnibs", "localite", "brainsight", "ant"):
        assert_allclose(COIL_AXES[name] @ COIL_AXES[name], np.eye(3), err_msg=name)
    assert not np.allclose(COIL_AXES["softaxic"] @ COIL_AXES["softaxic"], np.eye(3))
    with pytest.raises(OrientationError, match="unknown coil-axis"):
        coil_axes_matrix("magic")


def test_localite_axes_meaning():
    """x_L = z_sim (normal), y_L = -y_sim (toward the handle), z_L = x_sim."""
    pose = p_ref()
    loc = pose_to_file(pose, world="RAS", axes="localite")
    assert_allclose(loc[:3, 0], pose[:3, 2])
    assert_allclose(loc[:3, 1], handle_ras(pose))
    assert_allclose(loc[:3, 2], pose[:3, 0])


def test_file_round_trip_all_conventions():
    for pose in random_poses(20, seed=1):
        for axes in COIL_AXES:
            for world in ("RAS", "LPS"):
                back = pose_from_file(
                    pose_to_file(pose, world=world, axes=axes), world=world, axes=axes
                )
                assert_allclose(back, pose, atol=1e-12, err_msg=f"{axes} {world}")


def test_handle_and_normal_of_p_ref():
    pose = p_ref()
    assert_allclose(handle_ras(pose), [-S, -S, 0.0])
    assert_allclose(normal_ras(pose), [0.0, 0.0, -1.0])
    assert angle_between_deg(handle_ras(pose), [0, -1, 0]) == pytest.approx(45.0, abs=1e-9)
    assert angle_between_deg(handle_ras(pose), [-1, 0, 0]) == pytest.approx(45.0, abs=1e-9)


def test_angles_and_distances():
    pose = p_ref()
    other = pose.copy()
    theta = math.radians(0.005)
    rot = np.array(
        [[math.cos(theta), -math.sin(theta), 0], [math.sin(theta), math.cos(theta), 0], [0, 0, 1]]
    )
    other[:3, :3] = rot @ pose[:3, :3]
    other[:3, 3] += [3.0, 4.0, 0.0]
    diff = pose_difference(pose, other)
    assert diff["distance_mm"] == pytest.approx(5.0)
    assert diff["angle_deg"] == pytest.approx(0.005, rel=1e-6)
    assert rotation_angle_deg(pose, pose) == pytest.approx(0.0, abs=1e-12)
    flipped = pose.copy()
    flipped[:3, :2] *= -1  # 180 deg about z
    assert rotation_angle_deg(pose, flipped) == pytest.approx(180.0)
    assert diff["handle_angle_deg"] == pytest.approx(0.005, rel=1e-5)
    assert diff["normal_angle_deg"] == pytest.approx(0.0, abs=1e-9)


def _img(qform=REFERENCE_AFFINE, sform=REFERENCE_AFFINE, qcode=1, scode=1):
    img = nib.Nifti1Image(np.zeros((7, 8, 9), np.uint8), sform)
    img.set_qform(qform, qcode)
    img.set_sform(sform, scode)
    return img


def test_qform_sform_equal():
    res = check_qform_sform(_img())
    assert res.xform == "qform=sform"
    assert res.code == 1
    assert_allclose(res.affine, REFERENCE_AFFINE)
    assert res.max_difference_mm == pytest.approx(0.0, abs=1e-9)


def test_qform_sform_differ_refused_unless_chosen():
    sform = REFERENCE_AFFINE.copy()
    sform[0, 3] = 95.0
    img = _img(sform=sform)
    with pytest.raises(XformMismatchError, match="navigators disagree") as info:
        check_qform_sform(img)
    assert "5.00 mm" in str(info.value)
    q = check_qform_sform(img, choose="qform")
    assert q.xform == "qform" and q.chosen
    assert_allclose(q.affine, REFERENCE_AFFINE)
    s = check_qform_sform(img, choose="sform")
    assert_allclose(s.affine, sform)


def test_sheared_sform_refused_even_when_chosen():
    sform = REFERENCE_AFFINE.copy()
    sform[0, 1] = 0.2
    img = _img(sform=sform)
    for choose in (None, "sform", "qform"):
        with pytest.raises(OrientationError, match="sheared"):
            check_qform_sform(img, choose=choose)


def test_no_transform_refused_and_single_transform_used():
    with pytest.raises(OrientationError, match="no world frame"):
        check_qform_sform(_img(qcode=0, scode=0))
    only_q = check_qform_sform(_img(scode=0))
    assert only_q.xform == "qform"
    only_s = check_qform_sform(_img(qcode=0, scode=2))
    assert only_s.xform == "sform" and only_s.code == 2
    with pytest.raises(OrientationError, match="no sform"):
        check_qform_sform(_img(scode=0), choose="sform")
    with pytest.raises(OrientationError, match="choose must be"):
        check_qform_sform(_img(), choose="best")


def test_itk_rule_table():
    assert itk_nifti_xform(1, 1) == "sform"
    assert itk_nifti_xform(1, 2) == "qform"
    assert itk_nifti_xform(2, 1) == "sform"
    assert itk_nifti_xform(0, 1) == "sform"
    assert itk_nifti_xform(1, 0) == "qform"


def test_no_warning_for_clean_pose():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        orthonormalize_pose(p_ref())
