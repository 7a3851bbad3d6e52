"""``tmstarget.compare``: several targeting strategies on the same participants, side by side.

For each participant (one job, :func:`tmstarget.research.jobs.run_participant`, run serially, on
a local process pool or on a Dask cluster) every protocol's plan folder is written under
``OUTPUT/participants/sub-<label>/<protocol>/`` (the layout of ``tmstarget plan``, viewable with
``tmstarget view``); then the group tables (:mod:`tmstarget.research.tables`) and the report.
A finished participant x protocol (plan folder and result record) is skipped on a rerun unless
``force``.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

from tmstarget.errors import InputError

#: Data lengths (minutes) of the data-length curve; lengths longer than a participant's data are skipped.
DEFAULT_MINUTES = (5, 10, 15, 20, 25, 30, 40, 50, 60)
#: The tables :func:`compare` returns and writes (``<name>.tsv``).
TABLES = ("targets", "distances", "summary", "data_length", "data_length_targets")


def find_participants(dataset, bids_dir=None):
    """Labels of the ``sub-<label>`` folders of a dataset's fMRIPrep derivatives, sorted."""
    from tmstarget.ingest.fmriprep import resolve_dataset

    fmriprep_dir, _ = resolve_dataset(dataset, bids_dir)
    labels = sorted(p.name[4:] for p in fmriprep_dir.glob("sub-*") if p.is_dir())
    if not labels:
        raise InputError("no sub-<label> folders in the fMRIPrep derivatives", path=fmriprep_dir)
    return labels


def _participants(dataset, bids_dir, participants):
    from tmstarget.ingest.fmriprep import participant_label

    found = find_participants(dataset, bids_dir)
    if participants is None:
        return found
    chosen = [participant_label(str(p)) for p in participants]
    missing = [p for p in chosen if p not in found]
    if missing:
        raise InputError(f"no fMRIPrep folder for participant(s) {', '.join(missing)} (found: {', '.join(found)})",
                         path=dataset)
    return sorted(dict.fromkeys(chosen))


def _protocol_names(protocols):
    from tmstarget.protocol import load_protocol

    if isinstance(protocols, str):
        protocols = [p for p in protocols.split(",") if p.strip()]
    specs = [str(p).strip() for p in protocols]
    if not specs:
        raise InputError("give at least one protocol (--protocols a,b,c)")
    names = [load_protocol(spec).name for spec in specs]
    doubles = sorted({n for n in names if names.count(n) > 1})
    if doubles:
        raise InputError(f"protocol(s) given twice: {', '.join(doubles)}")
    return specs, names


def _minutes(minutes):
    values = sorted({float(m) for m in minutes})
    if any(m <= 0 for m in values):
        raise InputError(f"data lengths must be positive minutes; got {list(minutes)}")
    return tuple(values)


def compare(dataset: str | PathLike, protocols, output: str | PathLike, participants=None, *, n_jobs: int | None = None,
            dask_scheduler: str | None = None, force: bool = False, minutes=DEFAULT_MINUTES,
            bids_dir: str | PathLike | None = None, report: bool = True, progress=None):
    """Compare targeting strategies on every participant of a dataset.

    Parameters
    ----------
    dataset : str or Path
        fMRIPrep derivatives folder, or a BIDS root holding ``derivatives/fmriprep``.
    protocols : str or sequence of str
        Protocol names or ``.toml`` paths (a string: comma-separated), e.g.
        ``"rumination-dmpfc,sgacc-dlpfc,dmn-dlpfc,5cm-rule,beam-f3"``.
    output : str or Path
        Output folder (created; an existing one is resumed). Never inside the dataset tree.
    participants : sequence of str, optional
        Labels (``sub-`` optional); default: every ``sub-*`` folder of the derivatives.
    n_jobs : int, optional
        Local worker processes (default: the core count; 1: serial in this process). The workers
        are started with ``spawn``: in a script, call ``compare`` under ``if __name__ == "__main__":``.
    dask_scheduler : str, optional
        Address of a Dask distributed scheduler (``tcp://host:8786``) to run the jobs on
        instead; the dataset and ``output`` must be reachable at the same paths on every worker.
    force : bool, default=False
        Recompute finished participant x protocol results instead of skipping them.
    minutes : sequence of float, default=DEFAULT_MINUTES
        Data lengths for ``data_length.tsv``; empty for none.
    bids_dir : str or Path, optional
        Raw BIDS dataset holding the events.
    report : bool, default=True
        Write ``OUTPUT/report.html``.
    progress : callable, optional
        ``progress(done, total)`` in participant x protocol units, after each participant.

    Returns
    -------
    dict of str to pandas.DataFrame
        ``targets``, ``distances``, ``summary``, ``data_length`` and ``data_length_targets``
        (the per-participant points), as written to ``OUTPUT/<name>.tsv``; definitions in
        :mod:`tmstarget.research.tables`. ``targets["status"]`` is ``"ok"`` or
        ``"failed: <reason>"``.
    """
    from tmstarget.outputs.plan_folder import check_output_dir
    from tmstarget.protocol import load_protocol
    from tmstarget.research import tables as tb
    from tmstarget.research.executors import JobFailure, map_jobs
    from tmstarget.research.jobs import ParticipantJob, empty_record, finished_record, run_participant

    specs, names = _protocol_names(protocols)
    labels = _participants(dataset, bids_dir, participants)
    minutes = _minutes(minutes)
    out = Path(output)
    check_output_dir(out, True, [Path(dataset)] + ([Path(bids_dir)] if bids_dir else []))
    (out / "participants").mkdir(parents=True, exist_ok=True)
    records, jobs = [], []
    for label in labels:
        todo = []
        for spec, name in zip(specs, names):
            record = None if force else finished_record(out, label, name, minutes)
            if record is None:
                todo.append(spec)
            else:
                records.append(record)
        if todo:
            # absolute paths: a worker (another process, a Dask worker) may run in another folder
            jobs.append(ParticipantJob(str(Path(dataset).resolve()), label, tuple(todo), str(out.resolve()), minutes,
                                       None if bids_dir is None else str(Path(bids_dir).resolve())))
    total = len(labels) * len(names)
    counter = {"done": len(records)}
    if progress is not None:
        progress(counter["done"], total)

    def on_result(index, _result):
        counter["done"] += len(jobs[index].protocols)
        if progress is not None:
            progress(counter["done"], total)

    results = map_jobs(run_participant, jobs, n_jobs=n_jobs, dask_scheduler=dask_scheduler, on_result=on_result)
    for job, result in zip(jobs, results):
        if isinstance(result, JobFailure):  # the job itself died (a lost worker too often, an unexpected error)
            result = [empty_record(job.participant, load_protocol(spec).name, f"failed: {result.reason}", minutes)
                      for spec in job.protocols]
        records.extend(result)
    targets = tb.targets_table(records, names)
    distances = tb.distances_table(targets, names)
    points = tb.data_length_points_table(records, targets)
    result = {"targets": targets, "distances": distances, "summary": tb.summary_table(targets, distances, names),
              "data_length": tb.data_length_table(points, names), "data_length_targets": points}
    for name, table in result.items():
        tb.write_tsv(table, out / f"{name}.tsv")
    if report:
        from tmstarget.research.report import write_report

        write_report(result, names, out / "report.html")
    return result


def failed_count(targets):
    """Participant x protocol rows whose status is not ``ok``."""
    return int((targets["status"] != "ok").sum())
