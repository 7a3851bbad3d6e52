"""``tmstarget view`` and ``python -m tmstarget.viewer``: the arguments and what they run.

Light to import (no Qt, no pyvista): the command line registers the
arguments, and :func:`run` imports the Qt application only when called.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def add_arguments(parser):
    """The viewer's arguments on an ``argparse`` parser."""
    parser.add_argument("plan_dir", metavar="PLAN_DIR", nargs="?", type=Path,
                        help="plan folder (tmstarget plan --output); optional with --live")
    parser.add_argument("--screenshot", metavar="FILE.png", type=Path,
                        help="render the window (3D view, slices, evidence) into FILE.png and exit, no window left")
    parser.add_argument("--live", metavar="WATCH_DIR", type=Path,
                        help="follow a running 'tmstarget watch' (its live.json); the watch need not have started")
    parser.add_argument("--compare", metavar="PLAN_DIR", type=Path, nargs="+", default=[],
                        help="other plans (e.g. other protocols) whose targets are marked")
    parser.add_argument("--frame-time", action="store_true",
                        help="print the median render time of the 3D view (ms) over 30 frames while it turns")
    parser.add_argument("--size", metavar="WxH", default="1400x900", help="window size (default 1400x900)")


def _size(text):
    from tmstarget.errors import InputError

    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--size must be WIDTHxHEIGHT in pixels, e.g. 1400x900; got {text!r}") from None
    if not (200 <= width <= 8000 and 200 <= height <= 8000):
        raise InputError(f"--size {text}: width and height must be between 200 and 8000 pixels")
    return width, height


def run(args):
    """Open the viewer (or only render a screenshot) for parsed arguments; returns the exit code.

    Raises
    ------
    tmstarget.errors.InputError
        No plan folder and no ``--live``; a folder that is not a plan; a bad ``--size``; no X display
        on Linux.
    """
    from tmstarget.errors import InputError

    if args.plan_dir is None and args.live is None:
        raise InputError("give a plan folder (PLAN_DIR) or --live WATCH_DIR")
    for folder in [args.plan_dir, *args.compare]:
        if folder is not None and not (folder / "target.json").is_file():
            raise InputError("not a plan folder (no target.json)", path=folder)
    size = _size(args.size)
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        raise InputError("no display (DISPLAY is not set): the viewer's 3D view needs an X server; on a headless "
                         "machine run it under a virtual one: xvfb-run -a tmstarget view ... (Debian package xvfb)")
    from PySide6.QtWidgets import QApplication

    from tmstarget.viewer.app import ViewerWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    interactive = args.screenshot is None and not args.frame_time
    window = ViewerWindow(args.plan_dir, args.compare, args.live, adjustable=interactive)
    window.resize(*size)
    window.show()
    app.processEvents()
    if args.frame_time:
        width, height = window.viewer.plotter.window_size
        wall_ms, cpu_ms = window.viewer.frame_time_ms()
        print(f"frame time: {wall_ms:.1f} ms median over 30 renders of the 3D view ({width}x{height} pixels); "
              f"{cpu_ms:.1f} ms CPU per frame (all threads)")
    if args.screenshot is not None:
        window.save_screenshot(args.screenshot)
        print(f"screenshot written: {args.screenshot}")
    if not interactive:
        window.close()
        window.deleteLater()
        app.processEvents()
        return 0
    return app.exec()
