"""The Qt viewer (``tmstarget view``) under a virtual X display: real Qt, real VTK rendering.

Without ``DISPLAY`` the tests start their own Xvfb (Debian ``xvfb``; ``.ci/run``
installs it); they skip when neither exists, and fail instead when
``TMSTARGET_REQUIRE_DISPLAY=1`` (set by ``.ci/run``). Screen positions are
checked with the pinhole projection of ``test_viewer_scene`` (written from the
camera's parameters, not VTK's), the handle's expected direction with a
rotation written here (Rodrigues), and the saved plan version by reading its
SimNIBS CSV with the csv module.
"""

import csv
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import tmstarget
from test_viewer_scene import colour_near, pinhole

pytest.importorskip("pyvistaqt")


@pytest.fixture(scope="module")
def display():
    """An X display: the session's own, else a private Xvfb started here."""
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    if shutil.which("Xvfb") is None:
        reason = "no DISPLAY and no Xvfb (Debian package xvfb) to start one"
        if os.environ.get("TMSTARGET_REQUIRE_DISPLAY") == "1":
            pytest.fail(f"{reason}; TMSTARGET_REQUIRE_DISPLAY=1 forbids skipping", pytrace=False)
        pytest.skip(reason)
    read, write = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1600x1200x24", "-nolisten", "tcp"],
                              pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as pipe:
        number = pipe.readline().strip()
    os.environ["DISPLAY"] = f":{number}"
    try:
        yield os.environ["DISPLAY"]
    finally:
        server.terminate()
        server.wait(timeout=10)
        del os.environ["DISPLAY"]


@pytest.fixture(scope="module")
def qapp(display):
    os.environ["QT_QPA_PLATFORM"] = "xcb"
    from PySide6.QtWidgets import QApplication

    return QApplication.instance() or QApplication(["pytest"])


def wait_until(qapp, condition, timeout_s):
    """Process Qt events until ``condition()`` holds; returns the seconds it took (raises on timeout)."""
    start = time.perf_counter()
    while not condition():
        if time.perf_counter() - start > timeout_s:
            raise TimeoutError(f"not within {timeout_s} s")
        qapp.processEvents()
        time.sleep(0.01)
    return time.perf_counter() - start


def png_with_info(path):
    from PIL import Image

    image = Image.open(path)
    return np.asarray(image.convert("RGB")), json.loads(image.text["tmstarget-view"])


def test_view_screenshot_shows_the_target_where_the_camera_puts_it(sample_plan_dir, qapp, tmp_path):
    from PySide6.QtWidgets import QApplication

    from tmstarget.cli.main import main

    png = tmp_path / "view.png"
    assert main(["view", str(sample_plan_dir), "--screenshot", str(png), "--size", "1200x800"]) == 0
    qapp.processEvents()
    assert not [w for w in QApplication.topLevelWidgets() if w.isVisible()]  # no window left open
    image, info = png_with_info(png)
    assert image.shape == (800, 1200, 3) and image.std() > 20
    x, y, width, height = info["view_rect"]
    target = tmstarget.load_plan(sample_plan_dir).coil["cortical_target_ras_mm"]
    col, row = pinhole(info["camera"], info["view_angle_deg"], (width, height), target)
    assert colour_near(image, (x + col, y + row), (255, 0, 255))
    # the evidence panel and the slices are in the picture too: its right part is not the 3D view's black
    assert image[:, x + width + 20:].mean() > 100


def test_cli_view_refuses_a_folder_that_is_not_a_plan(tmp_path, capsys):
    from tmstarget.cli.main import main

    assert main(["view", str(tmp_path), "--screenshot", str(tmp_path / "x.png")]) == 1
    assert "not a plan folder" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def rotated(vector, axis, angle_deg):
    """Rodrigues: ``vector`` turned right-handed about unit ``axis`` by ``angle_deg``."""
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    theta = np.deg2rad(angle_deg)
    return (vector * np.cos(theta) + np.cross(axis, vector) * np.sin(theta)
            + axis * (axis @ vector) * (1 - np.cos(theta)))


@pytest.fixture(scope="module")
def adjusted(sample_plan_dir, qapp, tmp_path_factory):
    """A window on the sample plan, its head loaded, the handle turned by +30°, saved as a new version."""
    from tmstarget.viewer.app import ViewerWindow
    from tmstarget.viewer.content import HANDLE_LENGTH_MM
    from tmstarget.viewer.scene import HANDLE_RGB

    window = ViewerWindow(sample_plan_dir)
    window.resize(1200, 800)
    window.show()
    viewer = window.viewer
    wait_until(qapp, lambda: viewer.head_ready, 300)
    pose = np.asarray(viewer.plan.coil["matrix"], dtype=float)
    centre, z, handle = pose[:3, 3], pose[:3, 2], -pose[:3, 1]
    # look down the coil axis from outside, the plan's handle pointing up on the screen
    camera = (tuple(centre - 300 * z), tuple(centre), tuple(handle))
    shots = {}
    for turn in (0, 30):
        if turn:
            viewer.rotate_handle(turn)
        viewer.plotter.camera_position = camera
        viewer.plotter.renderer.ResetCameraClippingRange()
        viewer.plotter.render_window.Render()  # QtInteractor.render() only schedules a render
        shots[turn] = viewer.plotter.screenshot(return_img=True)[..., :3]
    size = tuple(viewer.plotter.window_size)
    view_angle = viewer.plotter.camera.view_angle
    out = tmp_path_factory.mktemp("revised") / "plan-v2"
    viewer.save_version(out, "viewer test: handle turned by 30 degrees")
    result = {"pose": pose, "adjusted_pose": viewer.adjuster.pose_ras.copy(), "shots": shots, "camera": camera,
              "size": size, "view_angle": view_angle, "out": out, "handle_rgb": HANDLE_RGB,
              "handle_mm": HANDLE_LENGTH_MM, "readout": viewer.coil_readout.text()}
    window.close()
    qapp.processEvents()
    return result


def test_turning_the_handle_turns_the_drawn_handle(adjusted):
    """+30° (sample target within 10 mm of the midline: right-handed about the coil's z, tmstarget.coil.adjust):
    the yellow handle end moves to the independently rotated handle, not to the -30° one."""
    pose, centre, z = adjusted["pose"], adjusted["pose"][:3, 3], adjusted["pose"][:3, 2]
    handle = -pose[:3, 1]
    project = lambda p: pinhole(adjusted["camera"], adjusted["view_angle"], adjusted["size"], p)  # noqa: E731
    end_before = project(centre + adjusted["handle_mm"] * handle)
    end_plus = project(centre + adjusted["handle_mm"] * rotated(handle, z, 30))
    end_minus = project(centre + adjusted["handle_mm"] * rotated(handle, z, -30))
    rgb = adjusted["handle_rgb"]
    # a point of the handle's axis 5 mm short of its end lies inside the tube whatever its end cap
    along = lambda direction: project(centre + (adjusted["handle_mm"] - 5.0) * direction)  # noqa: E731
    assert colour_near(adjusted["shots"][0], along(handle), rgb)
    after = adjusted["shots"][30]
    assert colour_near(after, along(rotated(handle, z, 30)), rgb)
    assert not colour_near(after, along(rotated(handle, z, -30)), rgb, radius=2)
    assert not colour_near(after, along(handle), rgb, radius=2)
    # the handle went up on the screen before; +30° right-handed about z (into the screen) turns it clockwise
    assert end_before[1] < adjusted["size"][1] / 2
    assert end_plus[0] > end_before[0] > end_minus[0]
    assert "handle angle 30.0°" in adjusted["readout"]


def test_saved_version_reopens_with_the_new_pose(adjusted, sample_plan_dir):
    from tmstarget.navigation.compare import compare_recorded

    revised = tmstarget.load_plan(adjusted["out"])
    np.testing.assert_allclose(revised.coil["matrix"], adjusted["adjusted_pose"], atol=1e-9)
    expected_handle = rotated(-adjusted["pose"][:3, 1], adjusted["pose"][:3, 2], 30)
    np.testing.assert_allclose(-np.asarray(revised.coil["matrix"])[:3, 1], expected_handle, atol=1e-6)
    np.testing.assert_allclose(np.asarray(revised.coil["matrix"])[:3, 3], adjusted["pose"][:3, 3], atol=1e-6)
    assert revised.provenance["revision"]["reason"].startswith("viewer test")
    # the original plan is untouched
    assert tmstarget.load_plan(sample_plan_dir).coil["matrix"] == adjusted["pose"].tolist()
    # navigation read-back: the SimNIBS CSV read with csv holds the new pose (SimNIBS axes, RAS mm)
    nav = adjusted["out"] / "navigation"
    rows = list(csv.reader((nav / "sub-01_simnibs_positions.csv").open()))
    coil_row = next(r for r in rows if r[0] == "CoilPos" and r[11].endswith("-1 coil"))
    values = np.array(coil_row[1:10], dtype=float)
    pose = np.asarray(revised.coil["matrix"])
    np.testing.assert_allclose(values[:3], pose[:3, 3], atol=1e-6)
    np.testing.assert_allclose(values[3:6], pose[:3, 2], atol=1e-9)
    np.testing.assert_allclose(values[6:9], pose[:3, 1], atol=1e-9)
    localite = next((nav / "localite").glob("InstrumentMarker*.xml"))
    first = compare_recorded(adjusted["out"], localite)[0]
    assert first["distance_mm"] < 1e-3 and first["angle_deg"] < 1e-3


def write_live(folder, target_ras_mm, processed):
    from tmstarget._fileio import write_json_atomic

    folder.mkdir(exist_ok=True)
    write_json_atomic(folder / "live.json", {
        "schema": "tmstarget-live/1", "status": f"processing volume {processed}",
        "volumes": {"processed": processed, "expected": 120},
        "qc": {"fd_power_mm": [0.1] * processed, "fd_threshold_mm": 0.5},
        "target": {"rank": 1, "ras_mm": list(target_ras_mm), "mni_mm": list(target_ras_mm)},
        "stability": {"verdict": "settling", "drift_mm": {}}, "inference": None, "subsystem_fc": None})


def test_live_mode_follows_live_json_within_a_second(sample_plan_dir, qapp, tmp_path):
    from tmstarget.viewer.app import ViewerWindow

    watch = tmp_path / "watch"  # the watch has not started: the window opens anyway
    window = ViewerWindow(sample_plan_dir, live_dir=watch, adjustable=False)
    window.show()
    viewer = window.viewer
    qapp.processEvents()
    assert "waiting for the watch" in viewer.evidence.status.text()
    marker = viewer.scene.marker_actors["live target"]
    base = np.asarray(viewer.scene.data.target_ras_mm)
    for step, shift in enumerate(([0.0, 0.0, 0.0], [8.0, -4.0, 2.0]), start=1):
        write_live(watch, base + shift, 10 * step)
        took = wait_until(qapp, lambda: np.allclose(np.asarray(marker.GetCenter()), base + shift, atol=1e-3)
                          and f"volumes {10 * step}/120" in viewer.evidence.status.text(), 5)
        assert took < 1.0, f"live.json rewrite shown after {took:.2f} s"
    assert marker.GetVisibility()
    window.close()
    qapp.processEvents()


def test_crosshair_readout_and_distance(sample_plan_dir, qapp):
    """Two picked points: both slices and readout follow; map value and distance checked with nibabel/numpy."""
    from tmstarget.viewer.app import PlanViewer

    viewer = PlanViewer(sample_plan_dir, adjustable=False)
    img = viewer.plan.maps["delta"]
    data = np.asarray(img.dataobj, dtype=float)
    ijk = np.array(viewer.plan.target.voxel_ijk)
    first = img.affine[:3, :3] @ ijk + img.affine[:3, 3]  # a voxel centre: the trilinear value is the voxel's
    second = first + [3.0, -4.0, 12.0]
    viewer.set_crosshair(first)
    assert f"delta: {data[tuple(ijk)]:+.3f}" in viewer.readout.text()
    assert "MNI: " + " ".join(f"{v:.1f}" for v in first) + " mm" in viewer.readout.text()  # an MNI plan
    viewer.set_crosshair(second)
    assert "distance to the previous point: 13.0 mm" in viewer.readout.text()
    np.testing.assert_allclose(viewer.slices.crosshair, second)
    np.testing.assert_allclose(viewer.scene.crosshair_actor.GetCenter(), second, atol=1e-6)  # and in 3D
    # a click at (x, z) in the coronal panel keeps the crosshair's y
    np.testing.assert_allclose(viewer.slices.panel_point("coronal", 10.0, 20.0), [10.0, second[1], 20.0])
    viewer.close()
    viewer.plotter.close()
    qapp.processEvents()


@pytest.fixture(scope="module")
def native_plan_dir(shared_data, tmp_path_factory):
    """The real run of ``pydecnef-sub1`` planned in its T1 (scanner DICOM + T1, registrations here)."""
    sub = shared_data / "pydecnef-sub1"
    out = tmp_path_factory.mktemp("viewer-native") / "plan"
    tmstarget.plan(rest_dicom=sub / "dicom" / "func-run1", t1=sub / "anat" / "T1w.nii.gz", participant="01",
                   protocol="sgacc-dlpfc").save(out)
    return out


def ants_mni_to_t1(plan_dir, points_mni):
    """MNI points into the plan's T1 with the saved ANTs files applied by antspyx directly (RAS<->LPS by hand)."""
    import ants
    import pandas as pd

    spec_file = next((plan_dir / "xfm").glob("*_from-T1w_to-MNI*_xfm.json"))
    spec = json.loads(spec_file.read_text())
    lps = np.asarray(points_mni, dtype=float) * [-1.0, -1.0, 1.0]
    frame = pd.DataFrame({"x": lps[:, 0], "y": lps[:, 1], "z": lps[:, 2]})
    mapped = ants.apply_transforms_to_points(3, frame, [str(plan_dir / "xfm" / e["file"]) for e in spec["fwd"]],
                                             whichtoinvert=[e["invert"] for e in spec["fwd"]])
    return mapped[["x", "y", "z"]].to_numpy() * [-1.0, -1.0, 1.0]


@pytest.mark.slow
@pytest.mark.shared_data
def test_native_plan_opens_on_its_own_t1(native_plan_dir, qapp, tmp_path):
    """A T1w plan: head from its T1, map in its world, classic targets through its registration, target on screen."""
    import tomllib

    from tmstarget.cli.main import main
    from tmstarget.viewer.content import scene_data

    plan = tmstarget.load_plan(native_plan_dir)
    assert plan.space == "T1w"
    data = scene_data(plan)
    assert data.head_source.startswith("plan T1") and data.map_img is not None and data.brain is not None
    atlas = tomllib.loads((Path(__file__).resolve().parents[1] / "tmstarget" / "data" / "atlas.toml").read_text())
    classic = [m for m in data.markers if m.kind == "classic"]
    expected = ants_mni_to_t1(native_plan_dir, [atlas["fixed"][m.name]["mni_mm"] for m in classic])
    np.testing.assert_allclose(np.array([m.ras_mm for m in classic]), expected, atol=1e-3)
    png = tmp_path / "native.png"
    assert main(["view", str(native_plan_dir), "--screenshot", str(png), "--size", "1000x700"]) == 0
    image, info = png_with_info(png)
    x, y, width, height = info["view_rect"]
    col, row = pinhole(info["camera"], info["view_angle_deg"], (width, height), data.target_ras_mm)
    assert colour_near(image, (x + col, y + row), (255, 0, 255))


def test_live_mode_without_a_plan_shows_the_watchers_head(qapp, tmp_path):
    """--live alone: the window opens before the watch; once its set-up names the T1, the head and the live
    target appear."""
    from tmstarget._fileio import write_json_atomic
    from tmstarget.viewer.app import ViewerWindow

    t1 = (Path(__file__).resolve().parents[1] / "sample_data" / "derivatives" / "fmriprep" / "sub-01" / "anat"
          / "sub-01_space-MNI152NLin2009cAsym_desc-preproc_T1w.nii.gz")
    watch = tmp_path / "watch"
    window = ViewerWindow(live_dir=watch)
    window.show()
    qapp.processEvents()
    assert window.viewer.scene is None and "waiting for the watch" in window.viewer.evidence.status.text()
    (watch / "state").mkdir(parents=True)
    write_json_atomic(watch / "state" / "setup.json", {"t1": str(t1)})
    write_live(watch, [-10.0, 58.0, 28.0], 5)
    wait_until(qapp, lambda: window.viewer.scene is not None, 30)
    marker = window.viewer.scene.marker_actors["live target"]
    wait_until(qapp, lambda: np.allclose(marker.GetCenter(), [-10.0, 58.0, 28.0], atol=1e-3), 5)
    assert window.viewer.slices is not None
    window.close()
    qapp.processEvents()


def test_evidence_panel_shows_verdict_subsystems_and_fd(sample_plan_dir, qapp):
    """The sample plan warns (unstable halves), so the verdict is CAUTION; the table and the FD trace are the
    plan's numbers, the FD threshold the protocol's (read here from the plan's protocol.toml)."""
    import tomllib

    from tmstarget.viewer.panels import EvidencePanel

    document = json.loads((sample_plan_dir / "target.json").read_text())
    panel = EvidencePanel(document)
    assert panel.verdict.text().startswith("CAUTION")
    assert "usable minutes" in panel.reasons.text()
    table = document["qc"]["subsystem_fc"]
    states = [panel.table.horizontalHeaderItem(c).text() for c in range(panel.table.columnCount())]
    assert states == list(table)
    pairs = [panel.table.verticalHeaderItem(r).text() for r in range(panel.table.rowCount())]
    row, col = pairs.index("core-dmpfc"), states.index("rumination")
    assert panel.table.item(row, col).text() == f"{table['rumination']['core-dmpfc']:+.3f}"
    lines = panel.fd.ax.get_lines()
    trace = document["qc"]["runs"][0]["fd_power_trace_mm"]
    np.testing.assert_allclose(lines[0].get_ydata(), trace)
    threshold = tomllib.loads((sample_plan_dir / "protocol.toml").read_text())["clean"]["fd_threshold_mm"]
    assert any(np.allclose(line.get_ydata(), threshold) for line in lines[1:])
    panel.close()


def test_the_command_line_loads_no_gui_library():
    """Registering ``tmstarget view`` (building the parser, --help) imports neither Qt nor pyvista nor VTK."""
    import sys

    code = ("import sys; from tmstarget.cli.main import build_parser; build_parser().parse_args(['view', 'x']); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'PySide6', 'pyvista', 'vtk', 'vtkmodules', "
            "'pyvistaqt', 'matplotlib'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert out.stdout.strip() == "[]"


def test_python_m_viewer_needs_a_plan_or_a_watch(tmp_path):
    """``python -m tmstarget.viewer`` takes the arguments of ``tmstarget view``; nothing to show is one line, exit 1."""
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run = subprocess.run([sys.executable, "-m", "tmstarget.viewer", "--screenshot", str(tmp_path / "x.png")],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 1
    assert run.stderr.strip() == "tmstarget view: error: give a plan folder (PLAN_DIR) or --live WATCH_DIR"
    assert not (tmp_path / "x.png").exists()
    helped = subprocess.run([sys.executable, "-m", "tmstarget.viewer", "--help"], capture_output=True, text=True,
                            env=env)
    assert helped.returncode == 0 and "--live WATCH_DIR" in helped.stdout and "--compare" in helped.stdout
