"""The viewer's off-screen 3D scene (``tmstarget.viewer.scene``): real VTK rendering, no window.

Screen positions are checked against a pinhole projection written here from the
camera's position, focal point, view-up and view angle (not VTK's own
world-to-display), and the pixels of the rendered image are searched for the
markers' flat colours.
"""

import tomllib
from pathlib import Path

import numpy as np
import pytest

import tmstarget

pv = pytest.importorskip("pyvista")
scene_mod = pytest.importorskip("tmstarget.viewer.scene")

ATLAS = Path(__file__).resolve().parents[1] / "tmstarget" / "data" / "atlas.toml"


def pinhole(camera, view_angle_deg, size, point):
    """(column, row from the top) of a world point for a perspective camera, from first principles."""
    position, focal, up = (np.asarray(v, dtype=float) for v in camera)
    forward = (focal - position) / np.linalg.norm(focal - position)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    true_up = np.cross(right, forward)
    v = np.asarray(point, dtype=float) - position
    depth = v @ forward
    width, height = size
    f = (height / 2) / np.tan(np.deg2rad(view_angle_deg) / 2)
    return np.array([width / 2 + f * (v @ right) / depth, height / 2 - f * (v @ true_up) / depth])


def colour_near(image, col_row, rgb, radius=3, tol=8):
    """Whether a pixel within ``radius`` of (column, row) has colour ``rgb`` (each channel within ``tol``)."""
    col, row = (int(round(v)) for v in col_row)
    patch = image[max(row - radius, 0):row + radius + 1, max(col - radius, 0):col + radius + 1, :3].astype(int)
    return bool((np.abs(patch - np.asarray(rgb)).max(axis=-1) <= tol).any())


@pytest.fixture(scope="module")
def sample_scene(sample_plan_dir):
    plan = tmstarget.load_plan(sample_plan_dir)
    return plan, scene_mod.scene_data(plan)


def test_scene_content_of_an_mni_plan(sample_scene):
    plan, data = sample_scene
    assert data.head_source.startswith("plan T1 (anat/")
    assert data.map_name == "delta" and data.brain is not None
    # the target marker sits on the coil axis at the cortex, the plan's cortical point
    np.testing.assert_allclose(data.target_ras_mm, plan.coil["cortical_target_ras_mm"], atol=1e-9)
    # the classic targets of the atlas (read here with tomllib), unchanged in an MNI plan
    fixed = tomllib.loads(ATLAS.read_text())["fixed"]
    classic = {m.name: m.ras_mm for m in data.markers if m.kind == "classic"}
    assert set(classic) == {"5cm-rule", "beam-f3", "ba46"}
    for name, ras in classic.items():
        np.testing.assert_allclose(ras, fixed[name]["mni_mm"], atol=1e-9)
    candidates = [m for m in data.markers if m.kind == "candidate"]
    assert len(candidates) == len(plan.candidates) - 1
    # the scalp encloses the target: the head's surface lies farther from its centroid than the target
    head = data.head.vertices_ras_mm
    assert head[:, 1].max() > data.target_ras_mm[1] > head[:, 1].min()


@pytest.mark.parametrize("view", ["coil", "left"])
def test_target_colour_at_projected_position(sample_scene, view):
    """The target's flat magenta appears where the camera projects the target, and not at the mirror point."""
    _, data = sample_scene
    size = (640, 480)
    camera = None
    if view == "left":  # from the patient's left, superior up
        focal = data.target_ras_mm
        camera = (tuple(focal + [-400.0, 0.0, 0.0]), tuple(focal), (0.0, 0.0, 1.0))
    plotter = pv.Plotter(off_screen=True, window_size=list(size))
    try:
        scene_mod.build_scene(data, plotter, camera=camera)
        image = plotter.screenshot(return_img=True)
        camera = plotter.camera_position.to_list()
        expected = pinhole(camera, plotter.camera.view_angle, size, data.target_ras_mm)
        np.testing.assert_allclose(scene_mod.world_to_screen(plotter, data.target_ras_mm)[0], expected, atol=1.0)
    finally:
        plotter.close()
    assert image.shape == (size[1], size[0], 3) and image.std() > 10  # not blank
    assert colour_near(image, expected, scene_mod.TARGET_RGB)
    # a mirrored projection (left-right swapped) lands on no magenta
    mirrored = (size[0] - expected[0], expected[1] + 40)
    assert not colour_near(image, mirrored, scene_mod.TARGET_RGB, radius=6)


def test_render_png_writes_the_image(sample_scene, tmp_path):
    _, data = sample_scene
    image = scene_mod.render_png(data, tmp_path / "scene.png", size=(320, 240))
    from PIL import Image

    written = np.asarray(Image.open(tmp_path / "scene.png").convert("RGB"))
    assert written.shape == (240, 320, 3)
    np.testing.assert_array_equal(written, image[..., :3])
    assert (np.abs(written.astype(int) - scene_mod.TARGET_RGB).max(axis=-1) <= 8).any()


def test_compared_plan_marked_at_its_target(sample_plan_dir, sample_scene, tmp_path):
    """--compare: another protocol's plan on the same T1 is marked at its (cortical) target, in green."""
    plan, _ = sample_scene
    other = tmstarget.plan(Path(__file__).resolve().parents[1] / "sample_data", participant="01", protocol="beam-f3")
    data = scene_mod.scene_data(plan, compare=[other])
    marker = next(m for m in data.markers if m.kind == "compare")
    assert marker.name.startswith("beam-f3")
    expected = other.coil["cortical_target_ras_mm"] or other.target.ras_mm
    np.testing.assert_allclose(marker.ras_mm, expected, atol=1e-9)
    focal = marker.ras_mm
    camera = (tuple(focal + [-400.0, 100.0, 100.0]), tuple(focal), (0.0, 0.0, 1.0))
    plotter = pv.Plotter(off_screen=True, window_size=[480, 360])
    try:
        scene_mod.build_scene(data, plotter, camera=camera, labels=False)
        image = plotter.screenshot(return_img=True)
        where = pinhole(plotter.camera_position.to_list(), plotter.camera.view_angle, (480, 360), marker.ras_mm)
    finally:
        plotter.close()
    assert colour_near(image, where, scene_mod.COMPARE_RGB)


def test_peel_samples_the_map_under_the_surface(sample_scene):
    """The peeled brain lies ``peel_mm`` inside along the normals, and its colours are the map's values there."""
    _, data = sample_scene
    plotter = pv.Plotter(off_screen=True, window_size=[200, 150])
    try:
        scene = scene_mod.build_scene(data, plotter, labels=False)
        scene.set_peel(6.0, render=False)
        points = np.asarray(scene.brain_mesh.points)
        values = np.asarray(scene.brain_mesh["map"])
    finally:
        plotter.close()
    np.testing.assert_allclose(np.linalg.norm(points - data.brain.vertices_ras_mm, axis=1), 6.0, atol=1e-6)
    # independent trilinear value at a few of those points (nibabel affine + scipy), unthresholded
    from scipy.ndimage import map_coordinates

    img = data.map_img
    ijk = np.linalg.solve(img.affine, np.c_[points[:50], np.ones(50)].T)[:3]
    expected = map_coordinates(np.asarray(img.dataobj, dtype=float), ijk, order=1, cval=np.nan)
    np.testing.assert_allclose(values[:50], expected, atol=1e-9)


def test_mni_plan_without_t1_gets_the_template_head(tmp_path):
    """Explicit files and no T1: no coil; the head is nilearn's MNI152 template (checked against nilearn's own
    image extent), and the target is still drawn where the camera puts it."""
    from nilearn.datasets import load_mni152_template

    func = Path(__file__).resolve().parents[1] / "sample_data" / "derivatives" / "fmriprep" / "sub-01" / "func"
    stem = "sub-01_task-rest_space-MNI152NLin2009cAsym"
    plan = tmstarget.plan(rest_bold=func / f"{stem}_desc-preproc_bold.nii.gz",
                          rest_confounds=func / "sub-01_task-rest_desc-confounds_timeseries.tsv",
                          mask=func / f"{stem}_desc-brain_mask.nii.gz", protocol="rest-dmpfc")
    assert plan.coil is None and plan.anatomy is None
    data = scene_mod.scene_data(plan)
    assert data.head_source == "MNI152 template (nilearn)" and data.pose_ras is None
    template = load_mni152_template(resolution=2)
    corners = np.array([[i, j, k] for i in (0, template.shape[0]) for j in (0, template.shape[1])
                        for k in (0, template.shape[2])], dtype=float)
    world = corners @ template.affine[:3, :3].T + template.affine[:3, 3]
    head = data.head.vertices_ras_mm
    assert (head.min(axis=0) >= world.min(axis=0) - 3).all() and (head.max(axis=0) <= world.max(axis=0) + 3).all()
    np.testing.assert_allclose(data.target_ras_mm, plan.target.ras_mm)
    plotter = pv.Plotter(off_screen=True, window_size=[400, 300])
    try:
        scene_mod.build_scene(data, plotter, labels=False)
        image = plotter.screenshot(return_img=True)
        where = pinhole(plotter.camera_position.to_list(), plotter.camera.view_angle, (400, 300), data.target_ras_mm)
    finally:
        plotter.close()
    assert colour_near(image, where, scene_mod.TARGET_RGB)
