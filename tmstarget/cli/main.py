"""Command-line front end: ``tmstarget plan | protocols | sample | ...``.

Errors print one line (``tmstarget: error: ...``) and exit 1; ``--verbose``
adds the traceback.  Usage errors exit 2 (argparse).
"""

import argparse
import gc
import logging
import sys
from pathlib import Path

from tmstarget import __version__
from tmstarget.cli import compare as compare_cli
from tmstarget.cli import convert as convert_cli
from tmstarget.cli import efield as efield_cli
from tmstarget.cli import navigation as navigation_cli
from tmstarget.cli import realtime as realtime_cli
from tmstarget.cli import view as view_cli
from tmstarget.cli._common import (
    Progress,
    add_common,
    avoid_hugepage_stalls,
    idle_blas_threads_sleep,
    navigation_formats,
    navigation_skipped,
    scene_renderer,
)
from tmstarget.errors import TmsTargetError

log = logging.getLogger("tmstarget")


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
    p.add_argument("--output", "-o", type=Path, required=True,
                   help="output folder (created; never over an input nor inside a BIDS/fMRIPrep dataset)")
    p.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--participant", help="participant label (with or without 'sub-'); also names the outputs")
    p.add_argument("--task", default="rumination",
                   help="BIDS task label of the blocks-design task run (default: rumination)")
    p.add_argument("--rest-task", default="rest", help="BIDS task label of the resting-state run (default: rest)")
    p.add_argument("--bids-dir", type=Path, help="raw BIDS dataset holding *_events.tsv")
    p.add_argument("--space", choices=["T1w", "MNI152NLin2009cAsym"],
                   help="coordinates of the target and coil for fMRIPrep inputs: T1w = the world of fMRIPrep's "
                   "native sub-<l>_desc-preproc_T1w, through its own from-T1w_to-MNI152NLin2009cAsym / "
                   "from-MNI152NLin2009cAsym_to-T1w transforms (no registration; maps stay in MNI space). "
                   "Default: T1w when that T1w and both transforms exist (and no --t1), else MNI152NLin2009cAsym")
    files = p.add_argument_group("explicit files (instead of, or on top of, a dataset folder)")
    files.add_argument("--rest-bold", type=Path, action="append", default=[],
                       help="resting-state BOLD (repeat per run)")
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
    native.add_argument("--from-watch", type=Path, metavar="WATCH_DIR",
                        help="plan the run a finished 'tmstarget watch' recorded in WATCH_DIR (its realigned run, "
                        "confounds and transforms); with --set clean.filter=cosine --set clean.low_pass_hz=0 this is "
                        "the watcher's own model")
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
    nav.add_argument("--no-report", dest="report", action="store_false",
                     help="do not write OUTPUT/report.html (the HTML report; about a second or two), for "
                     "speed-critical use; 'tmstarget report OUTPUT' writes it later")
    nav.add_argument("--require-significant", action="store_true",
                     help="when the data hold no reliable target (qc.inference.significant false), write the plan "
                     "(target marked) but no navigation files, and exit with status 1")
    params = p.add_argument_group("protocol overrides (recorded in the outputs)")
    params.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override any protocol parameter, e.g. --set clean.fd_threshold_mm=0.3")
    params.add_argument("--fwhm", type=float, help="smoothing FWHM in mm ([clean] smoothing_fwhm_mm)")
    params.add_argument("--fd-threshold", type=float, help="scrubbing threshold in mm ([clean] fd_threshold_mm)")
    params.add_argument("--dummy-volumes", type=int, help="volumes dropped at the start ([clean] dummy_volumes)")
    params.add_argument("--gsr", action=argparse.BooleanOptionalAction, default=None,
                        help="regress the global signal ([clean] global_signal)")
    params.add_argument("--picker", choices=["peak", "cluster"], help="target picker ([target] picker)")
    add_common(p)
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
            text = str(value).lower() if isinstance(value, bool) else \
                (f'"{value}"' if isinstance(value, str) else value)
            out.append(f"{key}={text}")
    return out


def _request(args):
    """The plan's inputs from the command line (``STATE=FILE`` split into pairs)."""
    from tmstarget.workflows import PlanRequest

    return PlanRequest(
        dataset=args.dataset, participant=args.participant, rest_bold=tuple(args.rest_bold),
        rest_confounds=tuple(args.rest_confounds), task_bold=tuple(_state_path(t) for t in args.task_bold),
        task_confounds=tuple(_state_path(t) for t in args.task_confounds), events=tuple(args.events),
        mask=args.mask, t1=args.t1, rest_dicom=tuple(Path(d) for d in args.rest_dicom),
        task_dicom=tuple(_state_path(t) for t in args.task_dicom), t1_dicom=args.t1_dicom, native=args.native,
        space=args.space, bids_dir=args.bids_dir, rest_task=args.rest_task, task=args.task, t_r=args.tr,
        series=args.series, slice_timing=args.slice_timing, work_dir=args.work_dir,
    )


def run_plan(args):
    progress = Progress(args.quiet)
    # the 3D view's renderer starts now: its 1.5-2 s of start-up overlap the analysis (issue 19)
    renderer = scene_renderer() if args.report else None
    if renderer is not None:
        renderer.start()
    try:
        return _plan_and_save(args, progress, renderer)
    finally:
        if renderer is not None:
            renderer.close()


def _plan_and_save(args, progress, renderer):
    from tmstarget.outputs.plan_folder import anonymous_command
    from tmstarget.protocol import load_protocol
    from tmstarget.workflows import run_plan as compute_plan

    navigation = navigation_formats(args)
    protocol = load_protocol(args.protocol, _overrides(args))
    command = anonymous_command(args.command_line)
    if args.from_watch is not None:
        from tmstarget.errors import InputError
        from tmstarget.realtime.watch import plan_recorded_watch

        given = [name for name in ("dataset", "rest_bold", "task_bold", "rest_dicom", "task_dicom", "t1", "t1_dicom",
                                   "events", "mask") if getattr(args, name)]
        if given:
            raise InputError(f"--from-watch takes its run from the watch folder: drop --{given[0].replace('_', '-')}")

        plan = plan_recorded_watch(args.from_watch, protocol, command=command, progress=progress)
    else:
        plan = compute_plan(_request(args), protocol, command=command, output=args.output, force=args.force,
                            progress=progress)
    refused = args.require_significant and plan.significant is False
    writers = []
    if args.report:
        from tmstarget.outputs.report import ReportWriter

        writers.append(ReportWriter(progress=progress, render_3d=renderer))
    plan.save(args.output, force=args.force, navigation=None if refused else navigation, affine=args.affine,
              on_navigation_skipped=navigation_skipped, writers=writers)
    _print_summary(plan.document, protocol, args)
    if refused:
        plan.require_significant()
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
            navigation = [name for name in document["outputs"] if name.startswith("navigation/")]
            print(f"navigation files: {len(navigation)} in {args.output}/navigation" if navigation else
                  "navigation files: none written")
        else:
            print(f"coil: not placed ({document['coil_reason']})")
        inference = document["qc"].get("inference")
        if inference is not None:
            print(inference["verdict"])
        for warning in document["qc"].get("warnings", []):
            if inference is None or warning != inference["verdict"]:
                print(f"warning: {warning}", file=sys.stderr)


def _build_report_parser(sub):
    p = sub.add_parser("report", help="write the HTML report of a plan folder",
                       description="Write the self-contained HTML report of a plan folder (screen and A4 print): "
                       "target, coil, verdict, figures, prescription, QC, provenance.",
                       epilog="example: tmstarget report plan-out --rmt 52 --m1-depth 14")
    p.add_argument("plan_dir", type=Path, metavar="PLAN_DIR", help="plan folder (holds target.json)")
    p.add_argument("--rmt", type=float, metavar="PERCENT",
                   help="the patient's resting motor threshold, %% of maximum stimulator output: the report then "
                   "gives the prescribed intensity")
    p.add_argument("--m1-depth", type=float, metavar="MM",
                   help="scalp-to-cortex depth at the motor hotspot where the rMT was measured (mm): with the "
                   "target's depth, the depth-adjusted intensity (3 %% of output per mm, Stokes 2005)")
    p.add_argument("--output", "-o", type=Path, metavar="FILE",
                   help="the HTML file (default: PLAN_DIR/report.html; target.json is not changed)")
    add_common(p)
    p.set_defaults(handler=run_report)


def run_report(args):
    from tmstarget.outputs.report import write_report

    renderer = scene_renderer()
    try:
        path = write_report(args.plan_dir, args.output, rmt=args.rmt, m1_depth_mm=args.m1_depth, render_3d=renderer)
    finally:
        if renderer is not None:
            renderer.close()
    if not args.quiet:
        print(f"report: {path} ({path.stat().st_size / 1024:.0f} KB)")
    return 0


def _build_protocols_parser(sub):
    p = sub.add_parser("protocols", help="list the shipped protocols", description="List the shipped protocols.",
                       epilog="example: tmstarget protocols")
    p.add_argument("--show", metavar="NAME", help="print one protocol's TOML (resolved with defaults)")
    add_common(p)
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
                       description="Write a deterministic synthetic patient with planted targets and "
                       "ground_truth.json.",
                       epilog="example: tmstarget sample /tmp/patient --voxel-mm 3 --task-volumes 240")
    p.add_argument("output", type=Path)
    p.add_argument("--voxel-mm", type=float, default=4.0)
    p.add_argument("--rest-volumes", type=int, default=150)
    p.add_argument("--task-volumes", type=int, default=200)
    p.add_argument("--design", choices=["blocks", "separate"], default="blocks")
    p.add_argument("--seed", type=int, default=0)
    effect = p.add_mutually_exclusive_group()
    effect.add_argument("--rumination-effect", type=float, metavar="SCALE",
                        help="scale of the planted rumination-vs-distraction connectivity differences "
                        "(default: the generator's, see SyntheticConfig.rumination_effect)")
    effect.add_argument("--no-rumination-effect", dest="rumination_effect", action="store_const", const=0.0,
                        help="plant no rumination effect at all (a patient whose data hold no rumination target)")
    p.add_argument("--force", action="store_true")
    add_common(p)
    p.set_defaults(handler=run_sample)


def run_sample(args):
    from tmstarget.outputs.plan_folder import check_output_dir
    from tmstarget.testing.patient import SyntheticConfig, make_patient

    check_output_dir(args.output, args.force)
    effect = {} if args.rumination_effect is None else {"rumination_effect": args.rumination_effect}
    cfg = SyntheticConfig(voxel_mm=args.voxel_mm, n_rest=args.rest_volumes, n_task=args.task_volumes,
                          design=args.design, seed=args.seed, **effect)
    make_patient(args.output, cfg, progress=Progress(args.quiet))
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
    _build_report_parser(sub)
    _build_protocols_parser(sub)
    _build_sample_parser(sub)
    convert_cli.add_subcommand(sub)
    compare_cli.add_subcommand(sub)
    efield_cli.add_subcommand(sub)
    navigation_cli.add_subcommands(sub)
    realtime_cli.add_subcommands(sub)
    view_cli.add_subcommand(sub)
    return parser


def main(argv=None):
    """Entry point of the ``tmstarget`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = ["tmstarget", *map(str, sys.argv[1:] if argv is None else argv)]  # for provenance
    avoid_hugepage_stalls()
    idle_blas_threads_sleep()
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


def console():
    """The ``tmstarget`` program (console script, ``python -m tmstarget.cli``): :func:`main`, then exit.

    The objects alive at the start (the modules imported so far) and at the end are frozen out of
    Python's garbage collection: a plan loads about 2000 modules, and each full collection during
    the run and at the interpreter's exit would walk all their objects again (0.4-0.5 s of exit on
    the 2-core test machine, 0.1 s frozen; issue 19). Only a process that ends here does this;
    :func:`main` itself (called by tests and other programs) leaves the collector alone.
    """
    gc.freeze()
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    console()
