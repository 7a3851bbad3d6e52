"""Research mode: targeting strategies compared across many participants (``tmstarget compare``).

:mod:`tmstarget.research.compare` runs every protocol on every participant of a dataset and
writes the group tables; :mod:`tmstarget.research.jobs` is one participant's job (runs read and
cleaned once per group of protocols sharing them), :mod:`tmstarget.research.tables` the tables'
definitions, :mod:`tmstarget.research.report` the group report; :mod:`tmstarget.research.executors`
runs the per-participant jobs serially, in a local process pool or on a Dask distributed cluster,
with identical results. None is imported by ``import tmstarget``.
"""
