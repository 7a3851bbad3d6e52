"""Job functions for tests/test_compare_dask.py: module-level (picklable by reference) and importable by
the pool's spawned workers and by the Dask workers (the tests put this folder on their PYTHONPATH)."""

import os
import time
import uuid
from pathlib import Path

import numpy as np


def numpy_job(job):
    """A deterministic numpy computation from ``job = (seed, size, sleep_s, marker_dir)``.

    Returns plain data: the seed, the eigenvalues of a seeded random Gram matrix and its trace. A negative
    seed raises (a job's unexpected error). With ``marker_dir``, each start leaves a file there first, so a
    test can count how often a job was started (a rerun after a lost worker starts it twice).
    """
    seed, size, sleep_s, marker_dir = job
    if marker_dir is not None:
        Path(marker_dir, f"start-{seed}-{os.getpid()}-{uuid.uuid4().hex}").touch()
    if seed < 0:
        raise ValueError(f"planted failure in job {seed}\nsecond line not reported")
    time.sleep(sleep_s)
    values = np.random.default_rng(seed).standard_normal((size, size))
    gram = values @ values.T
    return {"seed": seed, "eigenvalues": np.linalg.eigvalsh(gram).tolist(), "trace": float(np.trace(gram))}


def thread_report(job):
    """What this process's thread pools and thread variables say (for the pool's BLAS limit)."""
    from threadpoolctl import threadpool_info

    pools = sorted((info["user_api"], info["internal_api"], info["num_threads"]) for info in threadpool_info())
    return {"pid": os.getpid(), "pools": pools, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS")}
