"""Following a running ``tmstarget watch``: its ``live.json``, polled without blocking the interface.

The watcher rewrites ``WATCH_DIR/live.json`` atomically (a reader never sees
half a file) at least every second. :class:`LiveFollower` checks the file's
modification time and size every ``interval_ms`` on a Qt timer (network
shares give no reliable change notifications, as ``watch`` polls its
incoming folder for the same reason) and emits ``updated(dict)`` with each new
document; a folder where the watch has not started yet is simply waited for.
:func:`read_live` and :func:`live_summary` are plain functions, usable without Qt.
"""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

#: Poll period of live.json (ms): a rewrite is shown within this plus one redraw.
POLL_INTERVAL_MS = 200


def read_live(watch_dir):
    """The current ``live.json`` document of a watch folder, or None when there is none (yet) or it is unreadable.

    Parameters
    ----------
    watch_dir : str or Path
        ``tmstarget watch --output`` folder.

    Returns
    -------
    dict or None
    """
    try:
        return json.loads((Path(watch_dir) / "live.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def live_summary(doc):
    """Status line, live target (``target_ras_mm`` in the watcher's T1w world and ``target_mni_mm``, or None),
    FD trace (mm), FD threshold (mm) and stability line of a ``live.json`` document, as a dict."""
    if doc is None:
        return {"status": "waiting for the watch to start (no live.json yet)", "target_ras_mm": None,
                "target_mni_mm": None, "fd_mm": [], "fd_threshold_mm": None, "stability": ""}
    qc = doc.get("qc") or {}
    target = doc.get("target")
    stability = doc.get("stability") or {}
    volumes = doc.get("volumes") or {}
    status = f"{doc.get('status', '?')} | volumes {volumes.get('processed', 0)}/{volumes.get('expected') or '?'}"
    if target is None and doc.get("waiting_for"):
        status += f" | no target yet: {doc['waiting_for']}"
    return {"status": status, "target_ras_mm": None if target is None else list(target["ras_mm"]),
            "target_mni_mm": None if target is None or target.get("mni_mm") is None else list(target["mni_mm"]),
            "fd_mm": list(qc.get("fd_power_mm") or []), "fd_threshold_mm": qc.get("fd_threshold_mm"),
            "stability": stability.get("verdict", "")}


class LiveFollower(QObject):
    """Emits ``updated(dict)`` whenever ``WATCH_DIR/live.json`` changes (and once at start if it exists).

    Parameters
    ----------
    watch_dir : str or Path
        The watch folder; it need not exist yet.
    interval_ms : int
        Poll period.
    """

    updated = Signal(dict)

    def __init__(self, watch_dir, interval_ms=POLL_INTERVAL_MS, parent=None):
        super().__init__(parent)
        self.path = Path(watch_dir) / "live.json"
        self._stamp = None
        self.document = None
        self.timer = QTimer(self)
        self.timer.setInterval(int(interval_ms))
        self.timer.timeout.connect(self.poll)

    def start(self):
        """Start polling (the first poll runs at once)."""
        self.poll()
        self.timer.start()

    def stop(self):
        """Stop polling."""
        self.timer.stop()

    def poll(self):
        """Read ``live.json`` if its modification time or size changed; emit ``updated`` with the new document."""
        try:
            info = self.path.stat()
        except OSError:
            return
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp == self._stamp:
            return
        doc = read_live(self.path.parent)
        if doc is None:  # not yet complete on a share: try again next poll
            return
        self._stamp, self.document = stamp, doc
        self.updated.emit(doc)
