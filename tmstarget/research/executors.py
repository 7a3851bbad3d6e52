"""Run one function over many jobs: in this process, in a local process pool, or on a Dask cluster.

:func:`map_jobs` is the only entry point. The three back ends give the same list of results, in
job order, for a deterministic function; a job that raises gives a :class:`JobFailure` in its
place in every back end (same one-line reason), and the other jobs go on.

Every job runs with **one BLAS/OpenMP thread**, in every back end: a multi-threaded BLAS sums
in an order that depends on its thread count, so a score computed with 2 threads differs from the
1-thread one in the 7th digit (measured on a compare job), and the tables of a serial run would not
equal those of a pool or a cluster, nor those of a machine with another core count. (The same reason
registrations run with one ITK thread, :mod:`tmstarget.anatomy.ants_process`.) Parallelism comes
from processes: the default is one process per core, so workers × threads ≤ cores.

* **serial** (``n_jobs=1``): ``func(job)`` in a loop, here, the BLAS/OpenMP pools limited to one
  thread for each call (threadpoolctl; restored afterwards) and the ``*_NUM_THREADS`` variables set
  to 1 for the run (restored afterwards; a library first loaded during the run keeps one thread).
* **local pool** (``n_jobs=N``, default the usable core count): ``N`` worker processes started
  with ``spawn`` (a fresh interpreter: no state inherited from a parent that may hold threads or
  open files; the calling script needs the usual ``if __name__ == "__main__":`` guard). Each worker
  sets the ``*_NUM_THREADS`` variables to 1 before it imports the job's module (they rule the
  libraries loaded later) and threadpoolctl limits the ones already loaded, again around every job.
  A worker that dies (killed, out of memory) breaks a ``ProcessPoolExecutor``; the unfinished jobs
  are then run again in a fresh pool, at most ``retries`` times, after which they are failures.
* **Dask** (``dask_scheduler="tcp://host:port"``): ``distributed.Client.map`` with explicit
  unique keys (``pure=False``: nothing is shared with an earlier run on the same scheduler) and
  ``retries`` automatic reruns of a job that raised (a flaky network share, a transient memory
  error). A job whose worker is lost (machine down, worker killed) is rerun on another worker by
  the scheduler itself, up to its ``distributed.scheduler.allowed-failures`` (default 3) lost
  workers, after which it is a failure (``KilledWorker``). ``dask``/``distributed`` are imported
  only here, on that path. Each task limits its worker's BLAS pools to one thread (Dask's nanny
  also starts workers with ``OMP_NUM_THREADS=1`` etc.); start workers with ``--nthreads 1`` and as
  many ``--nworkers`` as cores, one job per process.

``on_result(index, result)`` is called in the calling process as each job finishes (in
completion order), so a caller can show progress and write finished results at once (resumable
runs). An exception raised by ``on_result`` stops the run: jobs not started are cancelled, jobs
running are waited for (pool) or released (Dask), and the exception propagates.

Expected, domain errors (a participant's damaged file) are best caught by ``func`` itself and
returned as part of its plain result; :class:`JobFailure` is the net for the unexpected.
"""

import logging
import os
import pickle
import socket
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

from tmstarget.errors import InputError

logger = logging.getLogger(__name__)

#: Environment variables read at load time by the BLAS / OpenMP / numexpr thread pools.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS",
)
#: BLAS/OpenMP threads of every job (see the module notes: results independent of the back end).
JOB_THREADS = 1
#: Default number of automatic reruns (a job that raised, on Dask; a broken local pool).
RETRIES = 2
#: Longest failure reason kept, in characters.
MAX_REASON = 300


@dataclass(frozen=True)
class JobFailure:
    """The result of a job that raised, or whose worker died too often.

    Attributes
    ----------
    reason : str
        One line: the exception's type and the first line of its message, e.g.
        ``"ValueError: no BOLD run"`` or ``"KilledWorker: Attempted to run task ..."``.
    """

    reason: str


def usable_cores():
    """Number of CPU cores this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def map_jobs(func, jobs, *, n_jobs=None, dask_scheduler=None, on_result=None, retries=RETRIES):
    """Apply ``func`` to every job and return the results in job order.

    Parameters
    ----------
    func : callable
        ``func(job) -> result``; a module-level function (picklable by reference), deterministic.
        On Dask its module must be importable on the workers (tmstarget installed there).
    jobs : sequence
        Small picklable objects (the inputs travel with the task, not the data they name: files
        are read by ``func`` where it runs).
    n_jobs : int, optional
        Local worker processes; 1 runs serially in this process; default the usable core count.
        At most ``len(jobs)`` processes are started. Not allowed together with ``dask_scheduler``.
    dask_scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``): the jobs go to its workers.
    on_result : callable, optional
        ``on_result(index, result)``, called here as each job finishes (completion order).
    retries : int
        Automatic reruns: on Dask, of a job that raised; locally, of the unfinished jobs after a
        worker process died. Lost Dask workers are handled by the scheduler (see module notes).

    Returns
    -------
    list
        ``result`` of ``func(jobs[i])`` at index ``i``, or a :class:`JobFailure` for a job that
        raised (after its retries) or whose workers kept dying.

    Raises
    ------
    tmstarget.errors.InputError
        ``n_jobs`` below 1, both ``n_jobs`` and ``dask_scheduler`` given, a function the pool
        cannot send to its workers, or a Dask scheduler that cannot be reached.
    """
    jobs = list(jobs)
    results = [None] * len(jobs)

    def deliver(index, result):
        results[index] = result
        if isinstance(result, JobFailure):
            logger.warning("job %d failed: %s", index, result.reason)
        if on_result is not None:
            on_result(index, result)

    if dask_scheduler is not None:
        if n_jobs is not None:
            raise InputError("give either n_jobs (a local pool) or dask_scheduler (a cluster), not both",
                             key="n_jobs")
        _run_dask(func, jobs, dask_scheduler, retries, deliver)
        return results
    n_jobs = usable_cores() if n_jobs is None else int(n_jobs)
    if n_jobs < 1:
        raise InputError(f"n_jobs must be at least 1, got {n_jobs}", key="n_jobs")
    n_workers = min(n_jobs, len(jobs))
    if n_workers <= 1:
        with _thread_variables():
            for index, job in enumerate(jobs):
                deliver(index, _call_caught(func, job))
    else:
        _run_pool(func, jobs, n_workers, retries, deliver)
    return results


def _reason(exc):
    """One line naming the exception: its type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


def _call_caught(func, job):
    try:
        return call_single_threaded(func, job)
    except Exception as exc:  # any job's unexpected error becomes its failure, as in the other back ends
        logger.debug("job raised", exc_info=True)
        return JobFailure(_reason(exc))


@contextmanager
def _thread_variables():
    """:data:`THREAD_VARIABLES` set to :data:`JOB_THREADS` inside the block, restored after it."""
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update({name: str(JOB_THREADS) for name in THREAD_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def limit_worker_threads():
    """Pool worker initializer: :data:`THREAD_VARIABLES` set to :data:`JOB_THREADS` for good (read by the
    libraries loaded from now on) and the thread pools already loaded limited (threadpoolctl)."""
    os.environ.update({name: str(JOB_THREADS) for name in THREAD_VARIABLES})
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=JOB_THREADS)


def call_single_threaded(func, job):
    """``func(job)`` with every loaded BLAS/OpenMP pool limited to :data:`JOB_THREADS` (restored after),
    including those loaded by unpickling ``func`` (importing its module) in a worker."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=JOB_THREADS):
        return func(job)


def _run_pool(func, jobs, n_workers, retries, deliver):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    try:
        pickle.dumps(func)
    except Exception as exc:
        raise InputError(f"the job function cannot be sent to worker processes ({_reason(exc)}); "
                         "use a module-level function", key="func") from None
    context = multiprocessing.get_context("spawn")
    pending = list(range(len(jobs)))
    for attempt in range(retries + 1):
        lost = []
        with ProcessPoolExecutor(min(n_workers, len(pending)), mp_context=context,
                                 initializer=limit_worker_threads) as pool:
            futures = {pool.submit(call_single_threaded, func, jobs[index]): index for index in pending}
            try:
                for future in as_completed(futures):
                    index = futures[future]
                    exc = future.exception()
                    if isinstance(exc, BrokenProcessPool):
                        lost.append(index)
                    elif exc is not None:
                        logger.debug("job %d raised", index, exc_info=exc)
                        deliver(index, JobFailure(_reason(exc)))
                    else:
                        deliver(index, future.result())
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        if not lost:
            return
        pending = sorted(lost)
        logger.warning("a worker process died; %d unfinished job(s) %s", len(pending),
                       "run again in a fresh pool" if attempt < retries else "given up")
    for index in pending:
        deliver(index, JobFailure(f"worker process died {retries + 1} times while this job was unfinished "
                                  "(killed, out of memory, or a script without an if __name__ == '__main__' guard)"))


def _check_reachable(address):
    """Raise OSError/ValueError when a ``tcp://`` scheduler address has no listener (before any Client exists:
    a Client that failed to connect lingers and times out again on its way out)."""
    import dask
    from dask.utils import parse_timedelta
    from distributed.comm import parse_address
    from distributed.comm.addressing import parse_host_port

    protocol, location = parse_address(address)
    if protocol == "tcp":
        timeout_s = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), default="s")
        socket.create_connection(parse_host_port(location), timeout=timeout_s).close()


def _run_dask(func, jobs, address, retries, deliver):
    from distributed import Client, as_completed

    try:
        _check_reachable(address)
        client = Client(address, set_as_default=False)  # waits distributed.comm.timeouts.connect (30 s)
    except Exception as exc:  # refused, unknown host, timed out, not a Dask scheduler answering
        raise InputError(f"cannot reach the Dask scheduler at {address}: {_reason(exc)}",
                         key="dask_scheduler") from None
    with client:
        prefix = f"{getattr(func, '__name__', 'job')}-{uuid.uuid4().hex[:12]}"
        keys = [f"{prefix}-{index}" for index in range(len(jobs))]
        futures = client.map(partial(call_single_threaded, func), jobs, key=keys, pure=False, retries=retries)
        order = {future.key: index for index, future in enumerate(futures)}
        try:
            for future in as_completed(futures, loop=client.loop):  # this client's loop, not a default one
                index = order[future.key]
                try:  # a result lost with its worker after it finished is computed again: result() waits for it
                    result = future.result()
                except Exception as exc:  # raised after its retries, KilledWorker, cancelled
                    logger.debug("job %d raised", index, exc_info=exc)
                    result = JobFailure(_reason(exc))
                future.release()
                deliver(index, result)
        except BaseException:
            client.cancel(futures)
            raise
