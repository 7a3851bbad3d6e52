"""The desktop viewer: :class:`PlanViewer` (a Qt widget) and :class:`ViewerWindow` (the application window).

Layout: the 3D scene (:mod:`tmstarget.viewer.scene` in a pyvistaqt
``QtInteractor``) above the linked slices (:mod:`tmstarget.viewer.slices`),
and on the right the readouts, sliders, coil adjustment and the evidence
panel (:mod:`tmstarget.viewer.panels`). A right click on the surface or a
click in a slice moves the crosshair everywhere and shows the point in the
plan's world and in MNI mm with the map value there; the last two picked
points give a distance. The coil is adjusted with :class:`~tmstarget.viewer.adjust.CoilAdjuster`
once the plan's head is loaded (tissue segmentation, in a worker thread) and
saved as a new plan version with :func:`tmstarget.revise_plan`. In live mode
a :class:`~tmstarget.viewer.live.LiveFollower` polls the watch folder's
``live.json`` on a Qt timer.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PySide6.QtCore import QPoint, Qt, QTimer
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QApplication,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QSlider,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from tmstarget.viewer.content import Marker, map_plan_points, sample_map, scene_data, t1_scene_data
from tmstarget.viewer.scene import Scene, write_png

#: Keyboard shortcuts: (key, what it does), shown by the help panel (F1).
SHORTCUTS = (
    ("[", "turn the coil handle 5° counter-clockwise in the handle-angle convention (negative)"),
    ("]", "turn the coil handle 5° the other way (positive)"),
    ("Ctrl+Up / Ctrl+Down", "move the coil 2 mm along the scalp, away from / toward the handle"),
    ("Ctrl+Left / Ctrl+Right", "move the coil 2 mm along the scalp between the wings (-x / +x)"),
    ("Ctrl+R", "put the coil back at the plan's pose"),
    ("Ctrl+S", "save the adjusted coil as a new plan version"),
    ("Ctrl+P", "save a screenshot of the window"),
    ("Home", "look at the target along the coil axis"),
    ("right click (3D) / click (slice)", "move the crosshair there; the last two points give a distance"),
    ("F1", "this help"),
)
ROTATE_STEP_DEG = 5.0
MOVE_STEP_MM = 2.0


class PlanViewer(QWidget):
    """A plan in 3D with linked slices, evidence, coil adjustment and (optionally) a live watch.

    Parameters
    ----------
    plan_dir : str or Path, optional
        Plan folder (``tmstarget plan --output``); optional in live mode.
    compare : sequence of str or Path
        Other plan folders whose targets are marked.
    live_dir : str or Path, optional
        A ``tmstarget watch --output`` folder to follow (need not exist yet).
    adjustable : bool
        Load the plan's head in the background so the coil can be adjusted.
    """

    def __init__(self, plan_dir=None, compare=(), live_dir=None, adjustable=True, parent=None):
        from pyvistaqt import QtInteractor

        import tmstarget
        from tmstarget.viewer.panels import EvidencePanel

        super().__init__(parent)
        self.plan_dir = None if plan_dir is None else Path(plan_dir)
        self.plan = None if plan_dir is None else tmstarget.load_plan(plan_dir)
        self.compare = [tmstarget.load_plan(p) for p in compare]
        self.live_dir = None if live_dir is None else Path(live_dir)
        self.picks, self.adjuster, self.scene, self.slices = [], None, None, None
        self.plotter = QtInteractor(self, auto_update=False, multi_samples=0)  # no MSAA: half the frame time
        self.plotter.track_click_position(self._picked_3d, side="right")
        self.evidence = EvidencePanel(None if self.plan is None else self.plan.document)
        self.readout = QLabel("right-click the surface or click a slice")
        self.readout.setWordWrap(True)
        self.coil_readout = QLabel()
        self.coil_readout.setWordWrap(True)
        self._build_layout()
        if self.plan is not None:
            data = scene_data(self.plan, self.compare)
            if self.live_dir is not None:
                data.markers.append(Marker("live target", "live", data.target_ras_mm.copy()))
            self._show_scene(data)
            self._show_coil(self.plan.coil)
        self.follower = None
        if self.live_dir is not None:
            self._start_live()
        self._head_future = None
        if adjustable and self.plan is not None and self.plan.coil is not None:
            self._head_future = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plan-head").submit(
                _load_head, self.plan_dir, self.plan)
            self._head_timer = QTimer(self)
            self._head_timer.timeout.connect(self._check_head)
            self._head_timer.start(200)
            self.coil_readout.setText(self.coil_readout.text() + "\n(loading the head for adjusting ...)")

    # ------------------------------------------------------------------ layout

    def _slider(self, maximum, value, changed):
        slider = QSlider(Qt.Horizontal)
        slider.setRange(0, maximum)
        slider.setValue(value)
        slider.valueChanged.connect(changed)
        return slider

    def _build_layout(self):
        self.left = QSplitter(Qt.Vertical)
        self.left.addWidget(self.plotter.interactor)
        self.slice_holder = QWidget()
        QVBoxLayout(self.slice_holder).setContentsMargins(0, 0, 0, 0)
        self.left.addWidget(self.slice_holder)
        self.left.setSizes([560, 260])
        side = QWidget()
        form = QVBoxLayout(side)
        form.addWidget(self.readout)
        sliders = QGroupBox("display")
        grid = QFormLayout(sliders)
        self.threshold_slider = self._slider(100, 25, self._threshold_changed)  # % of the map's largest |value|
        self.opacity_slider = self._slider(100, 30, lambda v: self.scene and self.scene.set_head_opacity(v / 100))
        self.peel_slider = self._slider(20, 0, lambda v: self.scene and self.scene.set_peel(v))
        grid.addRow("map threshold", self.threshold_slider)
        grid.addRow("scalp opacity", self.opacity_slider)
        grid.addRow("peel (mm)", self.peel_slider)
        form.addWidget(sliders)
        coil = QGroupBox("coil")
        box = QVBoxLayout(coil)
        box.addWidget(self.coil_readout)
        row = QHBoxLayout()
        self.buttons = []
        for text, slot in (("⟲ 5°", lambda: self.rotate_handle(-ROTATE_STEP_DEG)),
                           ("⟳ 5°", lambda: self.rotate_handle(ROTATE_STEP_DEG)),
                           ("reset", self.reset_coil), ("Save as new plan version", self.save_version_dialog)):
            button = QPushButton(text)
            button.clicked.connect(slot)
            button.setEnabled(False)
            row.addWidget(button)
            self.buttons.append(button)
        box.addLayout(row)
        form.addWidget(coil)
        form.addWidget(self.evidence, stretch=1)
        splitter = QSplitter(Qt.Horizontal)
        splitter.addWidget(self.left)
        splitter.addWidget(side)
        splitter.setSizes([900, 420])
        QHBoxLayout(self).addWidget(splitter)

    def _show_scene(self, data):
        from tmstarget.viewer.slices import SliceView

        threshold = self.threshold_slider.value() / 100 * data.map_limit
        self.scene = Scene(data, self.plotter, threshold=threshold)
        self.scene.set_camera()
        if "live target" in self.scene.marker_actors:
            self.scene.marker_actors["live target"].SetVisibility(False)
        self.slices = SliceView(data, on_pick=self.set_crosshair, threshold=threshold)
        self.slice_holder.layout().addWidget(self.slices)
        self.plotter.render()

    # ------------------------------------------------------------------ picking

    def _picked_3d(self, point):
        if point is not None and self.scene is not None:
            self.set_crosshair(np.asarray(point, dtype=float))

    def set_crosshair(self, point_ras_mm):
        """Move the crosshair to a world point (plan's world, RAS mm) in every view and show where it is."""
        point = np.asarray(point_ras_mm, dtype=float)
        self.picks = (self.picks + [point])[-2:]
        if self.slices is not None:
            self.slices.set_crosshair(point)
        self.scene.set_crosshair(point)
        lines = [f"point ({self.scene.data.plan.space if self.plan else 'T1w'}): "
                 + " ".join(f"{v:.1f}" for v in point) + " mm"]
        if self.plan is not None:
            mni, reason = map_plan_points(self.plan, point, to_mni=True)
            lines.append("MNI: " + (" ".join(f"{v:.1f}" for v in mni[0]) + " mm" if mni is not None else reason))
        if self.scene.data.map_img is not None:
            value = float(sample_map(self.scene.data.map_img, point[None])[0])
            lines.append(f"{self.scene.data.map_name}: {value:+.3f}")
        if len(self.picks) == 2:
            lines.append(f"distance to the previous point: {np.linalg.norm(self.picks[1] - self.picks[0]):.1f} mm")
        self.readout.setText("\n".join(lines))

    # ------------------------------------------------------------------ sliders

    def _threshold_changed(self, value):
        if self.scene is None:
            return
        threshold = value / 100 * self.scene.data.map_limit
        self.scene.set_threshold(threshold)
        self.slices.set_threshold(threshold)

    # ------------------------------------------------------------------ coil

    def _check_head(self):
        if self._head_future is None or not self._head_future.done():
            return
        self._head_timer.stop()
        try:
            self.adjuster = self._head_future.result()
        except Exception as exc:  # shown, not fatal: the plan stays viewable
            self.coil_readout.setText(f"{self.coil_readout.text()}\ncannot adjust: {exc}")
            return
        for button in self.buttons:
            button.setEnabled(True)
        self._show_coil(self.adjuster.block)

    @property
    def head_ready(self):
        """Whether the coil can be adjusted (the plan's head is loaded)."""
        return self.adjuster is not None

    def _show_coil(self, block, changed=False):
        if block is None:
            self.coil_readout.setText(f"no coil: {self.plan.document.get('coil_reason')}")
            return
        depth = block.get("scalp_to_cortex_mm")
        lines = ["centre " + " ".join(f"{v:.1f}" for v in block["centre_ras_mm"]) + " mm",
                 f"depth {depth:.1f} mm" if depth is not None else "depth unknown"]
        if "handle_angle_deg" in block:
            lines.append(f"handle angle {block['handle_angle_deg']:.1f}°, "
                         f"{block['angle_from_scalp_normal_deg']:.1f}° from the scalp normal")
        if changed:
            lines.append("adjusted (not saved)")
        self.coil_readout.setText("\n".join(lines))
        if self.scene is not None:
            self.scene.set_pose(np.asarray(block["matrix"], dtype=float), depth)

    def rotate_handle(self, delta_deg):
        """Turn the coil handle by ``delta_deg`` (handle-angle convention of :mod:`tmstarget.coil.adjust`)."""
        if self.adjuster is not None:
            self._show_coil(self.adjuster.rotate(delta_deg), changed=True)

    def move_coil(self, dx_mm=0.0, dy_mm=0.0):
        """Move the coil along the scalp (mm along its x and y axes)."""
        if self.adjuster is not None:
            self._show_coil(self.adjuster.move(dx_mm, dy_mm), changed=True)

    def reset_coil(self):
        """Back to the plan's coil pose."""
        if self.adjuster is not None:
            self._show_coil(self.adjuster.reset())

    def save_version(self, output, reason):
        """Write the adjusted coil as a new plan folder (:func:`tmstarget.revise_plan`); returns the new Plan."""
        if self.adjuster is None:
            raise RuntimeError("the plan's head is not loaded yet: nothing to save")
        return self.adjuster.save(output, reason)

    def save_version_dialog(self):
        """Ask for a folder and a reason, then :meth:`save_version`."""
        folder = QFileDialog.getSaveFileName(self, "New plan version folder", str(self.plan_dir) + "-v2")[0]
        if not folder:
            return
        reason, ok = QInputDialog.getText(self, "Reason", "Why is the coil changed (recorded in provenance)?")
        if not ok:
            return
        try:
            self.save_version(folder, reason)
        except Exception as exc:  # the user sees why; nothing half-written (revise_plan is atomic)
            QMessageBox.warning(self, "Not saved", str(exc))
            return
        QMessageBox.information(self, "Saved", f"new plan version written to {folder}")

    # ------------------------------------------------------------------ live

    def _start_live(self):
        from tmstarget.viewer.live import LiveFollower, live_summary

        self.follower = LiveFollower(self.live_dir, parent=self)
        self.follower.updated.connect(self.show_live)
        self.evidence.show_live(live_summary(None), None)
        QTimer.singleShot(0, self.follower.start)  # the window opens first

    def show_live(self, doc):
        """Show a ``live.json`` document: live target marker, status, FD trace."""
        from tmstarget.viewer.live import live_summary

        summary = live_summary(doc)
        self.evidence.show_live(summary, doc)
        if self.scene is None and doc.get("target") is not None:
            self._show_live_head()
        # the watcher works in its T1's world: over an MNI plan its target is drawn at its MNI coordinates
        mni_plan = self.plan is not None and self.plan.space.startswith("MNI")
        point = summary["target_mni_mm" if mni_plan else "target_ras_mm"]
        actor = None if self.scene is None else self.scene.marker_actors.get("live target")
        if actor is not None and point is not None:
            actor.SetVisibility(True)
            self.scene.move_marker("live target", point)

    def _show_live_head(self):
        """Without a plan: the head of the watcher's T1 (``state/setup.json``), once the set-up exists."""
        import nibabel as nib

        try:
            setup = json.loads((self.live_dir / "state" / "setup.json").read_text(encoding="utf-8"))
            t1 = nib.load(setup["t1"])
        except (OSError, ValueError, KeyError):
            return
        self._show_scene(t1_scene_data(t1))

    # ------------------------------------------------------------------ views

    def reset_camera(self):
        """Look at the target along the coil axis."""
        if self.scene is not None:
            self.scene.set_camera()
            self.plotter.render()

    def view_rect(self, window):
        """(x, y, width, height) of the 3D view inside ``window`` (pixels)."""
        widget = self.plotter.interactor
        corner = widget.mapTo(window, QPoint(0, 0))
        return corner.x(), corner.y(), widget.width(), widget.height()

    def frame_time_ms(self, frames=30):
        """Render time of the 3D view while the camera turns 3° per frame (``frames`` renders, each drawn to
        completion): ``(median wall-clock ms, mean CPU ms of this process, all threads)``. Under software
        OpenGL on a busy machine the wall time is the CPU time stretched by the other jobs' load."""
        window = self.plotter.render_window
        times = []
        cpu_start = time.process_time()
        for _ in range(frames):
            self.plotter.camera.azimuth += 3.0
            start = time.perf_counter()
            window.Render()
            window.WaitForCompletion()
            times.append((time.perf_counter() - start) * 1000)
        cpu_ms = (time.process_time() - cpu_start) * 1000 / frames
        self.reset_camera()
        return float(np.median(times)), float(cpu_ms)

def _load_head(plan_dir, plan):
    from tmstarget.coil.adjust import PlanHead
    from tmstarget.viewer.adjust import CoilAdjuster

    return CoilAdjuster(PlanHead(plan_dir, plan))


class ViewerWindow(QMainWindow):
    """The viewer's main window: a :class:`PlanViewer`, its keyboard shortcuts, help and screenshot.

    Parameters are those of :class:`PlanViewer`.
    """

    def __init__(self, plan_dir=None, compare=(), live_dir=None, adjustable=True):
        super().__init__()
        self.viewer = PlanViewer(plan_dir, compare, live_dir, adjustable, parent=self)
        self.setCentralWidget(self.viewer)
        name = Path(plan_dir).name if plan_dir is not None else f"live: {Path(live_dir).name}"
        self.setWindowTitle(f"tmstarget view - {name}")
        self.resize(1400, 900)
        actions = {
            "[": lambda: self.viewer.rotate_handle(-ROTATE_STEP_DEG),
            "]": lambda: self.viewer.rotate_handle(ROTATE_STEP_DEG),
            "Ctrl+Up": lambda: self.viewer.move_coil(dy_mm=MOVE_STEP_MM),
            "Ctrl+Down": lambda: self.viewer.move_coil(dy_mm=-MOVE_STEP_MM),
            "Ctrl+Left": lambda: self.viewer.move_coil(dx_mm=-MOVE_STEP_MM),
            "Ctrl+Right": lambda: self.viewer.move_coil(dx_mm=MOVE_STEP_MM),
            "Ctrl+R": self.viewer.reset_coil,
            "Ctrl+S": self.viewer.save_version_dialog,
            "Ctrl+P": self.screenshot_dialog,
            "Home": self.viewer.reset_camera,
            "F1": self.show_help,
        }
        for key, slot in actions.items():
            QShortcut(QKeySequence(key), self, activated=slot, context=Qt.ApplicationShortcut)
        help_menu = self.menuBar().addMenu("&Help")
        help_menu.addAction("Keyboard shortcuts (F1)", self.show_help)
        file_menu = self.menuBar().addMenu("&File")
        file_menu.addAction("Screenshot... (Ctrl+P)", self.screenshot_dialog)
        file_menu.addAction("Save as new plan version... (Ctrl+S)", self.viewer.save_version_dialog)

    @staticmethod
    def help_text():
        """The keyboard shortcuts, one per line."""
        return "\n".join(f"{key}: {what}" for key, what in SHORTCUTS)

    def show_help(self):
        """The help panel (keyboard shortcuts)."""
        QMessageBox.information(self, "tmstarget view: keyboard shortcuts", self.help_text())

    def grab_image(self):
        """The whole window as an RGB array, the 3D view rendered into its place; and the 3D view's rectangle."""
        QApplication.instance().processEvents()
        self.viewer.plotter.render_window.Render()  # QtInteractor.render() only schedules one
        image = self.grab().toImage()
        image = image.convertToFormat(image.Format.Format_RGB888)
        width, height = image.width(), image.height()
        rgb = np.frombuffer(image.constBits(), dtype=np.uint8, count=image.bytesPerLine() * height)
        rgb = rgb.reshape(height, image.bytesPerLine())[:, :width * 3].reshape(height, width, 3).copy()
        x, y, w, h = self.viewer.view_rect(self)
        ratio = self.devicePixelRatioF()
        x, y, w, h = (int(round(v * ratio)) for v in (x, y, w, h))
        view = self.viewer.plotter.screenshot(return_img=True)[..., :3]
        h, w = min(h, view.shape[0], height - y), min(w, view.shape[1], width - x)
        rgb[y:y + h, x:x + w] = view[:h, :w]
        return rgb, (x, y, w, h)

    def save_screenshot(self, path):
        """Write the window (3D view, slices, evidence) as a PNG; returns the 3D view's rectangle and camera.

        The PNG's text chunk ``tmstarget-view`` holds them as JSON (``view_rect``
        x, y, width, height in pixels; ``camera`` position, focal point, view-up
        in world RAS mm; ``view_angle_deg``), so the picture can be measured.
        """
        image, rect = self.grab_image()
        plotter = self.viewer.plotter
        info = {"view_rect": list(rect), "camera": [list(map(float, v)) for v in plotter.camera_position.to_list()],
                "view_angle_deg": float(plotter.camera.view_angle)}
        write_png(path, image, {"tmstarget-view": json.dumps(info)})
        return info

    def screenshot_dialog(self):
        """Ask for a file and :meth:`save_screenshot`."""
        path = QFileDialog.getSaveFileName(self, "Screenshot", "tmstarget-view.png", "PNG (*.png)")[0]
        if path:
            self.save_screenshot(path)

    def closeEvent(self, event):  # noqa: N802 (Qt's name)
        if self.viewer.follower is not None:
            self.viewer.follower.stop()
        self.viewer.plotter.close()
        super().closeEvent(event)

