"""Decide which runs a protocol needs and where each brain state comes from.

Two task designs are supported (science.md §3):

* **blocks**: one task run (``--task``, default ``rumination``) whose
  ``events.tsv`` holds blocks with ``trial_type`` equal to the state names;
* **separate runs**: one run per state, BIDS task label = state name
  (``task-rumination``, ``task-distraction``).

The state ``rest`` always means the resting-state run(s) (``--rest-task``).
"""

from dataclasses import dataclass, field
from pathlib import Path

from tmstarget.errors import InputError
from tmstarget.ingest.fmriprep import find_runs, find_t1, participant_label, resolve_dataset


@dataclass(frozen=True)
class ExplicitRun:
    """A run given file by file on the command line.

    ``source`` is the user's input the files were made from (a raw run or DICOM folder of a native plan, whose
    ``bold`` is an intermediate realigned file): messages about the whole run name it. Default: ``bold``.
    """

    bold: Path
    confounds: Path | None = None
    sidecar: Path | None = None
    events: Path | None = None
    mask: Path | None = None
    label: str = "run"
    entities: dict = field(default_factory=dict)
    source: Path | None = None


@dataclass
class Selection:
    """Runs to analyse: ``(files, state)`` pairs; ``state`` None = states from events blocks.

    ``grid`` builds the MNI-defined masks on the runs' grid; None means the runs
    are in MNI space (:class:`tmstarget.analysis.rois.MniGrid`). ``inputs`` are
    the files and folders read (the output must never replace or enter them, see
    :func:`tmstarget.outputs.plan_folder.check_output_dir`).
    """

    runs: list
    t1: Path | None
    mask: Path | None
    inputs: list
    grid: object = None


def _events_states(run_files):
    if run_files.events is None:
        return set()
    import pandas as pd

    from tmstarget.ingest.read import read_table

    table = read_table(run_files.events, "events", na_values=["n/a"], dtype={"trial_type": str})
    return set(table.get("trial_type", pd.Series(dtype=str)).dropna())


def select_runs(states, dataset=None, participant=None, rest_task="rest", task="rumination", bids_dir=None,
                explicit_rest=(), explicit_task=(), explicit_state_runs=None, t1=None, mask=None):
    """Find the runs that provide every state in ``states``.

    Parameters
    ----------
    states : list of str
        From the protocol (``['rest']``, ``['rumination', 'distraction']``).
    dataset : Path, optional
        fMRIPrep derivatives folder or a BIDS root holding ``derivatives/fmriprep``.
    participant : str, optional
        Needed with ``dataset``.
    explicit_rest, explicit_task : sequence of ExplicitRun
        Runs given file by file (task runs carry their events).
    explicit_state_runs : dict, optional
        ``state -> list of ExplicitRun`` for the separate-runs design.
    t1, mask : Path, optional
        Explicit T1w and brain mask (override what the dataset has).

    Returns
    -------
    Selection

    Raises
    ------
    InputError
        Saying which state is missing and where it was looked for.
    """
    explicit_state_runs = explicit_state_runs or {}
    fmriprep_dir = bids = None
    inputs = []
    if dataset is not None:
        if participant is None:
            raise InputError("--participant is needed with a dataset folder", path=dataset)
        participant = participant_label(participant)
        fmriprep_dir, bids = resolve_dataset(dataset, bids_dir)
        inputs += [Path(dataset)] + ([bids] if bids else [])

    def dataset_runs(label):
        return find_runs(fmriprep_dir, participant, label, bids) if fmriprep_dir is not None else []

    selected = []
    needed = list(states)
    if "rest" in needed:
        rest = list(explicit_rest) or dataset_runs(rest_task)
        if not rest:
            where = f"no task-{rest_task} runs for sub-{participant} in {fmriprep_dir}" if fmriprep_dir else \
                "no --rest-bold given"
            raise InputError(f"the protocol needs a resting-state run: {where}")
        selected += [(r, "rest") for r in rest]
        needed.remove("rest")
    if needed:
        block_runs = list(explicit_task) or dataset_runs(task)
        block_states = set()
        for run in block_runs:
            block_states |= _events_states(run)
        for state in needed:
            if state in block_states:
                continue
            separate = explicit_state_runs.get(state) or dataset_runs(state)
            for run in separate:
                run_states = _events_states(run) & set(needed)
                if run_states:  # a task-<state> run whose events hold blocks of the states: blocks design
                    if run not in block_runs:
                        block_runs.append(run)
                    block_states |= run_states
                else:
                    selected.append((run, state))
            if state not in block_states and not any(s == state for _, s in selected):
                found = ", ".join(sorted(block_states)) or "none"
                looked = [f"trial_type '{state}' in the events of the task-{task} runs (found: {found})"]
                looked_in = f" in {fmriprep_dir}" if fmriprep_dir else " (--task-bold STATE=FILE)"
                looked.append(f"a task-{state} run" + looked_in)
                raise InputError(f"the protocol needs the state '{state}': found neither " + " nor ".join(looked))
        if block_states & set(needed):
            for run in block_runs:
                if run.events is None:
                    raise InputError("a task run in the blocks design needs its events.tsv (--events)", path=run.bold)
                selected.append((run, None))
    if t1 is None and fmriprep_dir is not None:
        t1 = find_t1(fmriprep_dir, participant)
    for run, _ in selected:
        inputs += [Path(getattr(run, role)) for role in ("bold", "confounds", "sidecar", "events", "mask")
                   if getattr(run, role, None) is not None]
    inputs += [Path(p) for p in (t1, mask) if p]
    return Selection(selected, Path(t1) if t1 else None, Path(mask) if mask else None, inputs)

