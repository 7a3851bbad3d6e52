"""The execution back ends of research mode (tmstarget.research.executors): serial, a local process pool and
a real Dask cluster (``dask scheduler`` and ``dask worker`` processes on localhost, started by
tmstarget.testing.dask_cluster) give the same results; a job's error comes back as that job's failure; a
worker killed mid-run loses nothing; pool workers run with limited BLAS threads.

No mocks: the pool spawns real processes and the cluster is the installed ``distributed`` command line.
Every process started is killed (its whole process group) when its ``with`` block ends, whatever happened.
"""

import os
import signal
from pathlib import Path

import pytest

from executor_jobs import numpy_job, thread_report
from tmstarget.errors import InputError
from tmstarget.research.executors import JobFailure, map_jobs, threads_per_worker, usable_cores
from tmstarget.testing.dask_cluster import LocalDaskCluster

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with LocalDaskCluster(tmp_path_factory.mktemp("dask"), n_workers=2, pythonpath=[TESTS]) as started:
        yield started


def _jobs(count, size=60, sleep_s=0.0, marker_dir=None):
    return [(seed, size, sleep_s, marker_dir) for seed in range(count)]


def _assert_equal(results, expected):
    assert len(results) == len(expected)
    for index, (got, want) in enumerate(zip(results, expected)):
        assert got == want, f"job {index} differs"


def test_threads_per_worker_keeps_the_product_within_the_cores():
    assert threads_per_worker(2, cores=2) == 1
    assert threads_per_worker(3, cores=8) == 2
    assert threads_per_worker(1, cores=8) == 8
    assert threads_per_worker(16, cores=8) == 1


def test_serial_and_pool_and_dask_give_identical_results(cluster):
    jobs = _jobs(8) + [(-1, 60, 0.0, None)]
    serial = map_jobs(numpy_job, jobs, n_jobs=1)
    # the reference is not our own back end: the job function called directly, in order
    _assert_equal(serial[:-1], [numpy_job(job) for job in jobs[:-1]])
    assert serial[-1] == JobFailure("ValueError: planted failure in job -1")
    seen = []
    pool = map_jobs(numpy_job, jobs, n_jobs=2, on_result=lambda index, result: seen.append(index))
    _assert_equal(pool, serial)
    assert sorted(seen) == list(range(len(jobs)))
    seen.clear()
    dask = map_jobs(numpy_job, jobs, dask_scheduler=cluster.address, on_result=lambda index, result: seen.append(index))
    _assert_equal(dask, serial)
    assert sorted(seen) == list(range(len(jobs)))


def test_pool_workers_run_with_limited_blas_threads():
    from threadpoolctl import threadpool_info

    cores = usable_cores()
    limit = threads_per_worker(2, cores)
    reports = map_jobs(thread_report, range(4), n_jobs=2)
    assert len({report["pid"] for report in reports} | {os.getpid()}) > 1  # ran in other processes
    for report in reports:
        assert report["OMP_NUM_THREADS"] == report["OPENBLAS_NUM_THREADS"] == str(limit)
        assert report["pools"], "no BLAS seen in the worker"
        for user_api, internal_api, threads in report["pools"]:
            assert threads == limit, f"{internal_api} ({user_api}) runs {threads} threads, limit {limit}"
    if cores > 1:  # the limit is not simply the library default
        assert any(info["num_threads"] > limit for info in threadpool_info())


def _running(markers, delivered, pids):
    """Jobs started by one of ``pids`` (per the marker files) and not delivered yet."""
    started = (path.name.split("-") for path in markers.iterdir())
    return {int(seed) for _, seed, pid, _ in started if int(pid) in pids and int(seed) not in delivered}


def _killer(markers, pids_of, kill):
    """An ``on_result`` that kills a worker as soon as it is running a job not delivered yet."""
    delivered, killed = set(), []

    def on_result(index, result):
        delivered.add(index)
        if not killed:
            for pid in pids_of():
                if _running(markers, delivered, {pid}):
                    kill(pid)
                    killed.append(pid)
                    break

    return on_result, killed


def test_killed_dask_worker_loses_no_job(tmp_path):
    import psutil

    markers = tmp_path / "markers"
    markers.mkdir()
    jobs = _jobs(10, sleep_s=1.0, marker_dir=str(markers))
    with LocalDaskCluster(tmp_path / "cluster", n_workers=2, pythonpath=[TESTS]) as cluster:
        victim = cluster.workers[0]
        # the nanny's worker process runs the jobs; killing the group takes the nanny with it (no restart)
        on_result, killed = _killer(markers, lambda: [child.pid for child in psutil.Process(victim.pid).children()],
                                    lambda pid: cluster.kill(victim))
        results = map_jobs(numpy_job, jobs, dask_scheduler=cluster.address, on_result=on_result)
    assert killed, "no worker was killed"
    _assert_equal(results, [numpy_job((seed, size, 0.0, None)) for seed, size, _, _ in jobs])
    assert len(list(markers.iterdir())) > len(jobs)  # the killed worker's job was started again elsewhere


def test_killed_pool_worker_loses_no_job(tmp_path):
    import psutil

    markers = tmp_path / "markers"
    markers.mkdir()
    jobs = _jobs(6, sleep_s=1.0, marker_dir=str(markers))
    on_result, killed = _killer(markers, lambda: [child.pid for child in psutil.Process().children()],
                                lambda pid: os.kill(pid, signal.SIGKILL))
    results = map_jobs(numpy_job, jobs, n_jobs=2, on_result=on_result)
    assert killed, "no worker was killed"
    _assert_equal(results, [numpy_job((seed, size, 0.0, None)) for seed, size, _, _ in jobs])
    assert len(list(markers.iterdir())) > len(jobs)


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(InputError, match="not both"):
        map_jobs(numpy_job, _jobs(2), n_jobs=2, dask_scheduler="tcp://127.0.0.1:1")
    with pytest.raises(InputError, match="at least 1"):
        map_jobs(numpy_job, _jobs(2), n_jobs=0)
    with pytest.raises(InputError, match="module-level function"):
        map_jobs(lambda job: job, _jobs(2), n_jobs=2)
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        with pytest.raises(InputError, match="cannot reach the Dask scheduler") as caught:
            map_jobs(numpy_job, _jobs(2), dask_scheduler="tcp://127.0.0.1:1")
    assert "tcp://127.0.0.1:1" in str(caught.value) and "\n" not in str(caught.value)
