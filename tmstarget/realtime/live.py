"""``live.json`` kept fresh, and the one-line summary of it that a terminal shows.

The watcher rewrites ``live.json`` after every step (:class:`LiveFile.write`).  Between steps, and
during the long ones (T1 -> MNI registration, coregistration, the final plan), a heartbeat thread
rewrites the last document with the current ``status`` and a new ``updated_utc`` every
``interval_s``: a reader can always tell a busy watcher from a dead one.
"""

import json
import threading
import time
from datetime import datetime, timezone

from tmstarget._fileio import write_text_atomic

#: Longest time between two rewrites of ``live.json`` while the watcher runs (s).
HEARTBEAT_S = 1.0


def _write(path, doc):
    write_text_atomic(path, json.dumps(doc, allow_nan=False) + "\n", durable=False)


def utc_now():
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class LiveFile:
    """``live.json``: atomic rewrites, one writer at a time, and a heartbeat.

    One line of JSON (``python -m json.tool live.json`` indents it) and no fsync: a reader sees the
    previous document or the new one whole (the rename is atomic), and a document rewritten every volume
    needs no durability. Indenting (Python's pure-Python encoder) and the fsync cost milliseconds per
    volume on the latency path.

    Parameters
    ----------
    path : Path
    status : callable
        Returns ``(status, seconds in that status)`` (called by the heartbeat).
    interval_s : float
        The heartbeat rewrites the file when it is older than this.
    """

    def __init__(self, path, status, interval_s=HEARTBEAT_S):
        self.path = path
        self.status = status
        self.interval_s = float(interval_s)
        self._lock = threading.Lock()
        self._doc = None
        self._written = 0.0
        self._stop = threading.Event()
        self._thread = None

    def write(self, doc):
        """Write a fresh document (the watcher's own state after a step)."""
        with self._lock:
            _write(self.path, doc)
            self._doc, self._written = doc, time.monotonic()

    def _refresh(self):
        with self._lock:
            if self._doc is None or time.monotonic() - self._written < self.interval_s:
                return
            status, elapsed = self.status()
            doc = {**self._doc, "status": status, "status_elapsed_s": round(elapsed, 1), "updated_utc": utc_now()}
            _write(self.path, doc)
            self._doc, self._written = doc, time.monotonic()

    def start(self):
        """Start the heartbeat thread (a daemon: it never keeps the process alive)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, name="tmstarget-live-heartbeat", daemon=True)
            self._thread.start()

    def stop(self):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def _beat(self):
        while not self._stop.wait(self.interval_s / 4):
            self._refresh()


def live_line(doc):
    """One line summing up a ``live.json`` document (volumes, FD of the last volume, target, stability).

    Parameters
    ----------
    doc : dict
        A ``tmstarget-live`` document.

    Returns
    -------
    str
    """
    vols = doc["volumes"]
    expected = vols.get("expected")
    parts = [f"volumes {vols['processed']}/{expected if expected else '?'} processed, "
             f"{vols.get('received', vols['processed'])} received"]
    last = doc.get("last_volume")
    if last is not None:
        parts.append(f"FD {last['fd_power_mm']:.2f} mm" + (" (scrubbed)" if last["status"] == "scrubbed" else "")
                     + (" (gap)" if last["status"] == "missing" else ""))
    target = doc.get("target")
    if target is not None:
        ras = " ".join(f"{v:.1f}" for v in target["ras_mm"])
        mni = " ".join(f"{v:.0f}" for v in target["mni_mm"])
        parts.append(f"target T1w ({ras}) MNI ({mni})")
        stability = doc["stability"]
        drift = stability["drift_mm"].get("1min")
        parts.append(stability["verdict"] + ("" if drift is None else f", moved {drift:.1f} mm in 1 min"))
    elif doc.get("waiting_for"):
        parts.append(f"no target yet: {doc['waiting_for']}")
    return " | ".join(parts)
