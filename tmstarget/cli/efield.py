"""``tmstarget efield PLAN_DIR``: how strongly the coil reaches the target, the best pose and the dose."""

import sys
from pathlib import Path

from tmstarget.cli._common import Progress, add_common, scene_renderer
from tmstarget.errors import InputError


def add_subcommand(subparsers):
    """Register the ``efield`` subcommand; its handler is ``args.handler(args) -> int``."""
    parser = subparsers.add_parser(
        "efield",
        help="E-field at the plan's target in seconds: best coil pose, E vs handle angle, dose",
        description=(
            "E-field of the plan's coil at its cortical target in a spherical head fitted to the local scalp: "
            "the best pose over handle angles (5-degree steps) and 25 coil centres within 10 mm of the planned "
            "scalp point, the field against the handle angle, and with --rmt the stimulator output for the target "
            "by the scalp-to-cortex rule (Stokes 2005) and by matching the motor hotspot's field. Writes "
            "PLAN_DIR/efield.json and PLAN_DIR/efield_map.nii.gz; target.json changes only with --apply, which "
            "writes the best pose as a new plan version into --output."),
        epilog="example: tmstarget efield plan-out --rmt 52 --m1 -38 -20 75 --apply --output plan-out-v2",
    )
    parser.add_argument("plan_dir", metavar="PLAN_DIR", type=Path, help="plan folder (tmstarget plan with a T1)")
    parser.add_argument("--coil", default="magstim-d70", metavar="NAME|FILE.ccd",
                        help="built-in coil (magstim-d70, mc-b70, cool-b65) or a SimNIBS .ccd file "
                        "(default: magstim-d70)")
    parser.add_argument("--didt", type=float, metavar="A_PER_US",
                        help="dI/dt in A/us (default: the coil's at 100%% stimulator output)")
    parser.add_argument("--rmt", type=float, metavar="PERCENT", help="resting motor threshold, %% of stimulator output")
    hotspot = parser.add_mutually_exclusive_group()
    hotspot.add_argument("--m1", type=float, nargs=3, metavar=("X", "Y", "Z"),
                         help="motor hotspot on the scalp, world RAS mm of the plan's T1")
    hotspot.add_argument("--hotspot", type=Path, metavar="FILE",
                         help="Localite or Brainsight file holding the hotspot coil pose")
    parser.add_argument("--objective", choices=["magnitude", "cortex-normal"], default="magnitude",
                        help="maximize |E| at the target (default) or its component across the cortex (normal to this "
                        "T1's cortical surface there), which makes the handle angle matter")
    parser.add_argument("--apply", action="store_true", help="write the best pose as a new plan version (--output)")
    parser.add_argument("--output", "-o", type=Path, help="the new plan folder for --apply")
    parser.add_argument("--force", action="store_true", help="replace a non-empty --output")
    parser.add_argument("--no-report", dest="report", action="store_false",
                        help="with --apply, do not write the new version's report.html")
    parser.add_argument("--simnibs", type=Path, metavar="PATH",
                        help="simnibs_python (or the SimNIBS folder); default: found on PATH")
    parser.add_argument("--m2m", type=Path, metavar="DIR",
                        help="the patient's SimNIBS head model (charm's m2m_<id> folder): run SimNIBS at the best pose")
    add_common(parser)
    parser.set_defaults(handler=run_efield)
    return parser


def run_efield(args):
    """Compute, write, and print a summary on stdout (messages on stderr)."""
    from tmstarget.efield.run import plan_efield

    if args.output is not None and not args.apply:
        raise InputError("--output names the new plan version of --apply; add --apply")
    progress = Progress(args.quiet)
    writers = []
    if args.apply and args.report:
        from tmstarget.outputs.report import ReportWriter

        renderer = scene_renderer()  # started now: its start-up overlaps the field computation (issue 19)
        writers.append(ReportWriter(progress=progress, render_3d=None if renderer is None else renderer.start()))
    result = plan_efield(args.plan_dir, args.coil, didt_a_per_us=args.didt, rmt=args.rmt, m1_ras_mm=args.m1,
                         hotspot_file=args.hotspot, objective=args.objective, apply=args.apply, output=args.output,
                         simnibs=args.simnibs, m2m=args.m2m, force=args.force, writers=writers,
                         progress=progress)
    doc = result.document
    planned, best = doc["planned"], doc["best"]
    print(f"coil {doc['coil']} at {doc['didt_a_per_us']:.1f} A/us (100% output); sphere radius "
          f"{doc['sphere']['radius_mm']:.1f} mm")
    what = "|E|" if args.objective == "magnitude" else "|E.n|"
    print(f"planned: handle {planned['handle_angle_deg']:.1f} deg, {what} {planned['e_target_v_per_m']:.1f} V/m at the "
          "cortical target")
    print(f"best:    handle {best['handle_angle_deg']:.1f} deg, {what} {best['e_target_v_per_m']:.1f} V/m, coil centre "
          f"{[round(v, 1) for v in best['centre_ras_mm']]} mm")
    if "dose" in doc:
        dose = doc["dose"]
        for rule, name in (("stokes", "scalp-to-cortex (Stokes)"), ("efield_matched", "E-field matched")):
            print(f"dose {name}: planned {dose[rule]['planned']['output_percent']:.1f}%, best "
                  f"{dose[rule]['best']['output_percent']:.1f}% of stimulator output at RMT {dose['rmt_percent']:g}%")
    if doc["simnibs"].get("e_target_v_per_m") is not None:
        print(f"SimNIBS: |E| {doc['simnibs']['e_target_v_per_m']:.1f} V/m at the target "
              f"({doc['simnibs']['ratio_simnibs_to_builtin']:.2f} x the spherical model)")
    for message in result.messages:
        print(message, file=sys.stderr)
    print(f"wrote {', '.join(str(p) for p in result.files)}")
    if result.revised is not None:
        print(f"new plan version with the best pose: {args.output}")
    return 0
