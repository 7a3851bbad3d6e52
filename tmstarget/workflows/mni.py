"""Preprocessed runs in MNI space -> plan: fMRIPrep/BIDS derivatives or explicit files.

The engine plans in MNI152NLin2009cAsym; with fMRIPrep's native T1w and its
transforms the result is re-expressed in that T1w
(:mod:`tmstarget.workflows.fmriprep_t1w`), else the coil goes on the MNI-space T1
when one is known.
"""

from pathlib import Path

from tmstarget.errors import InputError
from tmstarget.ingest.collect import ExplicitRun, Selection
from tmstarget.workflows.inputs import check_inputs_exist


def _explicit_runs(request):
    """Rest runs, blocks-design task runs and runs per state from the explicit files of ``request``."""
    if request.rest_confounds and len(request.rest_confounds) != len(request.rest_bold):
        raise InputError(f"{len(request.rest_confounds)} --rest-confounds for {len(request.rest_bold)} --rest-bold")
    rest = [ExplicitRun(bold=b, confounds=(request.rest_confounds[i] if request.rest_confounds else None),
                        label=f"rest_run-{i + 1}") for i, b in enumerate(request.rest_bold)]
    blocks, by_state = [], {}
    plain_conf = [c for s, c in request.task_confounds if s is None]
    state_conf = {s: c for s, c in request.task_confounds if s is not None}
    for state, path in request.task_bold:
        if state is None:
            i = len(blocks)
            if i >= len(request.events):
                raise InputError("each blocks-design --task-bold needs its --events file", path=path)
            blocks.append(ExplicitRun(bold=path, confounds=plain_conf[i] if i < len(plain_conf) else None,
                                      events=request.events[i], label=f"task_run-{i + 1}"))
        else:
            by_state.setdefault(state, []).append(
                ExplicitRun(bold=path, confounds=state_conf.get(state), label=f"task-{state}"))
    return rest, blocks, by_state


def _fixed_selection(request):
    """No runs for a fixed-target protocol: only the T1 (explicit, or fMRIPrep's MNI-space T1w)."""
    from tmstarget.ingest.fmriprep import find_t1, resolve_dataset

    t1 = request.t1
    inputs = []
    if t1 is None and request.dataset is not None and request.participant:
        fmriprep_dir, _ = resolve_dataset(request.dataset, request.bids_dir)
        t1 = find_t1(fmriprep_dir, request.participant)
        inputs.append(request.dataset)
    return Selection([], t1, None, inputs + ([Path(t1)] if t1 else []))


def plan_request_mni(request, protocol, *, command=None, output=None, force=False, progress=None):
    """Plan on preprocessed MNI-space runs (a dataset folder and/or explicit files).

    Parameters
    ----------
    request : tmstarget.workflows.PlanRequest
        Not native (no DICOM, ``native`` False).
    protocol : tmstarget.protocol.Protocol
    command : list of str, optional
        Command line, for provenance.
    output : Path, optional
        Plan folder checked (``force``, never over an input or in a dataset tree) before any work.
    force : bool
    progress : callable, optional

    Returns
    -------
    tmstarget.outputs.plan.Plan
        In T1w (fMRIPrep's native T1w through its transforms) or MNI152NLin2009cAsym.
    """
    from tmstarget.analysis.engine import SPACE, plan
    from tmstarget.coil.plan_coils import place_coils
    from tmstarget.ingest.collect import select_runs
    from tmstarget.ingest.fmriprep import resolve_dataset
    from tmstarget.ingest.read import read_image
    from tmstarget.outputs.plan import build_plan
    from tmstarget.outputs.plan_folder import check_output_dir
    from tmstarget.workflows.fmriprep_t1w import choose_fmriprep_space, fmriprep_plan_to_t1w

    if request.slice_timing:
        raise InputError("--slice-timing is for raw runs (--rest-dicom/--task-dicom, or --native); preprocessed "
                         "runs were already slice-timing corrected or not by their pipeline")
    rest, blocks, by_state = _explicit_runs(request)
    check_inputs_exist(request)
    if protocol.kind == "connectivity" and request.dataset is None and not (rest or blocks or by_state):
        raise InputError("give a dataset folder (with --participant) or explicit files (--rest-bold/--task-bold)")
    selection = select_runs(
        protocol.states, dataset=request.dataset, participant=request.participant, rest_task=request.rest_task,
        task=request.task, bids_dir=request.bids_dir, explicit_rest=rest, explicit_task=blocks,
        explicit_state_runs=by_state, t1=request.t1, mask=request.mask,
    ) if protocol.kind == "connectivity" else _fixed_selection(request)
    if output is not None:
        check_output_dir(output, force, selection.inputs)
    # a corrupt T1 fails now, not after the analysis (read once: the coil placement takes this image)
    t1_img = read_image(selection.t1, "T1") if selection.t1 is not None else None
    fmriprep_dir = resolve_dataset(request.dataset, request.bids_dir)[0] if request.dataset is not None else None
    anatomy_t1w, space_note = choose_fmriprep_space(
        fmriprep_dir, request.participant, request.space, mni_t1_path=None if request.t1 else selection.t1,
        explicit_t1=request.t1 is not None)
    result = plan(selection, protocol, t_r=request.t_r, progress=progress)
    result.qc["space_choice"] = space_note
    coils = anatomy = None
    if anatomy_t1w is not None:
        _say(progress, "mapping the targets MNI -> T1w (fMRIPrep's transforms) and placing the coil on the T1w scalp")
        result, coils, anatomy = fmriprep_plan_to_t1w(result, anatomy_t1w)
    elif selection.t1 is not None:
        _say(progress, "placing the coil on the scalp")
        _, coils, anatomy = place_coils(result, selection.t1, t1_img=t1_img)
    _say(progress, "writing outputs")
    roots = [root for root in (request.dataset, request.bids_dir) if root is not None]
    return build_plan(result, request.subject, command=command, inputs=selection.inputs, coils=coils, roots=roots,
                      anatomy=anatomy, grid_space=SPACE if anatomy_t1w is not None else None)


def _say(progress, message):
    if progress is not None:
        progress(message)
