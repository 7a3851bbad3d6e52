"""``tmstarget convert DICOM_DIR OUTPUT_DIR --subject LABEL``: DICOM series to a BIDS-style NIfTI + JSON tree."""

from tmstarget.cli._common import CountProgress, add_common


def add_subcommand(subparsers):
    """Register the ``convert`` subcommand; its handler is ``args.handler(args) -> int``."""
    parser = subparsers.add_parser(
        "convert",
        help="convert DICOM series to NIfTI (.nii.gz) with BIDS-style names and JSON sidecars",
        description=(
            "Convert every image series of DICOM_DIR (or the ones given with --series) into the BIDS root "
            "OUTPUT_DIR: sub-<label>/func/sub-<label>_task-<task>_bold.nii.gz for time series, "
            "sub-<label>/anat/sub-<label>_T1w.nii.gz for a T1, sub-<label>/misc/... otherwise, each with its "
            "JSON sidecar. The subject label is yours to give; patient fields are never used or written."
        ),
    )
    parser.add_argument("dicom_dir", metavar="DICOM_DIR", help="folder of DICOM files (scanned recursively)")
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="BIDS root (created; sub-<label>/ must not exist "
                        "unless --force)")
    parser.add_argument("--subject", "--participant", dest="subject", metavar="LABEL", required=True,
                        help="subject label (letters and digits, 'sub-' optional); never taken from the DICOM")
    parser.add_argument("--task", metavar="LABEL", default=None,
                        help="BIDS task label of the functional series (default: the series description, "
                        "letters and digits only)")
    parser.add_argument(
        "--series",
        metavar="N",
        default=None,
        action="append",
        help="series number or SeriesInstanceUID to convert (repeatable); default: all",
    )
    parser.add_argument("--force", action="store_true", help="write into an existing sub-<label>/ folder")
    add_common(parser)
    parser.set_defaults(handler=run_convert)
    return parser


def run_convert(args):
    """Run the conversion for parsed arguments; progress on stderr, one line per file written on stdout.

    Returns
    -------
    int
        0 on success (errors raise and are reported by :func:`tmstarget.cli.main.main`).
    """
    from tmstarget.ingest.dicom.series import convert

    series = None
    if args.series:
        series = [int(s) if s.isdigit() else s for s in args.series]
        series = series[0] if len(series) == 1 else series
    progress = None if args.quiet else CountProgress()
    # errors (TmsTargetError) are printed as one line by tmstarget.cli.main.main
    try:
        written = convert(args.dicom_dir, args.output_dir, args.subject, task=args.task, series=series,
                          force=args.force, progress=progress)
    finally:
        if progress is not None:
            progress.close()
    for path in written:
        print(path)
    return 0
