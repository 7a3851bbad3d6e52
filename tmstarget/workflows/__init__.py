"""Workflows: inputs -> :class:`~tmstarget.outputs.plan.Plan`, shared by every front end.

* :mod:`tmstarget.workflows.mni`: fMRIPrep/BIDS derivatives or explicit preprocessed
  files in MNI space (and :mod:`tmstarget.workflows.fmriprep_t1w` to report them in
  fMRIPrep's native T1w);
* :mod:`tmstarget.workflows.native`: raw runs (DICOM or NIfTI) + T1, motion
  correction and registration here, target in the T1's world.

:class:`PlanRequest` holds the inputs as the CLI and :func:`tmstarget.plan` take
them; :func:`run_plan` picks the workflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PlanRequest:
    """The inputs of one plan, as files (keyword names mirror ``tmstarget plan``'s flags).

    ``task_bold``, ``task_confounds`` and ``task_dicom`` hold ``(state, path)``
    pairs: ``state`` None for a blocks-design run (states from its events, in
    the order of ``events``), else the state of a whole run (separate-runs design).
    """

    dataset: Path | None = None
    participant: str | None = None
    rest_bold: tuple = ()
    rest_confounds: tuple = ()
    task_bold: tuple = ()
    task_confounds: tuple = ()
    events: tuple = ()
    mask: Path | None = None
    t1: Path | None = None
    rest_dicom: tuple = ()
    task_dicom: tuple = ()
    t1_dicom: Path | None = None
    native: bool = False
    space: str | None = None
    bids_dir: Path | None = None
    rest_task: str = "rest"
    task: str = "rumination"
    t_r: float | None = None
    series: int | str | None = None
    slice_timing: bool = False
    work_dir: Path | None = None

    @property
    def native_requested(self) -> bool:
        """Raw runs: DICOM folders, or NIfTI runs flagged ``native``."""
        return bool(self.rest_dicom or self.task_dicom or self.t1_dicom or self.native)

    @property
    def subject(self) -> str | None:
        """Participant label: ``participant``, else the one ``sub-<label>`` all input file names share, else None."""
        from tmstarget.ingest.fmriprep import parse_entities, participant_label

        if self.participant:
            return participant_label(self.participant)
        paths = [*self.rest_bold, *self.rest_confounds, *(p for _, p in self.task_bold),
                 *(p for _, p in self.task_confounds), *self.events, self.mask, self.t1]
        labels = {parse_entities(Path(p).name).get("sub") for p in paths if p is not None}
        return labels.pop() if len(labels) == 1 and None not in labels else None

    @property
    def label(self) -> str:
        """Participant label used in file names of intermediate files (``"anonymous"`` without one)."""
        return self.subject or "anonymous"


def run_plan(request: PlanRequest, protocol, *, command=None, output=None, force=False, progress=None):
    """Compute the plan of ``request`` with the native or the MNI workflow.

    Parameters
    ----------
    request : PlanRequest
    protocol : tmstarget.protocol.Protocol
    command : list of str, optional
        Command line, for provenance.
    output : Path, optional
        Plan folder checked (``force``, see
        :func:`~tmstarget.outputs.plan_folder.check_output_dir`) before any
        work: after the options are checked and the inputs found
        (:func:`~tmstarget.workflows.inputs.check_inputs_exist`), so a missing input is named first.
    force : bool
    progress : callable, optional
        Called with a message at the start of each stage.

    Returns
    -------
    tmstarget.outputs.plan.Plan
    """
    if request.native_requested:
        from tmstarget.workflows.native import plan_request_native

        return plan_request_native(request, protocol, command=command, output=output, force=force,
                                   progress=progress)
    from tmstarget.workflows.mni import plan_request_mni

    return plan_request_mni(request, protocol, command=command, output=output, force=force, progress=progress)
