"""Scalp surface, scalp point, coil pose (SimNIBS axes) and depth.

References are independent of ``tmstarget.anatomy.scalp`` and ``tmstarget.coil``: an analytic ellipsoid head
stored with an oblique LAS affine and unequal voxels (so a wrong axis order, a
lost flip or a missing affine moves every answer by centimetres), hand-written
handle directions from navigation-formats.md §2 and §7 (P_ref), and, on real
images, a plain threshold mask with scipy distance maps.
"""

import nibabel as nib
import numpy as np
import pytest
from nibabel.affines import apply_affine
from scipy import ndimage
from scipy.spatial import cKDTree

from tmstarget.anatomy import scalp
from tmstarget.coil import placement as coil_placement
from tmstarget.errors import InputError, OrientationError

S = 1 / np.sqrt(2)
HEAD_CENTRE_RAS_MM = np.array([4.0, -12.0, 18.0])
HEAD_SEMI_AXES_MM = np.array([62.0, 78.0, 70.0])  # along world R, A, S
BRAIN_INSET_MM = 12.0  # brain = ellipsoid with semi-axes 12 mm shorter
TARGET_DEPTH_MM = 20.0
MARKER_RAS_MM = HEAD_CENTRE_RAS_MM + np.array([HEAD_SEMI_AXES_MM[0] + 12.0, 0.0, 0.0])


def _rotation(rx_deg, ry_deg, rz_deg):
    rx, ry, rz = np.deg2rad([rx_deg, ry_deg, rz_deg])
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return z @ y @ x


def _ellipsoid_level(points_ras_mm, inset_mm):
    """< 1 inside the ellipsoid whose semi-axes are ``inset_mm`` shorter."""
    rel = (points_ras_mm - HEAD_CENTRE_RAS_MM) / (HEAD_SEMI_AXES_MM - inset_mm)
    return np.sqrt((rel**2).sum(axis=-1))


def _oblique_las_affine(shape, zooms):
    affine = np.eye(4)
    affine[:3, :3] = _rotation(10, -15, 20) @ np.diag([-1.0, 1.0, 1.0]) @ np.diag(zooms)
    affine[:3, 3] = HEAD_CENTRE_RAS_MM - affine[:3, :3] @ ((np.array(shape) - 1) / 2)
    return affine


@pytest.fixture(scope="module")
def synthetic_t1():
    """Ellipsoid head: scalp 900, skull 50, CSF 150, brain 600, noisy background, a marker."""
    zooms, shape = (1.5, 1.25, 2.0), (134, 160, 100)
    affine = _oblique_las_affine(shape, zooms)
    ijk = np.indices(shape, dtype=float).reshape(3, -1).T
    ras = apply_affine(affine, ijk).reshape(*shape, 3)
    data = np.where(_ellipsoid_level(ras, 0.0) <= 1, 900.0, 0.0)
    data[_ellipsoid_level(ras, 4.0) <= 1] = 50.0
    data[_ellipsoid_level(ras, 9.0) <= 1] = 150.0
    data[_ellipsoid_level(ras, BRAIN_INSET_MM) <= 1] = 600.0
    data[np.linalg.norm(ras - MARKER_RAS_MM, axis=-1) <= 4.0] = 1000.0
    noise = np.random.default_rng(0).normal(0.0, 20.0, shape)
    return nib.Nifti1Image(np.abs(data + noise).astype(np.float32), affine)


@pytest.fixture(scope="module")
def synthetic_mesh(synthetic_t1):
    return scalp.scalp_surface(synthetic_t1)


@pytest.fixture(scope="module")
def synthetic_brain_mask():
    """Analytic brain on a different grid (RAS, 1 mm) than the T1."""
    shape = (150, 180, 170)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = HEAD_CENTRE_RAS_MM - (np.array(shape) - 1) / 2
    ras = apply_affine(affine, np.indices(shape, dtype=float).reshape(3, -1).T).reshape(*shape, 3)
    return nib.Nifti1Image((_ellipsoid_level(ras, BRAIN_INSET_MM) <= 1).astype(np.uint8), affine)


def _angle_deg(a, b):
    cos = np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def _axis_cases():
    for axis in range(3):
        for sign in (-1.0, 1.0):
            yield pytest.param(axis, sign, id=f"{'-+'[sign > 0]}{'RAS'[axis]}")


def test_synthetic_image_is_oblique_las_with_unequal_voxels(synthetic_t1):
    # Guards the fixture: with a plain RAS diagonal affine, axis-order and flip bugs would hide.
    assert nib.aff2axcodes(synthetic_t1.affine)[0] in ("L", "R")
    assert np.linalg.det(synthetic_t1.affine[:3, :3]) < 0
    assert len(set(np.round(nib.affines.voxel_sizes(synthetic_t1.affine), 3))) == 3
    assert nib.affines.obliquity(synthetic_t1.affine).max() > 0.1


def test_head_mask_matches_ellipsoid(synthetic_t1):
    mask_img = scalp.head_mask(synthetic_t1)
    mask = mask_img.get_fdata() > 0
    ras = apply_affine(mask_img.affine, np.indices(mask.shape, dtype=float).reshape(3, -1).T)
    truth = (_ellipsoid_level(ras, 0.0) <= 1).reshape(mask.shape)
    dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
    assert dice > 0.97
    # the dark skull layer is inside the head; the marker outside it is dropped
    skull = (_ellipsoid_level(ras, 6.5) <= 1).reshape(mask.shape)
    assert mask[skull].all()
    marker_ijk = np.round(apply_affine(np.linalg.inv(mask_img.affine), MARKER_RAS_MM)).astype(int)
    assert not mask[tuple(marker_ijk)]


def test_scalp_surface_lies_on_ellipsoid_with_outward_normals(synthetic_mesh):
    vertices = synthetic_mesh.vertices_ras_mm
    level = _ellipsoid_level(vertices, 0.0)
    radial_error_mm = np.linalg.norm(vertices - HEAD_CENTRE_RAS_MM, axis=1) * np.abs(1 - 1 / level)
    assert np.percentile(radial_error_mm, 99) < 1.0
    assert radial_error_mm.max() < 1.5
    analytic = (vertices - HEAD_CENTRE_RAS_MM) / HEAD_SEMI_AXES_MM**2
    analytic /= np.linalg.norm(analytic, axis=1, keepdims=True)
    angles = np.degrees(np.arccos(np.clip((analytic * synthetic_mesh.normals_ras).sum(axis=1), -1, 1)))
    # vertex normals keep some voxel terracing (1.5 x 2.5 x 2 mm working grid);
    # coil poses use the smoothed patch normal instead
    assert np.median(angles) < 3.0
    assert np.percentile(angles, 95) < 10.0
    assert angles.max() < 45.0


@pytest.mark.parametrize("method", ["closest", "normal"])
@pytest.mark.parametrize(("axis", "sign"), list(_axis_cases()))
def test_scalp_point_on_axis_targets(synthetic_mesh, synthetic_brain_mask, axis, sign, method):
    direction = np.zeros(3)
    direction[axis] = sign
    semi_axis = HEAD_SEMI_AXES_MM[axis]
    target = HEAD_CENTRE_RAS_MM + (semi_axis - TARGET_DEPTH_MM) * direction
    expected = HEAD_CENTRE_RAS_MM + semi_axis * direction

    point, normal = coil_placement.scalp_point(target, synthetic_mesh, method=method)
    # "closest" may slide ~1 mm along a terraced surface; "normal" uses the smoothed normal
    np.testing.assert_allclose(point, expected, atol=1.5 if method == "closest" else 1.0)
    assert _angle_deg(normal, direction) < 3.0
    depth = coil_placement.scalp_to_cortex_mm(point, target)
    assert depth == pytest.approx(TARGET_DEPTH_MM, abs=1.0)
    cortex = coil_placement.scalp_to_cortex_mm(point, target, synthetic_brain_mask)
    assert cortex == pytest.approx(BRAIN_INSET_MM, abs=1.0)


def test_normal_method_normal_passes_through_off_axis_target(synthetic_mesh):
    target = HEAD_CENTRE_RAS_MM + np.array([-30.0, 40.0, 30.0])
    point, normal = coil_placement.scalp_point(target, synthetic_mesh, method="normal")
    assert abs(_ellipsoid_level(point, 0.0) - 1) < 1.0 / HEAD_SEMI_AXES_MM.min()
    analytic = (point - HEAD_CENTRE_RAS_MM) / HEAD_SEMI_AXES_MM**2
    assert _angle_deg(normal, analytic) < 3.0
    assert _angle_deg(-normal, target - point) < 1.0


@pytest.mark.parametrize("z_axis", ["normal", "target"])
@pytest.mark.parametrize("method", ["closest", "normal"])
def test_coil_pose_for_left_dlpfc_is_valid_simnibs_pose(synthetic_mesh, method, z_axis):
    target = HEAD_CENTRE_RAS_MM + np.array([-30.0, 40.0, 30.0])
    placement = coil_placement.place_coil(target, synthetic_mesh, method=method, z_axis=z_axis)
    pose = placement.pose_ras
    rotation = pose[:3, :3]
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-9)
    assert np.linalg.det(rotation) == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_array_equal(pose[3], [0, 0, 0, 1])
    x, y, z, centre = pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3]
    np.testing.assert_allclose(np.cross(y, z), x, atol=1e-9)
    # centre on the scalp, z into the head and toward the target
    assert abs(_ellipsoid_level(centre, 0.0) - 1) < 1.0 / HEAD_SEMI_AXES_MM.min()
    assert _angle_deg(z, target - centre) < 3.0
    assert _angle_deg(z, HEAD_CENTRE_RAS_MM - centre) < 90.0
    # handle = -y, exactly; it is the rule direction projected into the coil plane
    np.testing.assert_array_equal(placement.handle_ras, -y)
    rule = np.array([-S, -S, 0.0])
    projected = rule - (rule @ z) * z
    np.testing.assert_allclose(-y, projected / np.linalg.norm(projected), atol=1e-9)
    assert placement.handle_ras[0] < -0.4  # lateral = left
    assert placement.handle_ras[1] < -0.4  # posterior
    if z_axis == "target":
        assert _angle_deg(z, target - centre) < 1e-6


@pytest.mark.parametrize(
    ("offset_ras_mm", "handle_sign_x"),
    [((-30.0, 40.0, 30.0), -1), ((30.0, 40.0, 30.0), 1), ((0.0, 40.0, 40.0), 0)],
    ids=["left", "right", "midline"],
)
def test_coil_handle_sides_on_synthetic_head(synthetic_mesh, offset_ras_mm, handle_sign_x):
    handle = coil_placement.place_coil(HEAD_CENTRE_RAS_MM + np.array(offset_ras_mm), synthetic_mesh).handle_ras
    assert handle[1] < -0.6
    if handle_sign_x == 0:
        assert abs(handle[0]) < 0.05
    else:
        assert np.sign(handle[0]) == handle_sign_x and abs(handle[0]) > 0.5


def test_coil_distance_offset_moves_centre_outward(synthetic_mesh):
    target = HEAD_CENTRE_RAS_MM + np.array([0.0, 0.0, HEAD_SEMI_AXES_MM[2] - TARGET_DEPTH_MM])
    pose = coil_placement.coil_pose(target, synthetic_mesh, distance_mm=5.0)
    expected = HEAD_CENTRE_RAS_MM + np.array([0.0, 0.0, HEAD_SEMI_AXES_MM[2] + 5.0])
    np.testing.assert_allclose(pose[:3, 3], expected, atol=1.0)
    assert _angle_deg(pose[:3, 2], [0, 0, -1]) < 3.0
    np.testing.assert_allclose(-pose[:3, 1], [0, -1, 0], atol=0.05)  # midline: handle posterior


def test_place_coil_dict_reports_depths(synthetic_mesh, synthetic_brain_mask):
    target = HEAD_CENTRE_RAS_MM + np.array([HEAD_SEMI_AXES_MM[0] - TARGET_DEPTH_MM, 0.0, 0.0])
    coil = coil_placement.place_coil(target, synthetic_mesh, brain_mask_img=synthetic_brain_mask).to_dict()
    assert coil["scalp_to_cortex_mm"] == pytest.approx(BRAIN_INSET_MM, abs=1.0)
    assert coil["scalp_to_target_mm"] == pytest.approx(TARGET_DEPTH_MM, abs=1.0)
    assert np.asarray(coil["matrix"]).shape == (4, 4)
    np.testing.assert_allclose(coil["centre_ras_mm"], np.asarray(coil["matrix"])[:3, 3])
    np.testing.assert_allclose(coil["handle_direction"], -np.asarray(coil["matrix"])[:3, 1])


def test_target_outside_head_is_refused(synthetic_mesh):
    outside = HEAD_CENTRE_RAS_MM + np.array([0.0, 0.0, HEAD_SEMI_AXES_MM[2] + 10.0])
    with pytest.raises(OrientationError, match="outside the head"):
        coil_placement.coil_pose(outside, synthetic_mesh)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "radial"}, InputError, "method"),
        ({"z_axis": "up"}, InputError, "z_axis"),
        ({"handle": "dlfpc"}, InputError, "handle rule"),
        ({"handle": [0.0, 0.0, 1.0]}, OrientationError, "coil normal"),
    ],
)
def test_bad_options_raise(synthetic_mesh, kwargs, error, match):
    target = HEAD_CENTRE_RAS_MM + np.array([0.0, 0.0, HEAD_SEMI_AXES_MM[2] - TARGET_DEPTH_MM])
    with pytest.raises(error, match=match):
        coil_placement.coil_pose(target, synthetic_mesh, **kwargs)


@pytest.mark.parametrize(
    ("target", "rule", "expected"),
    [
        ((-38.0, 44.0, 30.0), "auto", (-S, -S, 0.0)),  # §7 P_ref: left DLPFC, posterior-lateral
        ((-38.0, 44.0, 30.0), "dlpfc", (-S, -S, 0.0)),
        ((38.0, 44.0, 30.0), "auto", (S, -S, 0.0)),
        ((2.0, 30.0, 50.0), "auto", (0.0, -1.0, 0.0)),  # dMPFC: posterior along the midline
        ((-38.0, 44.0, 30.0), "midline", (0.0, -1.0, 0.0)),
        ((-38.0, 44.0, 30.0), 90.0, (-1.0, 0.0, 0.0)),  # 90° from posterior toward lateral (left)
        ((38.0, 44.0, 30.0), 0, (0.0, -1.0, 0.0)),
        ((0.0, 30.0, 50.0), 180.0, (0.0, 1.0, 0.0)),
    ],
)
def test_handle_direction_rules(target, rule, expected):
    np.testing.assert_allclose(coil_placement.handle_direction(target, rule), expected, atol=1e-12)


def test_handle_direction_in_a_rotated_head_frame():
    axes = _rotation(0, 0, 30)  # head yawed 30° to the left about superior
    midline = np.array([5.0, -3.0, 0.0])
    target = midline + axes @ np.array([-38.0, 44.0, 30.0])
    handle = coil_placement.handle_direction(target, "auto", midline_ras_mm=midline, head_axes_ras=axes)
    np.testing.assert_allclose(handle, axes @ np.array([-S, -S, 0.0]), atol=1e-12)


def test_handle_direction_refuses_lateral_angle_on_midline():
    with pytest.raises(OrientationError, match="midline"):
        coil_placement.handle_direction((3.0, 30.0, 50.0), 45.0)
    with pytest.raises(OrientationError, match="head_axes_ras"):
        coil_placement.handle_direction((-38.0, 44.0, 30.0), "auto", head_axes_ras=np.diag([-1.0, 1.0, 1.0]))


def test_pose_from_handle_random(rng):
    for _ in range(50):
        centre, z, handle = rng.normal(size=(3, 3))
        pose = coil_placement.pose_from_handle(centre, z, handle)
        rotation = pose[:3, :3]
        np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-12)
        assert np.linalg.det(rotation) == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_allclose(pose[:3, 2], z / np.linalg.norm(z), atol=1e-12)
        np.testing.assert_allclose(pose[:3, 3], centre)
        unit_z = z / np.linalg.norm(z)
        in_plane = handle - (handle @ unit_z) * unit_z
        np.testing.assert_allclose(-pose[:3, 1], in_plane / np.linalg.norm(in_plane), atol=1e-12)


# --------------------------------------------------------------------------
# real images
# --------------------------------------------------------------------------


def _independent_head(img, threshold):
    """Plain threshold + largest component + 3-D hole filling at native resolution.

    Returns the mask and a KD-tree of the world positions of its boundary voxels.
    """
    data = np.asarray(img.dataobj, dtype=np.float32)
    labels, _ = ndimage.label(data > threshold)
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    mask = ndimage.binary_fill_holes(labels == counts.argmax())
    boundary_ijk = np.argwhere(mask & ~ndimage.binary_erosion(mask))
    return mask, cKDTree(apply_affine(img.affine, boundary_ijk))


def _inside(img, mask, point_ras_mm):
    ijk = np.round(apply_affine(np.linalg.inv(img.affine), point_ras_mm)).astype(int)
    if np.any(ijk < 0) or np.any(ijk >= mask.shape):
        return False
    return bool(mask[tuple(ijk)])


def _targets_under_scalp(img, mask, directions, depth_mm=20.0):
    """Points ``depth_mm`` inside the outer head boundary, along rays from the cranium centre."""
    ras = apply_affine(img.affine, np.argwhere(mask)[::7])
    cranium = ras[ras[:, 2] > ras[:, 2].max() - 100.0]
    centre = cranium.mean(axis=0)
    targets = []
    for direction in directions:
        unit = np.asarray(direction, dtype=float) / np.linalg.norm(direction)
        steps = np.arange(0.0, 150.0, 0.5)
        inside = [_inside(img, mask, centre + t * unit) for t in steps]
        exit_mm = steps[np.flatnonzero(inside)[-1]]
        targets.append(centre + (exit_mm - depth_mm) * unit)
    return targets


def _check_on_outer_surface(img, mask, boundary_tree, placement, target):
    centre, z = placement.pose_ras[:3, 3], placement.pose_ras[:3, 2]
    normal = placement.scalp_normal_ras
    assert boundary_tree.query(centre)[0] <= 2.0
    assert not _inside(img, mask, centre + 4.0 * normal)
    assert _inside(img, mask, centre - 4.0 * normal)
    assert _angle_deg(z, np.asarray(target) - centre) < 20.0


@pytest.fixture(scope="module")
def real_t1(shared_data):
    img = nib.load(shared_data / "pydecnef-sub1" / "anat" / "T1w.nii.gz")
    threshold = 0.15 * np.percentile(np.asarray(img.dataobj), 99)
    return img, *_independent_head(img, threshold), scalp.scalp_surface(img)


@pytest.mark.shared_data
@pytest.mark.parametrize("method", ["closest", "normal"])
def test_real_t1_scalp_point_and_coil_axis(real_t1, method):
    img, mask, boundary_tree, mesh = real_t1
    assert img.shape == (176, 256, 256)
    directions = [(-1, 1, 1), (1, 1, 1), (0, 0.3, 1), (-1, -1, 1), (1, -1, 0.5)]
    targets = _targets_under_scalp(img, mask, directions)
    for target, direction in zip(targets, directions):
        placement = coil_placement.place_coil(target, mesh, method=method)
        _check_on_outer_surface(img, mask, boundary_tree, placement, target)
        # the target is 20 mm in along a ray, so the scalp is at most ~20 mm (+ grid) away
        assert 12.0 <= placement.scalp_to_target_mm <= (22.0 if method == "closest" else 25.0)
        # the scanner frame is close to the head frame here: left targets get left handles
        if direction[0] != 0:
            assert np.sign(placement.handle_ras[0]) == np.sign(direction[0])
        assert placement.handle_ras[1] < 0


@pytest.fixture(scope="module")
def mni_template():
    from nilearn.datasets import load_mni152_template

    img = load_mni152_template(resolution=1)
    return img, *_independent_head(img, 0.0), scalp.scalp_surface(img)


@pytest.mark.parametrize(
    ("target_mni_mm", "handle_side"),
    [((-38.0, 44.0, 26.0), -1), ((38.0, 44.0, 26.0), 1), ((0.0, 30.0, 50.0), 0)],
    ids=["left-dlpfc", "right-dlpfc", "dmpfc"],
)
def test_mni_template_scalp_point_and_handle(mni_template, target_mni_mm, handle_side):
    # nilearn's template is skull-stripped: its "scalp" is the brain boundary.
    img, mask, boundary_tree, mesh = mni_template
    placement = coil_placement.place_coil(target_mni_mm, mesh)
    _check_on_outer_surface(img, mask, boundary_tree, placement, target_mni_mm)
    handle = placement.handle_ras
    assert handle[1] < -0.5
    if handle_side == 0:
        assert abs(handle[0]) < 0.1
    else:
        assert np.sign(handle[0]) == handle_side and abs(handle[0]) > 0.5
        assert _angle_deg(handle[:2], (0.0, -1.0)) == pytest.approx(45.0, abs=10.0)
