"""Load and check one functional run: BOLD image, TR, confounds, events, mask.

Every check raises :class:`~tmstarget.errors.InputError` naming the file and,
where it applies, the column, row or volume, before any output is written.
"""

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from tmstarget.errors import InputError
from tmstarget.ingest.read import read_image, read_json, read_table

MOTION_COLUMNS = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
TR_TOLERANCE_S = 1e-3


@dataclass
class Run:
    """One functional run, headers loaded and checked; data read on demand.

    Attributes
    ----------
    label : str
        BIDS-style label (``task-rest_run-1``), used in QC and file names.
    state : str or None
        The brain state the whole run represents (``'rest'``, or a state
        name in the separate-runs design); None for a run whose states come
        from ``events`` blocks.
    img : nibabel.Nifti1Image
        4-D BOLD (data not yet read).
    t_r : float
        Repetition time (s).
    confounds : pandas.DataFrame or None
    events : pandas.DataFrame or None
        Columns ``onset``, ``duration``, ``trial_type`` (s, relative to the
        first volume of the file).
    paths : dict
        ``role -> Path`` of every file read (for provenance).
    frame_offset_s : float
        When, after the start of its volume, a frame's data were sampled:
        0 (the volume's start, as acquired) or the slice-timing reference
        when the sidecar says the run was slice-timing corrected
        (:func:`slice_timing_offset`). Frame ``k`` is at ``k * t_r + frame_offset_s``.
    """

    label: str
    state: str | None
    img: nib.Nifti1Image
    t_r: float
    confounds: pd.DataFrame | None
    events: pd.DataFrame | None
    paths: dict
    frame_offset_s: float = 0.0

    @property
    def n_volumes(self):
        return self.img.shape[3]


def load_bold(path):
    """Open a 4-D BOLD NIfTI (checked complete, data read on demand) or raise a one-line InputError."""
    img = read_image(path, "BOLD")
    if img.ndim != 4:
        raise InputError(f"expected a 4-D BOLD image, got a {img.ndim}-D image of shape {img.shape}", path=path)
    if img.shape[3] < 2:
        raise InputError(f"a BOLD run needs at least 2 volumes; got {img.shape[3]}", path=path)
    return img


def header_tr(img):
    """TR (s) from the NIfTI header, honouring its time unit; None when unset."""
    tr = float(img.header.get_zooms()[3])
    unit = img.header.get_xyzt_units()[1]
    if unit == "msec":
        tr /= 1000.0
    elif unit == "usec":
        tr /= 1e6
    return tr if tr > 0 else None


def resolve_tr(img, bold_path, sidecar_path=None, t_r=None):
    """Repetition time from the header, checked against the sidecar and the user.

    Raises when the sources disagree by more than 1 ms: a wrong TR shifts every
    event and every filter frequency.
    """
    sources = {}
    head = header_tr(img)
    if head is not None:
        sources[f"NIfTI header of {Path(bold_path).name}"] = head
    if sidecar_path is not None:
        meta = read_json(sidecar_path, "sidecar")
        if "RepetitionTime" in meta:
            value = meta["RepetitionTime"]
            if not isinstance(value, (int, float)) or value <= 0:
                raise InputError(f"RepetitionTime must be a positive number of seconds; got {value!r}",
                                 path=sidecar_path, key="RepetitionTime")
            sources[f"sidecar {Path(sidecar_path).name}"] = float(value)
    if t_r is not None:
        sources["--tr"] = float(t_r)
    if not sources:
        raise InputError("no repetition time in the header or a sidecar; give --tr", path=bold_path)
    values = list(sources.values())
    if max(values) - min(values) > TR_TOLERANCE_S:
        listing = ", ".join(f"{k}: {v:g} s" for k, v in sources.items())
        raise InputError(f"repetition times disagree ({listing})", path=bold_path)
    return values[-1] if t_r is not None else values[0]


def slice_timing_offset(sidecar_path, t_r):
    """Time (s) after each volume's start that a slice-timing corrected run represents; 0 when not corrected.

    fMRIPrep (and ``tmstarget plan --slice-timing``) interpolate every slice to
    one reference time and record it in the BOLD sidecar as
    ``"SliceTimingCorrected": true`` with ``"StartTime"`` (s). When the flag is
    true and ``StartTime`` is absent, the reference is taken as the middle of
    the TR (``t_r / 2``: fMRIPrep's default reference, and the one
    ``--slice-timing`` uses, whose sidecars say only ``SliceTimingCorrected``).

    Parameters
    ----------
    sidecar_path : path or None
    t_r : float

    Returns
    -------
    float
    """
    if sidecar_path is None:
        return 0.0
    meta = read_json(sidecar_path, "sidecar")
    corrected = meta.get("SliceTimingCorrected", False)
    if not isinstance(corrected, bool):
        raise InputError(f"SliceTimingCorrected must be true or false; got {corrected!r}", path=sidecar_path,
                         key="SliceTimingCorrected")
    if not corrected:
        return 0.0
    start = meta.get("StartTime", t_r / 2.0)
    if not isinstance(start, (int, float)) or isinstance(start, bool) or not 0 <= start <= t_r:
        raise InputError(f"StartTime must be a number of seconds in [0, TR = {t_r:g}]; got {start!r}",
                         path=sidecar_path, key="StartTime")
    return float(start)


def load_confounds(path, n_volumes):
    """Read an fMRIPrep-style confounds TSV (``n/a`` allowed) and check its length."""
    table = read_table(path, "confounds", na_values=["n/a", "N/A", "NaN", "nan"])
    if len(table) != n_volumes:
        raise InputError(f"confounds have {len(table)} rows but the BOLD run has {n_volumes} volumes", path=path)
    return table


def load_events(path, n_volumes, t_r):
    """Read a BIDS events TSV and check every block lies inside the run.

    Raises
    ------
    InputError
        Missing columns, non-numeric or negative times, or a block beyond the
        run's end (row number given, counting the header as row 1).
    """
    table = read_table(path, "events", na_values=["n/a"], dtype={"trial_type": str})
    for column in ("onset", "duration", "trial_type"):
        if column not in table.columns:
            raise InputError(f"events need a '{column}' column; found {list(table.columns)}", path=path, key=column)
    for column in ("onset", "duration"):
        values = pd.to_numeric(table[column], errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy() | (values.to_numpy() < 0))
        if bad.size:
            raise InputError(
                f"row {bad[0] + 2}: {column} must be a number >= 0; got {table[column].iloc[bad[0]]!r}",
                path=path, key=column,
            )
        table[column] = values
    run_end = n_volumes * t_r
    ends = table["onset"] + table["duration"]
    outside = np.flatnonzero(ends.to_numpy() > run_end + 1e-6)
    if outside.size:
        row = outside[0]
        raise InputError(
            f"row {row + 2}: event '{table['trial_type'].iloc[row]}' ends at {ends.iloc[row]:g} s, after the run ends "
            f"({n_volumes} volumes x {t_r:g} s = {run_end:g} s)",
            path=path, key="onset",
        )
    if table["trial_type"].isna().any():
        row = int(np.flatnonzero(table["trial_type"].isna().to_numpy())[0])
        raise InputError(f"row {row + 2}: trial_type is empty", path=path, key="trial_type")
    return table[["onset", "duration", "trial_type"]].reset_index(drop=True)


def motion_params(confounds, path=None):
    """The six rigid-body parameters (mm, rad) from fMRIPrep confound columns, shape (T, 6)."""
    missing = [c for c in MOTION_COLUMNS if c not in confounds.columns]
    if missing:
        raise InputError(f"confounds lack motion columns {missing}", path=path, key=missing[0])
    params = confounds[list(MOTION_COLUMNS)].to_numpy(dtype=float)
    if not np.isfinite(params).all():
        row = int(np.flatnonzero(~np.isfinite(params).all(axis=1))[0])
        raise InputError(f"motion parameters are not finite at row {row + 2}", path=path, key="trans_x")
    return params


def confound_column(confounds, column, path=None, why=""):
    """One confound column as float array; ``n/a`` rows must not be present."""
    if column not in confounds.columns:
        raise InputError(f"confounds lack the column '{column}'{why}", path=path, key=column)
    values = confounds[column].to_numpy(dtype=float)
    if not np.isfinite(values).all():
        row = int(np.flatnonzero(~np.isfinite(values))[0])
        raise InputError(f"column '{column}' is not finite at row {row + 2}", path=path, key=column)
    return values


def load_mask(path, bold_img, bold_path):
    """Brain mask on the BOLD grid (shape and affine must match within 1e-3 mm)."""
    mask_img = read_image(path, "brain mask")
    data = np.asanyarray(mask_img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.shape != bold_img.shape[:3] or not np.allclose(mask_img.affine, bold_img.affine, atol=1e-3):
        raise InputError(
            f"mask grid {data.shape} does not match the BOLD grid {bold_img.shape[:3]} of {Path(bold_path).name} "
            f"(affines {'equal' if np.allclose(mask_img.affine, bold_img.affine, atol=1e-3) else 'differ'}); "
            "resample the mask or give the matching one",
            path=path,
        )
    mask = data > 0
    if not mask.any():
        raise InputError("brain mask is empty", path=path)
    return mask


def load_run(files, state=None, t_r=None, label=None):
    """Open and check one run from a :class:`~tmstarget.ingest.fmriprep.RunFiles`-like object.

    Parameters
    ----------
    files : object with ``bold``, ``confounds``, ``sidecar``, ``events`` paths
    state : str, optional
        State of the whole run (``'rest'`` or a separate-run state).
    t_r : float, optional
        User-given TR, checked against the header and sidecar.
    label : str, optional
        Defaults to ``files.label``.
    """
    img = load_bold(files.bold)
    tr = resolve_tr(img, files.bold, files.sidecar, t_r)
    n = img.shape[3]
    confounds = load_confounds(files.confounds, n) if files.confounds is not None else None
    events = load_events(files.events, n, tr) if files.events is not None else None
    paths = {"bold": Path(files.bold), "source": Path(getattr(files, "source", None) or files.bold)}
    for role in ("confounds", "sidecar", "events", "mask"):
        value = getattr(files, role, None)
        if value is not None:
            paths[role] = Path(value)
    offset = slice_timing_offset(files.sidecar, tr) if getattr(files, "sidecar", None) is not None else 0.0
    return Run(label=label or files.label, state=state, img=img, t_r=tr, confounds=confounds,
               events=events, paths=paths, frame_offset_s=offset)


def truncate_run(run, n_volumes):
    """The first ``n_volumes`` of a run, as if the scan had stopped there.

    The BOLD frames, the confounds rows and the events are cut together:
    events starting at or after the new end are dropped and a block running
    past it is shortened to end there. Everything else (TR, frame timing,
    paths for provenance) is kept.

    Parameters
    ----------
    run : Run
    n_volumes : int
        Volumes to keep, 2 <= n_volumes <= ``run.n_volumes``.

    Returns
    -------
    Run
        A new run; ``img`` holds the kept frames in memory.
    """
    if not 2 <= n_volumes <= run.n_volumes:
        raise InputError(f"cannot keep {n_volumes} of the {run.n_volumes} volumes of run {run.label}",
                         path=run.paths.get("bold"))
    img = run.img if n_volumes == run.n_volumes else run.img.slicer[..., :n_volumes]
    confounds = None if run.confounds is None else run.confounds.iloc[:n_volumes].reset_index(drop=True)
    events = None
    if run.events is not None:
        end = n_volumes * run.t_r
        events = run.events[run.events["onset"] < end].reset_index(drop=True)
        events["duration"] = np.minimum(events["duration"], end - events["onset"])
    return Run(label=run.label, state=run.state, img=img, t_r=run.t_r, confounds=confounds, events=events,
               paths=dict(run.paths), frame_offset_s=run.frame_offset_s)
