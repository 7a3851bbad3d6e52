"""``tmstarget compare DATASET --protocols a,b,c --output DIR``: strategies side by side over many participants."""

import sys
import time
from pathlib import Path

#: Exit status cap (shells keep 8 bits; 1 and 2 keep their usual meaning only below it).
MAX_EXIT = 100


def add_subcommand(subparsers):
    """Register ``compare``; its handler returns the exit status."""
    from tmstarget.research.compare import DEFAULT_MINUTES

    p = subparsers.add_parser(
        "compare",
        help="compare targeting strategies across the participants of a dataset",
        description="Plan every protocol for every participant of an fMRIPrep dataset (runs read and cleaned once "
        "per group of protocols that share them) and compare them: DIR/targets.tsv, distances.tsv, summary.tsv "
        "(median, IQR, between- vs within-person spread after Cash 2021), data_length.tsv (the target on the first "
        "L minutes against the full-data target), report.html, and each plan folder under "
        "DIR/participants/sub-<label>/<protocol>/ (open one with 'tmstarget view'). A rerun skips finished "
        "participant x protocol results (--force redoes them).",
        epilog="exit status: 0 when every participant x protocol succeeded; otherwise the number that failed "
        f"(capped at {MAX_EXIT}; their rows say 'failed: <reason>'); 1 also when an error stops the whole run "
        "(one line on stderr), 2 for a usage error. "
        "example: tmstarget compare /data/derivatives/fmriprep --protocols rumination-dmpfc,sgacc-dlpfc,5cm-rule "
        "--output compare-out --jobs 2",
    )
    p.add_argument("dataset", type=Path, help="fMRIPrep derivatives folder, or a BIDS root holding "
                   "derivatives/fmriprep")
    p.add_argument("--protocols", required=True,
                   help="comma-separated protocol names (see 'tmstarget protocols') or .toml paths")
    p.add_argument("--output", "-o", type=Path, required=True,
                   help="output folder (created, or resumed when it holds an earlier run)")
    p.add_argument("--participants", help="comma-separated labels (default: every sub-* of the derivatives)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--jobs", "-j", type=int, metavar="N",
                       help="local worker processes (default: the core count; 1: serial)")
    where.add_argument("--dask-scheduler", metavar="ADDRESS",
                       help="run the participants on a Dask distributed cluster (tcp://host:8786); every worker "
                       "must see the dataset and the output folder at the same paths")
    p.add_argument("--minutes", default=",".join(f"{m:g}" for m in DEFAULT_MINUTES),
                   help="data lengths (minutes) for data_length.tsv, comma-separated; 'none' for no curve "
                   "(default: %(default)s; lengths longer than a participant's runs are skipped)")
    p.add_argument("--bids-dir", type=Path, help="raw BIDS dataset holding *_events.tsv")
    p.add_argument("--force", action="store_true", help="recompute finished participant x protocol results")
    p.add_argument("--no-report", action="store_true", help="do not write report.html")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors and the failures")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks on error")
    p.set_defaults(handler=run_compare)
    return p


class ProgressBar:
    """``[#####.....] 12/40 participant x protocol, elapsed 0:35, remaining ~2:10`` on stderr.

    Redrawn in place on a terminal, one line per step otherwise; the remaining time is
    extrapolated from the work done in this run (results skipped as finished are not counted).
    """

    def __init__(self, stream=None, width=30):
        self.stream = sys.stderr if stream is None else stream
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.width = width
        self.start = time.perf_counter()
        self.first = None

    def __call__(self, done, total):
        if self.first is None:
            self.first = done
        elapsed = time.perf_counter() - self.start
        fresh = done - self.first
        remaining = "?" if fresh == 0 else _clock(elapsed * (total - done) / fresh)
        filled = self.width * done // total if total else self.width
        text = (f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} participant x protocol, "
                f"elapsed {_clock(elapsed)}, remaining ~{remaining}")
        if self.tty:
            self.stream.write("\r\x1b[K" + text + ("\n" if done == total else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def _clock(seconds):
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


def _list(text):
    return [item.strip() for item in text.split(",") if item.strip()]


def run_compare(args):
    """Run the comparison for parsed arguments; returns the exit status (see the epilog)."""
    from tmstarget.errors import InputError
    from tmstarget.research.compare import compare

    try:
        minutes = [] if args.minutes.strip().lower() == "none" else [float(m) for m in _list(args.minutes)]
    except ValueError:
        raise InputError(f"--minutes: expected comma-separated numbers or 'none'; got {args.minutes!r}") from None
    tables = compare(args.dataset, _list(args.protocols), args.output,
                     participants=_list(args.participants) if args.participants else None, n_jobs=args.jobs,
                     dask_scheduler=args.dask_scheduler, force=args.force, minutes=minutes,
                     bids_dir=args.bids_dir, report=not args.no_report,
                     progress=None if args.quiet else ProgressBar())
    targets = tables["targets"]
    failed = targets[targets["status"] != "ok"]
    for row in failed.itertuples(index=False):
        print(f"sub-{row.participant} {row.protocol}: {row.status}", file=sys.stderr)
    if not args.quiet:
        print(f"{len(targets) - len(failed)} of {len(targets)} participant x protocol results ok; tables and "
              f"report in {args.output}")
    return min(len(failed), MAX_EXIT)
