"""Find a participant's runs in an fMRIPrep derivatives folder (fMRIPrep's own names).

For each preprocessed BOLD run in MNI152NLin2009cAsym space this finds the
confounds TSV, the brain mask, the JSON sidecar and the events TSV (beside the
BOLD file, or in the raw BIDS dataset), and the participant's MNI-space T1w.
"""

import re
from dataclasses import dataclass
from pathlib import Path

from tmstarget.errors import InputError

SPACE = "MNI152NLin2009cAsym"
_ENTITY = re.compile(r"([a-zA-Z]+)-([a-zA-Z0-9+]+)")
# Entities that identify one acquisition (space/res/desc only say how it was resampled).
_RUN_KEYS = ("sub", "ses", "task", "acq", "ce", "rec", "dir", "run", "echo")


def parse_entities(name):
    """BIDS entities of a file name, e.g. ``{'sub': '01', 'task': 'rest', ...}``."""
    stem = name.split(".", 1)[0]
    parts = stem.split("_")
    return dict(m.groups() for part in parts[:-1] if (m := _ENTITY.fullmatch(part)))


def participant_label(label):
    """``'sub-01'`` or ``'01'`` -> ``'01'`` (checked: letters and digits only)."""
    label = label[4:] if label.startswith("sub-") else label
    if not re.fullmatch(r"[a-zA-Z0-9]+", label or ""):
        raise InputError(f"participant label must be letters and digits (e.g. 01); got {label!r}")
    return label


@dataclass(frozen=True)
class RunFiles:
    """Paths of one run; ``events`` and ``mask`` may be None."""

    bold: Path
    confounds: Path | None
    sidecar: Path | None
    mask: Path | None
    events: Path | None
    entities: dict

    @property
    def label(self):
        """Short BIDS-style label, e.g. ``ses-1_task-rest_run-2``."""
        keys = [k for k in _RUN_KEYS if k != "sub" and k in self.entities]
        return "_".join(f"{k}-{self.entities[k]}" for k in keys)


def resolve_dataset(folder, bids_dir=None):
    """Return ``(fmriprep_dir, bids_dir)`` for a dataset folder.

    ``folder`` may be the fMRIPrep derivatives folder itself, or a BIDS root
    holding ``derivatives/fmriprep``.  When ``bids_dir`` is not given and the
    derivatives folder sits inside a BIDS root, that root is used for events.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("dataset folder not found", path=folder)
    nested = folder / "derivatives" / "fmriprep"
    if nested.is_dir():
        return nested, Path(bids_dir) if bids_dir else folder
    if bids_dir is None and folder.parent.name == "derivatives":
        candidate = folder.parent.parent
        if (candidate / "dataset_description.json").is_file():
            bids_dir = candidate
    return folder, Path(bids_dir) if bids_dir else None


def _sibling(bold, suffix):
    """fMRIPrep sibling of a preproc BOLD file with space/res/desc replaced."""
    ents = parse_entities(bold.name)
    keys = [k for k in _RUN_KEYS if k in ents]
    stem = "_".join(f"{k}-{ents[k]}" for k in keys)
    return bold.parent / f"{stem}_{suffix}"


def _events_for(bold, bids_dir):
    ents = parse_entities(bold.name)
    keys = [k for k in _RUN_KEYS if k in ents and k != "echo"]
    name = "_".join(f"{k}-{ents[k]}" for k in keys) + "_events.tsv"
    beside = bold.parent / name
    if beside.is_file():
        return beside
    if bids_dir is not None:
        sub_dir = Path(bids_dir) / f"sub-{ents['sub']}"
        if "ses" in ents:
            sub_dir = sub_dir / f"ses-{ents['ses']}"
        candidate = sub_dir / "func" / name
        if candidate.is_file():
            return candidate
    return None


def find_runs(fmriprep_dir, participant, task, bids_dir=None, space=SPACE):
    """All preprocessed runs of one task for one participant, sorted by session and run.

    Parameters
    ----------
    fmriprep_dir : Path
        fMRIPrep derivatives folder.
    participant : str
        Label without or with ``sub-``.
    task : str
        BIDS task label (``rest``, ``rumination``...).
    bids_dir : Path, optional
        Raw BIDS dataset (for ``*_events.tsv``).
    space : str
        Output space of the preprocessed BOLD.

    Returns
    -------
    list of RunFiles
    """
    label = participant_label(participant)
    sub_dir = Path(fmriprep_dir) / f"sub-{label}"
    if not sub_dir.is_dir():
        raise InputError(f"no folder for participant sub-{label}", path=fmriprep_dir)
    pattern = f"sub-{label}_*task-{task}_*space-{space}_*desc-preproc_bold.nii*"
    found = sorted(sub_dir.rglob(pattern))
    runs, seen = [], {}
    for bold in found:
        ents = parse_entities(bold.name)
        if ents.get("task") != task or ents.get("space") != space:
            continue
        key = tuple(ents.get(k) for k in _RUN_KEYS)
        if key in seen:
            raise InputError(
                f"two preprocessed files for the same run ({seen[key].name} and {bold.name}); "
                "keep one resolution or pass the files explicitly",
                path=bold.parent,
            )
        seen[key] = bold
        sidecar = Path(str(bold).replace(".nii.gz", ".json").replace(".nii", ".json"))
        mask = Path(str(bold).replace("desc-preproc_bold", "desc-brain_mask"))
        confounds = _sibling(bold, "desc-confounds_timeseries.tsv")
        runs.append(
            RunFiles(
                bold=bold,
                confounds=confounds if confounds.is_file() else None,
                sidecar=sidecar if sidecar.is_file() else None,
                mask=mask if mask.is_file() else None,
                events=_events_for(bold, bids_dir),
                entities=ents,
            )
        )
    return sorted(runs, key=lambda r: (r.entities.get("ses", ""), _run_number(r.entities.get("run"))))


def _run_number(run):
    return int(run) if run and run.isdigit() else 0


def find_t1(fmriprep_dir, participant, space=SPACE):
    """The participant's ``*_space-<space>_desc-preproc_T1w.nii.gz`` (None if absent)."""
    label = participant_label(participant)
    sub_dir = Path(fmriprep_dir) / f"sub-{label}"
    found = sorted(sub_dir.rglob(f"sub-{label}_*space-{space}_*desc-preproc_T1w.nii*"))
    return found[0] if found else None
