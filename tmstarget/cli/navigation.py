"""``tmstarget export`` and ``tmstarget navigation import|compare``.

:func:`add_subcommands` registers the parsers on the main CLI's
subparsers; each handler takes the parsed namespace and returns an exit
code.  Bad input raises tmstarget errors (the main CLI prints them as one
line and exits non-zero).
"""

from __future__ import annotations

import json
import math
import sys
import warnings

from tmstarget.navigation.formats import FORMATS

__all__ = ["add_subcommands", "run_export", "run_import", "run_compare"]


def add_subcommands(subparsers):
    """Register ``export`` and ``navigation`` on an argparse subparsers object."""
    exp = subparsers.add_parser(
        "export",
        help="write a plan's target as neuronavigation files",
        description=(
            "Write PLAN_DIR's target (and candidates with a coil pose) in navigation formats. "
            "Every file states the T1 (name, sha256), the frame and the coil convention; "
            "each is read back and checked before it is kept. Formats: "
            + "; ".join(f"{k} = {v.description}" for k, v in FORMATS.items())
        ),
    )
    exp.add_argument("plan_dir", metavar="PLAN_DIR", help="plan folder with target.json")
    exp.add_argument(
        "--format",
        dest="formats",
        action="append",
        required=True,
        metavar="FMT",
        choices=list(FORMATS) + ["all"],
        help="format to write (repeat for several, or 'all')",
    )
    exp.add_argument("--output", metavar="DIR", help="output folder (default PLAN_DIR/navigation)")
    exp.add_argument(
        "--localite-space",
        choices=["RAS", "LPS"],
        default="RAS",
        help="coordinateSpace of the Localite file (RAS for NIfTI data; default RAS)",
    )
    _add_affine(
        exp, "which T1 transform the plan's coordinates refer to, when qform and sform differ"
    )
    exp.add_argument("--force", action="store_true", help="replace existing files")
    exp.set_defaults(handler=run_export, func=run_export)

    nav = subparsers.add_parser(
        "navigation", help="read navigation files and compare them with a plan"
    )
    nav_sub = nav.add_subparsers(dest="navigation_command", metavar="COMMAND")
    nav_sub.required = True

    imp = nav_sub.add_parser(
        "import",
        help="print the poses of a navigation file (SimNIBS axes, RAS mm)",
        description="Read a Localite, Brainsight, ANT, Slicer, SimNIBS, BIDS or tmstarget file "
        "and print its poses in the project convention (SimNIBS axes, RAS mm).",
    )
    imp.add_argument("file", metavar="FILE")
    imp.add_argument(
        "--format",
        dest="fmt",
        choices=list(FORMATS),
        default=None,
        help="format (default: detected from the file)",
    )
    imp.add_argument("--t1", default=None, help="T1 NIfTI to verify Brainsight/ANT frames against")
    _add_read_options(
        imp,
        affine_help="T1 transform to use when its qform and sform differ",
        space_help="frame of Slicer markups lacking coordinateSystem (never guessed)",
    )
    imp.set_defaults(handler=run_import, func=run_import)

    cmp_ = nav_sub.add_parser(
        "compare",
        help="distance and angle of recorded poses from the planned pose",
    )
    cmp_.add_argument("plan_dir", metavar="PLAN_DIR")
    cmp_.add_argument("recorded", metavar="RECORDED_FILE")
    cmp_.add_argument("--format", dest="fmt", choices=list(FORMATS), default=None)
    _add_read_options(cmp_)
    cmp_.set_defaults(handler=run_compare, func=run_compare)
    return exp, nav


def _add_affine(parser, help_text=None):
    parser.add_argument("--affine", choices=["qform", "sform"], default=None, help=help_text)


def _add_read_options(parser, *, affine_help=None, space_help=None):
    """``--affine``, ``--assume-space`` and ``--json``, shared by ``import`` and ``compare``."""
    _add_affine(parser, affine_help)
    parser.add_argument("--assume-space", choices=["LPS", "RAS"], default=None, help=space_help)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _out(stream=None):
    return stream or sys.stdout


def run_export(args, stdout=None):
    """Handler of ``tmstarget export``; returns 0 or raises a tmstarget error."""
    from tmstarget.navigation.export import export_plan

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reported below, once, as 'warning:' lines
        result = export_plan(
            args.plan_dir,
            args.formats,
            args.output,
            getattr(args, "affine", None),
            localite_space=args.localite_space,
            force=args.force,
        )
    out = _out(stdout)
    for msg in result.warnings:
        print(f"warning: {msg}", file=sys.stderr)
    for fmt, reason in result.skipped.items():
        print(f"warning: {fmt} not written: {reason}", file=sys.stderr)
    print(
        f"wrote {len(result.markers)} marker(s) ({', '.join(result.markers)}) to "
        f"{result.output_dir}",
        file=out,
    )
    for fmt, paths in result.files.items():
        print(f"  {fmt}: {paths[0]}", file=out)
    return 0


def _f(value, nd=2):
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        text = f"{value:.{nd}f}"
        return text[1:] if text.startswith("-") and float(text) == 0.0 else text
    return str(value)


def run_import(args, stdout=None):
    from tmstarget.navigation._common import load_t1_reference
    from tmstarget.navigation.formats import read_navigation_file

    t1 = load_t1_reference(args.t1, args.affine) if args.t1 else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kept on the NavFile, printed below
        nav = read_navigation_file(args.file, args.fmt, t1=t1, assume=args.assume_space)
    out = _out(stdout)
    for msg in nav.warnings:
        print(f"warning: {msg}", file=sys.stderr)
    if args.json:
        print(json.dumps(nav.to_dict(), indent=2, allow_nan=False, default=str), file=out)
        return 0
    print(
        f"# {nav.format} ({nav.version or '-'}), file frame {nav.source_frame}, coil axes "
        f"{nav.coil_convention or 'none'}; shown in RAS mm, SimNIBS axes (handle = -y)",
        file=out,
    )
    if nav.t1_sha256:
        print(f"# T1 {nav.t1_name} sha256={nav.t1_sha256}", file=out)
    print(
        "name\tkind\tx\ty\tz\tnormal_x\tnormal_y\tnormal_z\thandle_x\thandle_y\thandle_z", file=out
    )
    for t in nav.targets:
        cells = [t.name, t.kind] + [_f(float(v)) for v in t.position_ras_mm]
        if t.has_pose:
            cells += [_f(float(v), 4) for v in t.normal_ras] + [
                _f(float(v), 4) for v in t.handle_ras
            ]
        else:
            cells += ["-"] * 6
        print("\t".join(cells), file=out)
    if nav.skipped:
        print(f"# skipped {nav.skipped} marker(s)/row(s); see warnings", file=out)
    return 0


def run_compare(args, stdout=None):
    from tmstarget.navigation.compare import COMPARE_COLUMNS, compare_recorded

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = compare_recorded(
            args.plan_dir,
            args.recorded,
            t1_choice=args.affine,
            fmt=args.fmt,
            assume=args.assume_space,
        )
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    out = _out(stdout)
    if args.json:
        print(json.dumps(rows, indent=2, default=str), file=out)
        return 0
    print("\t".join(COMPARE_COLUMNS), file=out)
    for row in rows:
        print("\t".join(_f(row[c]) for c in COMPARE_COLUMNS), file=out)
    return 0
