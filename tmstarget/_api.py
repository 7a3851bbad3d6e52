"""The Python API behind :func:`tmstarget.plan`: inputs as paths or objects in memory -> :class:`Plan`."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from os import PathLike
from pathlib import Path
from typing import Any

from tmstarget.errors import InputError

#: A run argument: a path, or an object in memory (a nibabel image, anything nilearn's ``check_niimg`` takes;
#: a pandas DataFrame for confounds and events).
RunInput = Any


def plan(
    dataset: str | PathLike | None = None,
    *,
    participant: str | None = None,
    protocol: Any = "rumination-dmpfc",
    overrides: Mapping[str, Any] | None = None,
    rest_bold: RunInput | list | None = None,
    rest_confounds: RunInput | list | None = None,
    task_bold: RunInput | list | Mapping[str, RunInput] | None = None,
    task_confounds: RunInput | list | Mapping[str, RunInput] | None = None,
    events: RunInput | list | None = None,
    mask: RunInput | None = None,
    t1: RunInput | None = None,
    rest_dicom: str | PathLike | list | None = None,
    task_dicom: str | PathLike | list | Mapping[str, str | PathLike] | None = None,
    t1_dicom: str | PathLike | None = None,
    native: bool = False,
    space: str | None = None,
    bids_dir: str | PathLike | None = None,
    rest_task: str = "rest",
    task: str = "rumination",
    t_r: float | None = None,
    series: int | str | None = None,
    slice_timing: bool = False,
    work_dir: str | PathLike | None = None,
    require_significant: bool = False,
    progress: Callable[[str], None] | None = None,
):
    """Compute an individualized TMS target from one participant's fMRI.

    The keyword names mirror the flags of ``tmstarget plan``. Run arguments
    take a path or an object in memory; several runs as a list.

    Parameters
    ----------
    dataset : str or Path, optional
        fMRIPrep derivatives folder, or a BIDS root holding
        ``derivatives/fmriprep`` (with ``participant``).
    participant : str, optional
        Participant label (with or without ``sub-``); also names the outputs.
    protocol : str, Path or Protocol, default="rumination-dmpfc"
        A shipped protocol name, a path to a ``.toml`` file, or a
        :class:`~tmstarget.Protocol` (from :func:`tmstarget.load_protocol`).
    overrides : mapping, optional
        Protocol parameters to override, e.g. ``{"clean.smoothing_fwhm_mm": 4}``
        (recorded in the outputs). Not with a Protocol object: give its
        overrides to :func:`tmstarget.load_protocol`.
    rest_bold : path, image or list, optional
        Preprocessed resting-state BOLD in MNI space (one per run); a path or a
        4-D image (nibabel image, or anything nilearn's ``check_niimg`` accepts).
    rest_confounds : path, pandas.DataFrame or list, optional
        fMRIPrep-style confounds table per rest run.
    task_bold : path, image, list or mapping, optional
        Task BOLD with events blocks (one per run, with ``events``), or a
        mapping state -> run (or list of runs) for the separate-runs design.
    task_confounds : path, pandas.DataFrame, list or mapping, optional
        Confounds per task run (same order), or a mapping state -> confounds.
    events : path, pandas.DataFrame or list, optional
        BIDS events table per blocks-design task run.
    mask : path or image, optional
        Brain mask on the BOLD grid.
    t1 : path or image, optional
        T1w image: in MNI space for preprocessed runs (coil placement), the
        participant's own T1 for raw runs.
    rest_dicom, task_dicom : path or list, optional
        DICOM folders of raw runs (``task_dicom`` also a mapping state -> folder).
    t1_dicom : path, optional
        DICOM folder of the T1.
    native : bool, default=False
        ``rest_bold``/``task_bold`` are raw (not preprocessed) runs in scanner
        space: motion correction and registration are run here.
    space : {None, "T1w", "MNI152NLin2009cAsym"}
        Coordinates of the target for fMRIPrep inputs (see ``tmstarget plan --space``).
    bids_dir : str or Path, optional
        Raw BIDS dataset holding the ``*_events.tsv``.
    rest_task, task : str
        BIDS task labels of the resting-state and the blocks-design task runs.
    t_r : float, optional
        Repetition time (s), checked against headers and sidecars.
    series : int or str, optional
        SeriesNumber (or UID) to take from DICOM folders holding several series.
    slice_timing : bool, default=False
        Correct slice timing of raw runs before motion estimation.
    work_dir : str or Path, optional
        Keep the intermediate files of a native plan here.
    require_significant : bool, default=False
        Raise :class:`~tmstarget.errors.NotSignificantError` (its ``plan``
        attribute holds the plan, target marked) when the data hold no
        reliable target (``plan.qc["inference"]["significant"]`` false).
    progress : callable, optional
        Called with a message at the start of each stage.

    Returns
    -------
    Plan
        Target, candidates, maps, masks, coil, QC and provenance; ``save``
        writes the plan folder.

    Examples
    --------
    >>> import tmstarget
    >>> plan = tmstarget.plan("sample_data", participant="01", protocol="sgacc-dlpfc")  # doctest: +SKIP
    >>> plan.target.mni_mm  # doctest: +SKIP
    """
    from tmstarget.protocol import Protocol, load_protocol
    from tmstarget.workflows import PlanRequest, run_plan

    if isinstance(protocol, Protocol):
        if overrides:
            raise InputError("overrides go to tmstarget.load_protocol when the protocol is already loaded")
    else:
        protocol = load_protocol(protocol, overrides)
    scratch = tempfile.TemporaryDirectory(prefix="tmstarget-api-")
    try:
        files = _Files(Path(scratch.name))
        request = PlanRequest(
            dataset=_path(dataset), participant=participant,
            rest_bold=tuple(files.image(r, f"rest_run-{i + 1}_bold") for i, r in enumerate(_runs(rest_bold))),
            rest_confounds=tuple(files.table(c, f"rest_run-{i + 1}_confounds")
                                 for i, c in enumerate(_runs(rest_confounds))),
            task_bold=files.by_state(task_bold, "bold", files.image),
            task_confounds=files.by_state(task_confounds, "confounds", files.table),
            events=tuple(files.table(e, f"task_run-{i + 1}_events") for i, e in enumerate(_runs(events))),
            mask=None if mask is None else files.image(mask, "mask"),
            t1=None if t1 is None else files.image(t1, "T1w"),
            rest_dicom=tuple(Path(d) for d in _runs(rest_dicom)),
            task_dicom=tuple((s, Path(d)) for s, d in _state_runs(task_dicom)),
            t1_dicom=_path(t1_dicom), native=native, space=space, bids_dir=_path(bids_dir), rest_task=rest_task,
            task=task, t_r=t_r, series=series, slice_timing=slice_timing, work_dir=_path(work_dir),
        )
        result = run_plan(request, protocol, progress=progress)  # the plan holds a copy of its T1
    finally:
        scratch.cleanup()
    if require_significant:
        result.require_significant()
    return result


def _path(value):
    return None if value is None else Path(value)


def _runs(value):
    """None -> [], a list or tuple -> its items, anything else -> [it]."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _state_runs(value):
    """``(state, run)`` pairs: state None for plain runs, the key of a mapping state -> run(s)."""
    if isinstance(value, Mapping):
        return [(state, run) for state, runs in value.items() for run in _runs(runs)]
    return [(None, run) for run in _runs(value)]


class _Files:
    """Objects in memory written once into a private folder, so the engine reads the same data as from files."""

    def __init__(self, folder):
        self.folder = folder

    def image(self, value, name):
        if isinstance(value, (str, PathLike)):
            return Path(value)
        import nibabel as nib
        from nilearn.image import check_niimg

        img = check_niimg(value)
        path = self.folder / f"{name}.nii.gz"
        nib.save(img, path)
        return path

    def table(self, value, name):
        if isinstance(value, (str, PathLike)):
            return Path(value)
        import pandas as pd

        if not isinstance(value, pd.DataFrame):
            raise InputError(f"{name}: expected a path or a pandas DataFrame; got {type(value).__name__}")
        path = self.folder / f"{name}.tsv"
        value.to_csv(path, sep="\t", index=False, na_rep="n/a")
        return path

    def by_state(self, value, kind, write):
        pairs, counts = [], {}
        for state, run in _state_runs(value):
            counts[state] = counts.get(state, 0) + 1
            name = f"task_run-{counts[state]}_{kind}" if state is None else f"task-{state}_run-{counts[state]}_{kind}"
            pairs.append((state, write(run, name)))
        return tuple(pairs)
