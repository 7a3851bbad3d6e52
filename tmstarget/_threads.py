"""Threads for work that releases the GIL (issue 19): how many, and imports started early.

Decoding gzip (python-isal), numpy's casts and scipy's filters release the GIL, so
a second thread runs beside them on another core; imports hold it, so an import
started on a thread overlaps only such work.
"""

import contextlib
import importlib
import os
import threading


def worker_count():
    """Threads for numerical work that releases the GIL: the CPU cores this process may use (at most 4)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 4))


def import_in_background(name):
    """Start importing module ``name`` on a thread; returns the thread.

    Join it before the calling thread imports modules the two may share (Python
    breaks a cross-thread import cycle by handing out a half-initialized module).
    An import that fails there is left to fail again, with its message, where
    the module is used.
    """

    def load():
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - reported by the import where the module is used
            pass

    thread = threading.Thread(target=load, name=f"import {name}", daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def importing_meanwhile(name):
    """Import module ``name`` on a thread while the block runs (work that releases the GIL); joined at its end."""
    thread = import_in_background(name)
    try:
        yield
    finally:
        thread.join()

