"""``tmstarget convert DICOM_DIR OUTPUT_DIR``: DICOM series to NIfTI + JSON sidecars."""


def add_subcommand(subparsers):
    """Register the ``convert`` subcommand; its handler is ``args.handler(args) -> int``."""
    parser = subparsers.add_parser(
        "convert",
        help="convert DICOM series to NIfTI (.nii.gz) with BIDS-style JSON sidecars",
        description=(
            "Convert every image series of DICOM_DIR (or the one given with --series) to "
            "OUTPUT_DIR/sub-<label>_series-<NNN>_<description>.nii.gz + .json. "
            "Patient fields are never written."
        ),
    )
    parser.add_argument("dicom_dir", metavar="DICOM_DIR", help="folder of DICOM files (scanned recursively)")
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="output folder (must be empty unless --force)")
    parser.add_argument(
        "--participant",
        metavar="LABEL",
        default=None,
        help="participant label (letters and digits) for file names; default 'anon'",
    )
    parser.add_argument(
        "--series",
        metavar="N",
        default=None,
        action="append",
        help="series number or SeriesInstanceUID to convert (repeatable); default: all",
    )
    parser.add_argument("--force", action="store_true", help="write into a non-empty output folder")
    parser.set_defaults(handler=run_convert)
    return parser


def run_convert(args):
    """Run the conversion for parsed arguments; print one line per file written.

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
    # errors (TmsTargetError) are printed as one line by tmstarget.cli.main.main
    written = convert(args.dicom_dir, args.output_dir, participant=args.participant, series=series, force=args.force)
    for path in written:
        print(path)
    return 0

