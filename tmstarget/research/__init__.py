"""Research mode: targeting strategies compared across many participants.

:mod:`tmstarget.research.compare` runs every protocol on every participant of a dataset and
writes the group tables; :mod:`tmstarget.research.executors` runs those per-participant jobs
serially, in a local process pool or on a Dask distributed cluster, with identical results.
Neither is imported by ``import tmstarget``.
"""
