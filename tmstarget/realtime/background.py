"""A function call in a child process: the watcher's registrations, off the watcher's interpreter.

ANTs keeps Python's global interpreter lock for tens of seconds at a time during a registration (measured:
stretches of 32 s and 50 s of a 100-s T1 -> MNI registration in which no other thread of the process ran).
Run in a thread, it would freeze the watcher's heartbeat (``live.json``) and its polling; run here, in a
child interpreter (``python -m tmstarget.realtime.background``), it costs only the child's start-up (a few
seconds, hidden behind the scan).  The call goes to the child pickled on its stdin and the result comes back
pickled on its stdout (the child's own prints go to stderr); unlike ``multiprocessing`` nothing re-imports
the caller's main script.

The child dies with the watcher (``PR_SET_PDEATHSIG`` on Linux), so a killed watcher leaves no
registration running; :meth:`BackgroundCall.cancel` ends it on purpose.
"""

import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

from tmstarget.errors import TmsTargetError


def _die_with_parent():
    """Linux: the kernel kills this process when its parent dies (elsewhere: nothing)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def _child():
    """Read ``(function, args, kwargs)`` from stdin, write ``(ok, result or exception)`` to stdout."""
    _die_with_parent()
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever the function prints goes to stderr, not into the result
    function, args, kwargs = pickle.load(sys.stdin.buffer)
    try:
        result = (True, function(*args, **kwargs))
    except BaseException as exc:  # the parent re-raises it
        result = (False, exc)
    try:
        data = pickle.dumps(result)
    except Exception:  # an exception that does not pickle: its text
        data = pickle.dumps((False, TmsTargetError(f"{type(result[1]).__name__}: {result[1]}")))
    out.write(data)
    out.close()


class BackgroundCall:
    """``function(*args, **kwargs)`` started in a child interpreter; :meth:`result` waits for it.

    Parameters
    ----------
    function : callable
        A module-level function of an importable module (it is pickled); its arguments and result must
        pickle too.
    *args, **kwargs
        Passed on.
    """

    def __init__(self, function, *args, **kwargs):
        self.name = getattr(function, "__name__", "call")
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])  # the child imports this very tmstarget
        env["PYTHONPATH"] = os.pathsep.join([package_root] + [p for p in [env.get("PYTHONPATH")] if p])
        self._process = subprocess.Popen([sys.executable, "-m", "tmstarget.realtime.background"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        payload = pickle.dumps((function, args, kwargs))
        # fed from a thread: the child reads while it starts, and the caller goes on at once
        self._feeder = threading.Thread(target=self._feed, args=(payload,), daemon=True)
        self._feeder.start()
        self._outcome = None

    def _feed(self, payload):
        try:
            self._process.stdin.write(payload)
            self._process.stdin.close()
        except (BrokenPipeError, OSError):
            pass  # the child died; result() says so

    def result(self):
        """The function's return value (its exception is raised here)."""
        if self._outcome is None:
            data = self._process.stdout.read()
            self._process.stdout.close()
            code = self._process.wait()
            self._feeder.join()
            try:
                self._outcome = pickle.loads(data)
            except (EOFError, pickle.UnpicklingError):
                raise TmsTargetError(f"{self.name} stopped without a result (exit code {code})") from None
        ok, value = self._outcome
        if not ok:
            raise value
        return value

    def cancel(self):
        """End the child process if it still runs."""
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()


if __name__ == "__main__":
    _child()
