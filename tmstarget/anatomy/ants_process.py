"""Deterministic ANTs: run a registration in a fresh, single-threaded, seeded process.

Why a process of its own
------------------------
ANTs estimates its metric (Mattes mutual information, ``regular`` sampling with random jitter)
at random points and sums it over ITK threads in an order that depends on thread timing, so two
identical native plans gave targets 0.2-0.9 mm apart, candidates 16 mm apart and EPI -> T1
transforms 1.2 degrees apart (issue 14). Two settings make a registration repeat itself byte
for byte (measured on the shared T1: seeded but multi-threaded, three rigid runs gave three
different files and two T1 -> MNI runs two different ones; seeded and single-threaded, all equal;
tests: ``test_registration_is_deterministic``, ``tests/test_native_repeat.py``):

* antspyx's own seed, ``ants.config._random_seed``, which it passes to ``antsRegistration`` as
  ``--random-seed`` (:data:`ANTS_RANDOM_SEED`);
* one ITK thread. ITK reads ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` once, the first time a
  process uses ITK, and antspyx has no call that sets it later. Setting it inside the planning
  process would be too late whenever that process (a notebook, ``tmstarget watch``, a test
  session) already used ANTs, and would slow every other ANTs call of the process. So each
  registration runs in a child process started here with that variable set (and the variables
  ITK reads before it, ``NSLOTS`` and ``ITK_NUMBER_OF_THREADS_ENV_LIST``, removed).

The child is the same interpreter importing the same ``tmstarget`` (its folder first on
``PYTHONPATH``); arguments and the result travel as pickles through a temporary folder; an error
raised in the child is raised again here. Starting the child costs about 2 s (importing antspyx).
"""

import logging
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tmstarget.errors import TmsTargetError

logger = logging.getLogger(__name__)

#: Seed of ANTs' metric sampling in every registration.
ANTS_RANDOM_SEED = 7
#: ITK threads of a registration (1: the only count whose sums come out in a fixed order).
ANTS_THREADS = 1

_CHILD = "import sys; from tmstarget.anatomy.ants_process import child_main; child_main(sys.argv[1])"


def _die_with_parent():
    """Linux: the kernel kills this process when its parent dies, so a killed planner or watcher leaves no
    registration running (elsewhere: nothing)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def child_main(job_path):
    """Entry of the child process: run the pickled call, pickle its outcome beside the job file.

    Parameters
    ----------
    job_path : str
        Pickle of ``(function, args, kwargs)``; the outcome goes to ``<job>.out`` as
        ``("ok", result)`` or ``("error", exception)``.
    """
    _die_with_parent()
    import ants

    ants.config._random_seed = ANTS_RANDOM_SEED
    job = Path(job_path)
    function, args, kwargs = pickle.loads(job.read_bytes())
    try:
        outcome = ("ok", function(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001 - every error goes back to the parent, which raises it
        outcome = ("error", exc)
    try:
        data = pickle.dumps(outcome)
    except Exception:  # noqa: BLE001 - an error that cannot be pickled goes back as text
        data = pickle.dumps(("error", TmsTargetError(f"{type(outcome[1]).__name__}: {outcome[1]}")))
    job.with_suffix(".out").write_bytes(data)


class IsolatedCall:
    """``function(*args, **kwargs)`` started in a child process with ITK single-threaded and ANTs seeded.

    The caller goes on at once; :meth:`result` waits for the answer, :meth:`cancel` ends the child. The
    watcher starts its registrations this way: in a thread of its own interpreter, ANTs would hold the
    GIL for tens of seconds and freeze ``live.json``'s heartbeat.

    Parameters
    ----------
    function : callable
        A module-level function (pickled by name); its arguments and result must pickle
        (nibabel images, paths, numbers, :class:`~tmstarget.anatomy.registration.Transform`).
    *args, **kwargs
        Passed on.
    """

    def __init__(self, function, *args, **kwargs):
        self.name = getattr(function, "__name__", "call")
        package_root = str(Path(__file__).resolve().parents[2])  # the child imports this very tmstarget
        env = {key: value for key, value in os.environ.items()
               if key not in ("NSLOTS", "ITK_NUMBER_OF_THREADS_ENV_LIST", "ITK_NUMBER_OF_THREADS")}
        env["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(ANTS_THREADS)
        env["ANTS_RANDOM_SEED"] = str(ANTS_RANDOM_SEED)
        env["PYTHONPATH"] = os.pathsep.join([package_root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        self._scratch = tempfile.TemporaryDirectory(prefix="tmstarget-ants-")
        self._job = Path(self._scratch.name) / "job.pkl"
        self._job.write_bytes(pickle.dumps((function, args, kwargs)))
        self._start = time.perf_counter()
        self._started_at = time.time()
        self._process = subprocess.Popen([sys.executable, "-c", _CHILD, str(self._job)], env=env,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, text=True)
        self._outcome = None
        #: Wall time (s) from the start to the child's answer, once :meth:`result` has it.
        self.seconds = None

    def result(self):
        """What ``function`` returned in the child; what it raised is raised here.

        Raises
        ------
        TmsTargetError
            When the child died without an answer (its last line of standard error quoted).
        """
        if self._outcome is None:
            _, stderr = self._process.communicate()
            answer = self._job.with_suffix(".out")
            try:
                if not answer.is_file():
                    last = (stderr.strip().splitlines() or ["no message"])[-1]
                    raise TmsTargetError(f"the ANTs process for {self.name} ended without an answer "
                                         f"(exit code {self._process.returncode}): {last}")
                self._outcome = pickle.loads(answer.read_bytes())
                # the answer file's time stamp: when the child finished, even if the caller asked later
                self.seconds = max(0.0, answer.stat().st_mtime - self._started_at)
            finally:
                self._scratch.cleanup()
            logger.debug("%s in a single-threaded ANTs process: %.1f s", self.name,
                         time.perf_counter() - self._start)
        status, value = self._outcome
        if status == "error":
            raise value
        return value

    def cancel(self):
        """End the child process if it still runs."""
        if self._process.poll() is None:
            self._process.kill()
            self._process.communicate()
        self._scratch.cleanup()


class Ready:
    """A value already at hand, with the interface of :class:`IsolatedCall` (e.g. a result from the cache).

    Parameters
    ----------
    value : object
        What :meth:`result` returns.
    """

    seconds = 0.0

    def __init__(self, value):
        self._value = value

    def result(self):
        """The value."""
        return self._value

    def cancel(self):
        """Nothing to end."""


class Then:
    """``step(call.result())``, computed once when first asked for: an :class:`IsolatedCall` and what follows it.

    Parameters
    ----------
    call : IsolatedCall or Ready
    step : callable
        Run in this process on the call's result (e.g. keep it in a cache); its return value is the result.
    """

    def __init__(self, call, step):
        self._call, self._step = call, step
        self._done, self._value = False, None

    @property
    def seconds(self):
        """The call's wall time (s), once known."""
        return self._call.seconds

    def result(self):
        """The step's value (waits for the call)."""
        if not self._done:
            self._value = self._step(self._call.result())
            self._done = True
        return self._value

    def cancel(self):
        """End the call if it still runs."""
        self._call.cancel()
