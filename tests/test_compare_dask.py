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
from tmstarget.research.executors import JobFailure, map_jobs, usable_cores
from tmstarget.testing.dask_cluster import LocalDaskCluster

TESTS = Path(__file__).resolve().parent
_ENV_BEFORE = dict(os.environ)


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


def test_every_back_end_runs_jobs_with_one_blas_thread(cluster):
    from threadpoolctl import threadpool_info

    before = threadpool_info()
    # the limit is not simply the library default here (2 cores: OpenBLAS starts 2 threads)
    assert usable_cores() == 1 or any(info["num_threads"] > 1 for info in before)
    serial = map_jobs(thread_report, range(2), n_jobs=1)
    pool = map_jobs(thread_report, range(4), n_jobs=2)
    dask = map_jobs(thread_report, range(4), dask_scheduler=cluster.address)
    assert {report["pid"] for report in serial} == {os.getpid()}
    assert os.getpid() not in {report["pid"] for report in pool + dask}
    for report in serial + pool + dask:
        assert report["pools"], "no BLAS seen"
        for user_api, internal_api, threads in report["pools"]:
            assert threads == 1, f"{internal_api} ({user_api}) ran {threads} threads in process {report['pid']}"
    for report in serial + pool:
        assert report["OMP_NUM_THREADS"] == report["OPENBLAS_NUM_THREADS"] == "1"
    # the serial run gave this process its thread pools and variables back
    assert [info["num_threads"] for info in threadpool_info()] == [info["num_threads"] for info in before]
    assert os.environ.get("OMP_NUM_THREADS") == _ENV_BEFORE.get("OMP_NUM_THREADS")


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


@pytest.mark.slow
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


# --- tmstarget.compare end to end: the same tables from every back end ---------------------------------------------

E2E_PROTOCOLS = "sgacc-dlpfc,dmn-dlpfc,5cm-rule"


@pytest.fixture(scope="module")
def three_participants(tmp_path_factory):
    """Three small synthetic participants (5 min of rest, 4-mm voxels) in one BIDS root."""
    from tmstarget.testing.patient import SyntheticConfig, make_patient

    root = tmp_path_factory.mktemp("participants") / "ds"
    for number, label in enumerate(("01", "02", "03")):
        make_patient(root, SyntheticConfig(n_rest=150, n_task=0, participant=label, seed=60 + number))
    return root


@pytest.fixture(scope="module")
def serial_tables(three_participants, tmp_path_factory):
    """The reference: the comparison run serially, in this process."""
    tables = _compare(three_participants, tmp_path_factory.mktemp("serial") / "out", n_jobs=1)
    targets = tables["targets"]
    assert len(targets) == 9 and (targets["status"] == "ok").all(), targets["status"].tolist()
    assert len(tables["data_length_targets"]) > 0
    return tables


def _compare(dataset, output, **where):
    import tmstarget

    return tmstarget.compare(dataset, E2E_PROTOCOLS, output, minutes=(3,), report=False, **where)


def _assert_same_tables(tables, reference):
    import pandas as pd

    assert set(tables) == set(reference)
    for name, table in reference.items():
        timing = [column for column in table.columns if column.endswith("_s")]
        pd.testing.assert_frame_equal(tables[name].drop(columns=timing), table.drop(columns=timing),
                                      check_exact=True, obj=name)


@pytest.mark.slow
def test_compare_tables_are_identical_serial_pool_and_dask(three_participants, serial_tables, tmp_path, cluster):
    serial = serial_tables
    _assert_same_tables(_compare(three_participants, tmp_path / "pool", n_jobs=2), serial)
    _assert_same_tables(_compare(three_participants, tmp_path / "dask", dask_scheduler=cluster.address), serial)


def _busy_worker(cluster):
    """The ``dask worker`` command (nanny) whose worker process is running a task now, else None."""
    import psutil
    from distributed import Client

    with Client(cluster.address, set_as_default=False) as client:
        busy = {address for address, keys in client.processing().items() if keys}
        pids = set(client.run(os.getpid, workers=list(busy)).values()) if busy else set()
    for worker in cluster.workers:
        if worker.poll() is None and pids & {child.pid for child in psutil.Process(worker.pid).children()}:
            return worker
    return None


@pytest.mark.slow
def test_compare_completes_when_a_dask_worker_is_killed_mid_run(three_participants, serial_tables, tmp_path,
                                                                cluster):
    killed = []

    def progress(done, total):
        if 0 < done < total and not killed:  # a participant is in: kill a worker still computing one
            worker = _busy_worker(cluster)
            if worker is not None:
                cluster.kill(worker)
                killed.append(worker)

    import tmstarget

    tables = tmstarget.compare(three_participants, E2E_PROTOCOLS, tmp_path / "dask", minutes=(3,), report=False,
                               dask_scheduler=cluster.address, progress=progress)
    cluster.add_worker(f"worker-{len(cluster.workers)}")  # the module's cluster has two workers again
    cluster.wait_for_workers(2)
    assert killed, "no worker was busy when the first participant came in"
    _assert_same_tables(tables, serial_tables)
