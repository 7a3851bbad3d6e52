"""Command-line front end: ``tmstarget plan | protocols | sample | ...``.

Errors print one line (``tmstarget: error: ...``) and exit 1; ``--verbose``
adds the traceback.  Usage errors exit 2 (argparse).
"""

import argparse
import logging
import sys
import time
from pathlib import Path

from tmstarget import __version__
from tmstarget.errors import TmsTargetError
from tmstarget.cli import convert as convert_cli
from tmstarget.cli import navigation as navigation_cli
from tmstarget.cli import realtime as realtime_cli

log = logging.getLogger("tmstarget")


class Progress:
    """Stage messages on stderr with elapsed time (silent with --quiet)."""

    def __init__(self, quiet=False):
        self.quiet = quiet
        self.start = time.perf_counter()
        self.step = 0

    def __call__(self, message):
        self.step += 1
        if not self.quiet:
            print(f"[{time.perf_counter() - self.start:6.1f} s] {message}", file=sys.stderr, flush=True)


def _add_common(parser):
    parser.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks on error")


def _state_path(text):
    """``FILE`` or ``STATE=FILE`` (separate-runs design)."""
    if "=" in text and not Path(text).exists():
        state, path = text.split("=", 1)
        return state, Path(path)
    return None, Path(text)


def _build_plan_parser(sub):
    p = sub.add_parser(
        "plan",
        help="compute an individualized target from preprocessed fMRI",
        description="Compute an individualized TMS target from one participant's preprocessed fMRI "
        "(fMRIPrep derivatives in MNI152NLin2009cAsym space, or explicit files).",
        epilog="example: tmstarget plan sample_data --participant 01 --protocol rumination-dmpfc --output plan-out",
    )
    p.add_argument("dataset", nargs="?", type=Path,
                   help="fMRIPrep derivatives folder, or a BIDS root holding derivatives/fmriprep")
    p.add_argument("--protocol", default="rumination-dmpfc",
                   help="shipped protocol name (see 'tmstarget protocols') or path to a .toml file "
                   "(default: rumination-dmpfc)")
    p.add_argument("--output", "-o", type=Path, required=True, help="output folder (created; never inside the inputs)")
    p.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--participant", help="participant label (with or without 'sub-'); also names the outputs")
    p.add_argument("--task", default="rumination", help="BIDS task label of the blocks-design task run (default: rumination)")
    p.add_argument("--rest-task", default="rest", help="BIDS task label of the resting-state run (default: rest)")
    p.add_argument("--bids-dir", type=Path, help="raw BIDS dataset holding *_events.tsv")
    p.add_argument("--space", choices=["T1w", "MNI152NLin2009cAsym"],
                   help="coordinates of the target and coil for fMRIPrep inputs: T1w = the world of fMRIPrep's "
                   "native sub-<l>_desc-preproc_T1w, through its own from-T1w_to-MNI152NLin2009cAsym / "
                   "from-MNI152NLin2009cAsym_to-T1w transforms (no registration; maps stay in MNI space). "
                   "Default: T1w when that T1w and both transforms exist (and no --t1), else MNI152NLin2009cAsym")
    files = p.add_argument_group("explicit files (instead of, or on top of, a dataset folder)")
    files.add_argument("--rest-bold", type=Path, action="append", default=[], help="resting-state BOLD (repeat per run)")
    files.add_argument("--rest-confounds", type=Path, action="append", default=[], help="confounds TSV per rest run")
    files.add_argument("--task-bold", action="append", default=[],
                       help="task BOLD with events blocks, or STATE=FILE for one whole run per state (repeat)")
    files.add_argument("--task-confounds", action="append", default=[], help="confounds TSV per task run (same order, "
                       "or STATE=FILE)")
    files.add_argument("--events", type=Path, action="append", default=[], help="events TSV per blocks-design task run")
    files.add_argument("--t1", type=Path, help="T1w image in the same space")
    files.add_argument("--mask", type=Path, help="brain mask on the BOLD grid")
    files.add_argument("--tr", type=float, help="repetition time (s); checked against headers and sidecars")
    native = p.add_argument_group(
        "native space (raw scanner data: motion correction, EPI -> T1 -> MNI registration here; "
        "target in the T1's world)")
    native.add_argument("--rest-dicom", action="append", default=[], metavar="DIR",
                        help="DICOM folder of a resting-state run (repeat per run)")
    native.add_argument("--task-dicom", action="append", default=[], metavar="DIR",
                        help="DICOM folder of a task run with events blocks (with --events), or STATE=DIR (repeat)")
    native.add_argument("--t1-dicom", type=Path, metavar="DIR", help="DICOM folder of the T1 (or give --t1 NIFTI)")
    native.add_argument("--series", metavar="N", help="SeriesNumber (or UID) to take from DICOM folders "
                        "holding several series")
    native.add_argument("--native", action="store_true",
                        help="--rest-bold/--task-bold are raw (not preprocessed) NIfTI runs in scanner space")
    native.add_argument("--work-dir", type=Path, help="keep intermediate files (realigned runs, confounds, "
                        "masks, transforms) here (default: a temporary folder, removed)")
    native.add_argument("--slice-timing", action="store_true",
                        help="correct slice timing (Fourier interpolation to the middle of the TR) before motion "
                        "estimation; needs SliceTiming in the DICOM headers or JSON sidecars")
    nav = p.add_argument_group("navigation files (written into OUTPUT/navigation/ when a T1 is known)")
    nav.add_argument("--navigation", action="append", default=None, metavar="FORMAT",
                     help="navigation format to write (repeat; default: all; 'none' to skip)")
    nav.add_argument("--affine", choices=["qform", "sform"],
                     help="which T1 affine the navigator uses, needed only when they differ")
    params = p.add_argument_group("protocol overrides (recorded in the outputs)")
    params.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override any protocol parameter, e.g. --set clean.fd_threshold_mm=0.3")
    params.add_argument("--fwhm", type=float, help="smoothing FWHM in mm ([clean] smoothing_fwhm_mm)")
    params.add_argument("--fd-threshold", type=float, help="scrubbing threshold in mm ([clean] fd_threshold_mm)")
    params.add_argument("--dummy-volumes", type=int, help="volumes dropped at the start ([clean] dummy_volumes)")
    params.add_argument("--gsr", action=argparse.BooleanOptionalAction, default=None,
                        help="regress the global signal ([clean] global_signal)")
    params.add_argument("--picker", choices=["peak", "cluster"], help="target picker ([target] picker)")
    _add_common(p)
    p.set_defaults(handler=run_plan)


def _overrides(args):
    shortcuts = {
        "fwhm": "clean.smoothing_fwhm_mm", "fd_threshold": "clean.fd_threshold_mm",
        "dummy_volumes": "clean.dummy_volumes", "gsr": "clean.global_signal", "picker": "target.picker",
    }
    out = list(args.overrides)
    for attr, key in shortcuts.items():
        value = getattr(args, attr)
        if value is not None:
            text = str(value).lower() if isinstance(value, bool) else (f'"{value}"' if isinstance(value, str) else value)
            out.append(f"{key}={text}")
    return out


def _explicit_runs(args):
    from tmstarget.errors import InputError
    from tmstarget.ingest.collect import ExplicitRun

    if args.rest_confounds and len(args.rest_confounds) != len(args.rest_bold):
        raise InputError(f"{len(args.rest_confounds)} --rest-confounds for {len(args.rest_bold)} --rest-bold")
    rest = [ExplicitRun(bold=b, confounds=(args.rest_confounds[i] if args.rest_confounds else None),
                        label=f"rest_run-{i + 1}") for i, b in enumerate(args.rest_bold)]
    blocks, by_state = [], {}
    confounds = [_state_path(c) for c in args.task_confounds]
    plain_conf = [c for s, c in confounds if s is None]
    state_conf = {s: c for s, c in confounds if s is not None}
    for text in args.task_bold:
        state, path = _state_path(text)
        if state is None:
            i = len(blocks)
            if i >= len(args.events):
                raise InputError("each blocks-design --task-bold needs its --events file", path=path)
            blocks.append(ExplicitRun(bold=path, confounds=plain_conf[i] if i < len(plain_conf) else None,
                                      events=args.events[i], label=f"task_run-{i + 1}"))
        else:
            by_state.setdefault(state, []).append(
                ExplicitRun(bold=path, confounds=state_conf.get(state), label=f"task-{state}"))
    return rest, blocks, by_state


def _native_requested(args):
    return bool(args.rest_dicom or args.task_dicom or args.t1_dicom or args.native)


def _native_runs(args, protocol):
    """NativeRun list (checked against the protocol's states) from --rest-dicom/--task-dicom or raw NIfTI runs."""
    from tmstarget.errors import InputError
    from tmstarget.ingest.collect import ExplicitRun, select_runs
    from tmstarget.workflows.native import NativeRun

    series = int(args.series) if args.series is not None and args.series.isdigit() else args.series
    for flag in ("rest_confounds", "task_confounds"):
        if getattr(args, flag):
            raise InputError(f"--{flag.replace('_', '-')} is for preprocessed runs; native runs get their "
                             "confounds from the motion estimation here")
    if args.mask is not None or args.dataset is not None:
        raise InputError("native mode (raw runs) takes neither a dataset folder nor --mask: the brain mask comes "
                         "from the MNI template")
    if (args.rest_bold or args.task_bold) and not args.native:
        raise InputError("--rest-bold/--task-bold next to DICOM runs: add --native if these NIfTI runs are raw")
    if args.t1 is None and args.t1_dicom is None:
        raise InputError("native mode needs the participant's T1: --t1-dicom DIR or --t1 T1.nii.gz")
    if args.t1 is not None and args.t1_dicom is not None:
        raise InputError("give either --t1 or --t1-dicom, not both")
    rest = [ExplicitRun(bold=Path(src), label=f"rest_run-{i + 1}")
            for i, src in enumerate(list(args.rest_dicom) + list(args.rest_bold))]
    blocks, by_state = [], {}
    for text in list(args.task_dicom) + list(args.task_bold):
        state, path = _state_path(text)
        if state is None:
            i = len(blocks)
            if i >= len(args.events):
                raise InputError("each blocks-design task run needs its --events file", path=path)
            blocks.append(ExplicitRun(bold=path, events=args.events[i], label=f"task_run-{i + 1}"))
        else:
            by_state.setdefault(state, []).append(ExplicitRun(bold=path, label=f"task-{state}"))
    selection = select_runs(protocol.states, explicit_rest=rest, explicit_task=blocks,
                            explicit_state_runs=by_state)
    runs = [NativeRun(Path(files.bold), state, files.label, events=files.events, series=series)
            for files, state in selection.runs]
    return runs, series


def run_native_plan(args, protocol, participant, progress):
    """The native path: raw runs + T1 -> target and coil pose in the T1's world."""
    import shutil
    import tempfile

    from tmstarget.workflows.native import finish_native_plan, prepare_native
    from tmstarget.outputs.plan_folder import check_output_dir

    if protocol.kind != "connectivity":
        from tmstarget.errors import InputError

        raise InputError(f"protocol '{protocol.name}' is a fixed target: native raw runs are not needed")
    runs, series = _native_runs(args, protocol)
    t1_source = args.t1_dicom or args.t1
    input_dirs = [r.source if r.source.is_dir() else r.source.parent for r in runs]
    input_dirs.append(t1_source if t1_source.is_dir() else t1_source.parent)
    check_output_dir(args.output, args.force, input_dirs)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="tmstarget-native-"))
    try:
        session = prepare_native(runs, t1_source, work, participant, t1_series=series, progress=progress,
                                 slice_timing=args.slice_timing)
        nav = [lambda staging: _export_navigation(staging, args)] if args.navigation else []
        document = finish_native_plan(session, protocol, args.output, participant, force=args.force,
                                      command=["tmstarget"] + sys.argv[1:], input_dirs=input_dirs, t_r=args.tr,
                                      extra_writers=nav, progress=progress)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    return document


def run_plan(args):
    from tmstarget.errors import InputError
    from tmstarget.ingest.collect import select_runs
    from tmstarget.outputs.plan_folder import check_output_dir, write_plan
    from tmstarget.ingest.fmriprep import participant_label, resolve_dataset
    from tmstarget.workflows.native import choose_fmriprep_space, fmriprep_plan_to_t1w
    from tmstarget.analysis.engine import SPACE, place_coils, plan
    from tmstarget.protocol import load_protocol

    progress = Progress(args.quiet)
    args.navigation = [] if args.navigation == ["none"] else (args.navigation or "all")
    protocol = load_protocol(args.protocol, _overrides(args))
    participant = participant_label(args.participant) if args.participant else "anonymous"
    if _native_requested(args):
        if args.space == SPACE:
            raise InputError(f"--space {SPACE}: a plan on raw runs is always in the T1's world (T1w), with the MNI "
                             "coordinate in target.mni_mm; --space is for fMRIPrep inputs")
        document = run_native_plan(args, protocol, participant, progress)
        _print_summary(document, protocol, args)
        return 0
    if args.slice_timing:
        raise InputError("--slice-timing is for raw runs (--rest-dicom/--task-dicom, or --native); preprocessed "
                         "runs were already slice-timing corrected or not by their pipeline")
    rest, blocks, by_state = _explicit_runs(args)
    if protocol.kind == "connectivity" and args.dataset is None and not (rest or blocks or by_state):
        raise InputError("give a dataset folder (with --participant) or explicit files (--rest-bold/--task-bold)")
    selection = select_runs(
        protocol.states, dataset=args.dataset, participant=args.participant, rest_task=args.rest_task,
        task=args.task, bids_dir=args.bids_dir, explicit_rest=rest, explicit_task=blocks,
        explicit_state_runs=by_state, t1=args.t1, mask=args.mask,
    ) if protocol.kind == "connectivity" else _fixed_selection(args)
    check_output_dir(args.output, args.force, selection.input_dirs)
    fmriprep_dir = resolve_dataset(args.dataset, args.bids_dir)[0] if args.dataset is not None else None
    anatomy_t1w, space_note = choose_fmriprep_space(
        fmriprep_dir, args.participant, args.space, mni_t1_path=None if args.t1 else selection.t1,
        explicit_t1=args.t1 is not None)
    result = plan(selection, protocol, t_r=args.tr, progress=progress)
    result.qc["space_choice"] = space_note
    coils = anatomy = None
    writers = []
    if anatomy_t1w is not None:
        progress("mapping the targets MNI -> T1w (fMRIPrep's transforms) and placing the coil on the T1w scalp")
        result, coils, anatomy = fmriprep_plan_to_t1w(result, anatomy_t1w)
    elif selection.t1 is not None:
        progress("placing the coil on the scalp")
        _, coils, anatomy = place_coils(result, selection.t1)
    if coils is not None and args.navigation:
        writers.append(lambda staging: _export_navigation(staging, args))
    progress("writing outputs")
    document = write_plan(result, args.output, participant, force=args.force, command=["tmstarget"] + sys.argv[1:],
                          input_dirs=selection.input_dirs, coils=coils, anatomy=anatomy, extra_writers=writers,
                          grid_space=SPACE if anatomy_t1w is not None else None)
    _print_summary(document, protocol, args)
    return 0


def _print_summary(document, protocol, args):
    t = document["target"]
    if not args.quiet:
        score = "" if t["score"] is None else f", score {t['score']:+.3f}"
        where = f"MNI {t['ras_mm']} mm" if document["space"].startswith("MNI") else \
            f"{document['space']} {t['ras_mm']} mm (MNI {t['mni_mm']} mm)"
        print(f"target ({protocol.name}): {where}{score}, method {t['method']} -> {args.output}/target.json")
        choice = document["qc"].get("space_choice") or (
            "T1w: world of the T1, registered here" if document["space"] == "T1w" else document["space"])
        print(f"space: {choice}")
        if document["coil"]:
            c = document["coil"]
            depth = f"scalp-to-cortex {c['scalp_to_cortex_mm']:.1f} mm" if c["scalp_to_cortex_mm"] is not None \
                else f"scalp-to-target {c['scalp_to_target_mm']:.1f} mm (no brain mask)"
            print(f"coil centre on the scalp: {[round(v, 1) for v in c['centre_ras_mm']]} mm, {depth}, "
                  f"handle {c['handle_rule']}")
        for warning in document["qc"].get("warnings", []):
            print(f"warning: {warning}", file=sys.stderr)


def _export_navigation(plan_dir, args):
    """Navigation files into the plan; by default ('all') a T1 the navigators disagree on is skipped, not fatal."""
    from tmstarget.errors import OrientationError
    from tmstarget.navigation.export import export_plan

    try:
        export_plan(plan_dir, args.navigation, t1_choice=args.affine)
    except OrientationError as exc:
        if args.navigation != "all":
            raise
        print(f"warning: navigation files not written: {exc} (run 'tmstarget export' with --affine)",
              file=sys.stderr)


def _fixed_selection(args):
    from tmstarget.ingest.collect import Selection
    from tmstarget.ingest.fmriprep import find_t1, resolve_dataset

    t1 = args.t1
    dirs = []
    if t1 is None and args.dataset is not None and args.participant:
        fmriprep_dir, _ = resolve_dataset(args.dataset, args.bids_dir)
        t1 = find_t1(fmriprep_dir, args.participant)
        dirs.append(args.dataset)
    return Selection([], t1, None, dirs + ([Path(t1).parent] if t1 else []))


def _build_protocols_parser(sub):
    p = sub.add_parser("protocols", help="list the shipped protocols", description="List the shipped protocols.",
                       epilog="example: tmstarget protocols")
    p.add_argument("--show", metavar="NAME", help="print one protocol's TOML (resolved with defaults)")
    _add_common(p)
    p.set_defaults(handler=run_protocols)


def run_protocols(args):
    from tmstarget.protocol import builtin_protocol_names, load_protocol

    if args.show:
        protocol = load_protocol(args.show)
        print(protocol.toml_text, end="")
        return 0
    for name in builtin_protocol_names():
        protocol = load_protocol(name)
        print(f"{name:18s} {protocol.description}")
    return 0


def _build_sample_parser(sub):
    p = sub.add_parser("sample", help="write a synthetic patient (fMRIPrep layout) with known planted targets",
                       description="Write a deterministic synthetic patient with planted targets and ground_truth.json.",
                       epilog="example: tmstarget sample /tmp/patient --voxel-mm 3 --task-volumes 240")
    p.add_argument("output", type=Path)
    p.add_argument("--voxel-mm", type=float, default=4.0)
    p.add_argument("--rest-volumes", type=int, default=150)
    p.add_argument("--task-volumes", type=int, default=200)
    p.add_argument("--design", choices=["blocks", "separate"], default="blocks")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true")
    _add_common(p)
    p.set_defaults(handler=run_sample)


def run_sample(args):
    from tmstarget.outputs.plan_folder import check_output_dir
    from tmstarget.testing.patient import SyntheticConfig, make_patient

    check_output_dir(args.output, args.force)
    cfg = SyntheticConfig(voxel_mm=args.voxel_mm, n_rest=args.rest_volumes, n_task=args.task_volumes,
                          design=args.design, seed=args.seed)
    make_patient(args.output, cfg)
    if not args.quiet:
        print(f"synthetic patient written to {args.output} (ground truth in ground_truth.json)")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="tmstarget",
        description="Individualized TMS targets for depression from one patient's fMRI.",
    )
    parser.add_argument("--version", action="version", version=f"tmstarget {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _build_plan_parser(sub)
    _build_protocols_parser(sub)
    _build_sample_parser(sub)
    convert_cli.add_subcommand(sub)
    navigation_cli.add_subcommands(sub)
    realtime_cli.add_subcommands(sub, _add_common, Progress)
    return parser


def main(argv=None):
    """Entry point of the ``tmstarget`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose, quiet = getattr(args, "verbose", False), getattr(args, "quiet", False)
    logging.basicConfig(
        level=logging.DEBUG if verbose else (logging.ERROR if quiet else logging.WARNING),
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.handler(args)
    except TmsTargetError as exc:
        if verbose:
            raise
        print(f"tmstarget: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tmstarget: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
