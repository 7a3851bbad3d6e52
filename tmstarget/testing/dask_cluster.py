"""A real Dask cluster on this machine, for tests and benchmarks: a ``dask scheduler`` and ``dask worker``
processes started from the installed ``distributed`` command line (``python -m distributed.cli...``).

Each process leads its own process group (a worker's nanny and its worker process die together, like a
machine going down) and, on Linux, dies with the process that started it; :meth:`LocalDaskCluster.close`
kills every group it started, so nothing is left behind. Used as a context manager::

    with LocalDaskCluster(tmp / "dask", n_workers=2) as cluster:
        map_jobs(func, jobs, dask_scheduler=cluster.address)
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import tmstarget
from tmstarget.anatomy.ants_process import _die_with_parent

#: The folder holding this checkout's ``tmstarget`` package (first on the processes' PYTHONPATH).
SOURCE_ROOT = Path(tmstarget.__file__).resolve().parents[1]


class LocalDaskCluster:
    """A scheduler and ``n_workers`` workers of ``nthreads`` threads each (one worker process apiece).

    Parameters
    ----------
    folder : path
        Logs (``scheduler.log``, ``worker-<n>.log``), the scheduler file and the workers' local folders.
    n_workers : int
    nthreads : int, default=1
    pythonpath : sequence of path, optional
        Folders the workers import from besides this checkout's (e.g. a test folder of job functions).
    timeout_s : float, default=120
        Longest wait for the scheduler and the workers to come up.

    Attributes
    ----------
    address : str
        The scheduler's ``tcp://127.0.0.1:<port>``.
    workers : list of subprocess.Popen
        One ``dask worker`` command (its nanny) per worker, in start order.
    """

    def __init__(self, folder, n_workers, *, nthreads=1, pythonpath=(), timeout_s=120.0):
        self.folder = Path(folder).resolve()  # the processes run in it: no relative path may reach them
        self.folder.mkdir(parents=True, exist_ok=True)
        self.nthreads = nthreads
        self.timeout_s = timeout_s
        self.scheduler_file = self.folder / "scheduler.json"
        paths = [str(SOURCE_ROOT), *map(str, pythonpath)]
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
        self.processes = []
        self.workers = []
        try:
            self._start_scheduler()
            for number in range(n_workers):
                self.add_worker(f"worker-{number}")
            self.wait_for_workers(n_workers)
        except BaseException:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _start(self, arguments, name):
        with open(self.folder / f"{name}.log", "wb") as log:
            process = subprocess.Popen([sys.executable, "-m", *arguments], stdout=log, stderr=subprocess.STDOUT,
                                       env=self.env, cwd=self.folder, start_new_session=True,
                                       preexec_fn=_die_with_parent)
        self.processes.append(process)
        return process

    def _start_scheduler(self):
        scheduler = self._start(["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
                                 "--no-dashboard", "--dashboard-address", "127.0.0.1:0",  # its HTTP server: any port
                                 "--scheduler-file", str(self.scheduler_file)], "scheduler")
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                self.address = json.loads(self.scheduler_file.read_text())["address"]
                return
            except (OSError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline or scheduler.poll() is not None:
                raise RuntimeError(f"the Dask scheduler did not start; its log: {self.log('scheduler')}")
            time.sleep(0.2)

    def log(self, name):
        """The end of a process's log (``scheduler`` or ``worker-<n>``)."""
        return (self.folder / f"{name}.log").read_text(errors="replace")[-2000:]

    def add_worker(self, name):
        """Start one more worker (one process of ``nthreads`` threads, under a nanny) named ``name``."""
        worker = self._start(["distributed.cli.dask_worker", "--scheduler-file", str(self.scheduler_file),
                              "--nthreads", str(self.nthreads), "--nworkers", "1", "--no-dashboard",
                              "--name", name, "--local-directory", str(self.folder / name),
                              "--death-timeout", "60"], name)
        self.workers.append(worker)
        return worker

    def wait_for_workers(self, count):
        """Return once ``count`` workers are connected to the scheduler."""
        from distributed import Client

        with Client(self.address, timeout=f"{self.timeout_s}s", set_as_default=False) as client:
            client.wait_for_workers(count, timeout=self.timeout_s)

    def kill(self, process):
        """SIGKILL a started process and its children (a worker's nanny and worker: the machine is gone)."""
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=30)

    def close(self):
        """Stop every process started (SIGTERM to each group, SIGKILL to what is left after 10 s)."""
        for process in reversed(self.processes):
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in reversed(self.processes):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            self.kill(process)
