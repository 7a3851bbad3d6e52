"""One participant of a comparison: every protocol's plan folder, its table row and its data-length points.

:func:`run_participant` is the job :func:`tmstarget.research.compare.compare` hands to an executor
(:func:`tmstarget.research.executors.map_jobs`): a top-level function of one small picklable
:class:`ParticipantJob`, returning plain data (one record, a dict, per protocol).

The participant's runs are read and cleaned once per group of protocols that use the same runs
and the same ``[clean]`` section (:func:`tmstarget.analysis.engine.prepare`); each protocol of the
group then computes its target from the cleaned data (:func:`tmstarget.analysis.engine.analyse`).
For the data-length curve the loaded runs are cut to their first L minutes
(:func:`tmstarget.ingest.runs.truncate_run`: frames, confounds and events together) and go through
the same two steps. A failure is caught per group (reading, cleaning) or per protocol (analysis)
and becomes that record's ``status``, ``"failed: <one line>"``; it never stops the others.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Why the plan folders of a comparison hold no coil.
NO_COIL_REASON = ("tmstarget compare plans in MNI152NLin2009cAsym to compare strategies across participants: "
                  "no coil placement (run tmstarget plan for a participant's navigation files)")
#: Suffix of the result record written beside each finished plan folder.
RECORD_SUFFIX = ".result.json"


@dataclass(frozen=True)
class ParticipantJob:
    """What one worker needs for one participant (paths as strings, so it pickles small).

    Attributes
    ----------
    dataset : str
        fMRIPrep derivatives folder or a BIDS root holding ``derivatives/fmriprep``.
    participant : str
        Label without ``sub-``.
    protocols : tuple of str
        Protocol names or ``.toml`` paths still to compute for this participant.
    output : str
        The comparison's output folder (plan folders go to ``participants/sub-<label>/<protocol>/``).
    minutes : tuple of float
        Data lengths of the data-length curve (empty: none).
    bids_dir : str, optional
        Raw BIDS dataset holding the events.
    """

    dataset: str
    participant: str
    protocols: tuple
    output: str
    minutes: tuple = ()
    bids_dir: str | None = None


def participant_folder(output, participant):
    """``OUTPUT/participants/sub-<label>``."""
    return Path(output) / "participants" / f"sub-{participant}"


def record_path(output, participant, protocol_name):
    """The result record of one participant x protocol, beside its plan folder."""
    return participant_folder(output, participant) / f"{protocol_name}{RECORD_SUFFIX}"


def finished_record(output, participant, protocol_name, minutes):
    """The record of a finished participant x protocol, or None when it must be computed (again).

    Finished means: the plan folder's ``target.json`` and the result record exist, the record
    says ``ok`` and was computed for the same data lengths.
    """
    path = record_path(output, participant, protocol_name)
    if not path.is_file() or not (participant_folder(output, participant) / protocol_name / "target.json").is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if record.get("status") != "ok" or record.get("minutes") != [float(m) for m in minutes]:
        return None
    return record


def failure_reason(exc):
    """``"failed: <one line>"`` for an exception; a path is cut to its file name (folder names can hold a name)."""
    from tmstarget.errors import TmsTargetError

    if isinstance(exc, TmsTargetError):
        where = [Path(exc.path).name] if exc.path else []
        where += [f"[{exc.key}]"] if exc.key else []
        where += [f"volume {exc.volume}"] if exc.volume is not None else []
        text = f"{' '.join(where)}: {exc.message}" if where else exc.message
    else:
        text = f"{type(exc).__name__}: {exc}"
    line = " ".join(str(text).split())
    return f"failed: {line[:300]}"


def empty_record(participant, name, status, minutes):
    """A record without results (the start of every record, and that of a job that died)."""
    return {"participant": participant, "protocol": name, "x_mni": None, "y_mni": None, "z_mni": None,
            "score": None, "p_fwe": None, "significant": None, "split_half_mm": None, "bootstrap_spread_mm": None,
            "mean_fd_mm": None, "usable_minutes": None, "status": status, "prepare_s": None, "analysis_s": None,
            "write_s": None, "data_length_s": None, "minutes": [float(m) for m in minutes], "data_length": []}


def _qc_numbers(qc):
    """Mean FD_Power over the analysed frames of all runs, and the minutes kept after scrubbing."""
    runs = qc.get("runs") or []
    if not runs:
        return None, None
    frames = [q["volumes"] - q["dummy_volumes_dropped"] for q in runs]
    mean_fd = float(np.average([q["mean_fd_power_mm"] for q in runs], weights=frames))
    usable = float(sum(q["frames_kept"] * q["t_r_s"] for q in runs) / 60.0)
    return mean_fd, usable


def _target_numbers(plan_like_qc, target_mni, score):
    """The row's target columns from a plan's QC and its target's MNI point."""
    inference = plan_like_qc.get("inference") or {}
    stability = plan_like_qc.get("stability") or {}
    x, y, z = (round(float(v), 4) for v in target_mni)  # as target.json rounds them
    return {"x_mni": x, "y_mni": y, "z_mni": z, "score": _number(score), "p_fwe": _number(inference.get("p_fwe")),
            "significant": None if inference.get("significant") is None else bool(inference["significant"]),
            "split_half_mm": _number(stability.get("split_half_distance_mm")),
            "bootstrap_spread_mm": _number(inference.get("bootstrap_spread_mm"))}


def _number(value):
    """A finite float, or None (missing, NaN or infinite)."""
    return None if value is None or not np.isfinite(value) else float(value)


def _save_plan(job, result, selection, folder):
    """The plan folder in the normal layout (no coil), and the plan's document."""
    from tmstarget.outputs.plan import build_plan

    roots = [Path(job.dataset)] + ([Path(job.bids_dir)] if job.bids_dir else [])
    command = ["tmstarget", "compare", "<dataset>", "--participants", job.participant,
               "--protocols", result.protocol.name]
    plan = build_plan(result, job.participant, command=command, inputs=selection.inputs, roots=roots,
                      coil_reason=NO_COIL_REASON)
    plan.save(folder, force=True)
    return plan.document


def _selection(job, protocol):
    from tmstarget.ingest.collect import Selection, select_runs
    from tmstarget.ingest.fmriprep import find_t1, resolve_dataset

    if protocol.kind == "fixed":
        t1 = find_t1(resolve_dataset(job.dataset, job.bids_dir)[0], job.participant)
        return Selection([], t1, None, [Path(job.dataset)] + ([Path(t1)] if t1 else []))
    return select_runs(protocol.states, dataset=Path(job.dataset), participant=job.participant,
                       bids_dir=None if job.bids_dir is None else Path(job.bids_dir))


def _groups(protocols, selections):
    """Connectivity protocols grouped by (runs, ``[clean]`` section): each group is read and cleaned once."""
    groups = []
    for protocol in protocols:
        if protocol.kind != "connectivity" or protocol.name not in selections:
            continue
        runs = tuple((str(files.bold), state) for files, state in selections[protocol.name].runs)
        for key, members in groups:
            if key == (runs, protocol.clean):
                members.append(protocol)
                break
        else:
            groups.append(((runs, protocol.clean), [protocol]))
    return [members for _, members in groups]


def _write_record(job, record):
    from tmstarget._fileio import write_json_atomic

    write_json_atomic(record_path(job.output, job.participant, record["protocol"]), record)


def run_participant(job):
    """Compute, save and summarize every protocol of ``job`` for its participant.

    Parameters
    ----------
    job : ParticipantJob

    Returns
    -------
    list of dict
        One record per protocol, in ``job.protocols`` order: the ``targets.tsv`` columns
        (``participant``, ``protocol``, ``x_mni`` ... ``status``, timing columns ``*_s``),
        ``minutes`` and ``data_length`` (one point per computed length: ``minutes``,
        ``x_mni``/``y_mni``/``z_mni``, ``p_fwe``, ``significant``, ``split_half_mm``, ``status``).
        A successful record is also written beside the plan folder (:func:`record_path`).
    """
    from tmstarget.analysis.engine import plan_fixed
    from tmstarget.protocol import load_protocol

    protocols = [load_protocol(spec) for spec in job.protocols]
    records = {p.name: empty_record(job.participant, p.name, "ok", job.minutes) for p in protocols}
    folder = participant_folder(job.output, job.participant)
    selections = {}
    for protocol in protocols:
        try:
            selections[protocol.name] = _selection(job, protocol)
        except Exception as exc:  # one protocol's missing runs do not stop the others
            records[protocol.name]["status"] = failure_reason(exc)
    for protocol in protocols:
        if protocol.kind != "fixed" or protocol.name not in selections:
            continue
        try:
            start = time.perf_counter()
            result = plan_fixed(protocol, selections[protocol.name].t1)
            records[protocol.name]["analysis_s"] = time.perf_counter() - start
            start = time.perf_counter()
            document = _save_plan(job, result, selections[protocol.name], folder / protocol.name)
            records[protocol.name].update(_target_numbers(document["qc"], document["target"]["mni_mm"], None))
            records[protocol.name]["write_s"] = time.perf_counter() - start
            _write_record(job, records[protocol.name])
        except Exception as exc:
            records[protocol.name]["status"] = failure_reason(exc)
    for group in _groups(protocols, selections):
        _run_group(job, group, selections[group[0].name], records, folder)
    return [records[p.name] for p in protocols]


def _run_group(job, group, selection, records, folder):
    """Read and clean the group's runs once; each protocol's plan, row and data-length points."""
    from tmstarget.analysis.engine import analyse, load_runs, prepare

    start = time.perf_counter()
    try:
        runs = load_runs(selection)
        cleaned = prepare(selection, group, runs=runs)
    except Exception as exc:
        for protocol in group:
            records[protocol.name]["status"] = failure_reason(exc)
        return
    prepare_s = time.perf_counter() - start
    done = []
    for protocol in group:
        record = records[protocol.name]
        record["prepare_s"] = prepare_s
        try:
            start = time.perf_counter()
            result = analyse(cleaned, protocol)
            record["analysis_s"] = time.perf_counter() - start
            start = time.perf_counter()
            document = _save_plan(job, result, selection, folder / protocol.name)
            record["write_s"] = time.perf_counter() - start
            record.update(_target_numbers(document["qc"], document["target"]["mni_mm"], document["target"]["score"]))
            record["mean_fd_mm"], record["usable_minutes"] = _qc_numbers(document["qc"])
            done.append(protocol)
        except Exception as exc:
            record["status"] = failure_reason(exc)
    del cleaned
    start = time.perf_counter()
    points = data_length_points(selection, runs, done, job.minutes)
    for protocol in done:
        records[protocol.name]["data_length"] = points[protocol.name]
        records[protocol.name]["data_length_s"] = time.perf_counter() - start
        _write_record(job, records[protocol.name])


def data_length_points(selection, runs, protocols, minutes):
    """Each protocol's target on the first L minutes of every run, for each L of ``minutes``.

    A length longer than the longest run is skipped; shorter runs are used whole. Each run is cut
    to its first ``floor(L * 60 / TR)`` volumes (frames, confounds and events together) and the cut
    runs go through the engine's cleaning and analysis as a whole scan of that length would.

    Parameters
    ----------
    selection : tmstarget.ingest.collect.Selection
    runs : list of tmstarget.ingest.runs.Run
        The loaded full runs.
    protocols : list of Protocol
        Sharing the runs and the ``[clean]`` section.
    minutes : sequence of float

    Returns
    -------
    dict
        ``protocol name -> list of points`` (``minutes``, ``x_mni``, ``y_mni``, ``z_mni``, ``score``,
        ``p_fwe``, ``significant``, ``split_half_mm``, ``bootstrap_spread_mm``, ``status``).
    """
    from tmstarget.analysis.engine import analyse, prepare
    from tmstarget.ingest.runs import truncate_run

    points = {p.name: [] for p in protocols}
    if not protocols:
        return points
    longest_s = max(run.n_volumes * run.t_r for run in runs)
    for length in minutes:
        if length * 60.0 > longest_s + 1e-6:
            continue
        blank = {"minutes": float(length), "x_mni": None, "y_mni": None, "z_mni": None, "score": None,
                 "p_fwe": None, "significant": None, "split_half_mm": None, "bootstrap_spread_mm": None}
        try:
            cut = [truncate_run(run, min(run.n_volumes, math.floor(length * 60.0 / run.t_r + 1e-9)))
                   for run in runs]
            cleaned = prepare(selection, protocols, runs=cut)
        except Exception as exc:
            for protocol in protocols:
                points[protocol.name].append({**blank, "status": failure_reason(exc)})
            continue
        for protocol in protocols:
            try:
                result = analyse(cleaned, protocol)
                numbers = _target_numbers(result.qc, result.target.ras_mm, result.target.score)
                points[protocol.name].append({**blank, **numbers, "status": "ok"})
            except Exception as exc:
                points[protocol.name].append({**blank, "status": failure_reason(exc)})
        del cleaned
    return points
