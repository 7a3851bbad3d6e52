"""``tmstarget watch`` and ``tmstarget replay``: arguments and the terminal display (the work is in realtime/)."""

import sys
import time
from pathlib import Path

from tmstarget.cli._common import add_common, navigation_formats, navigation_skipped, scene_renderer
from tmstarget.realtime import replay
from tmstarget.realtime.live import live_line


class LiveDisplay:
    """The watcher on a terminal: set-up messages, then one live line per volume.

    On a TTY the live line is rewritten in place; otherwise (a log file, a pipe) each update is a plain line.
    Everything goes to stderr (stdout keeps the final result); silent with ``--quiet``.
    """

    def __init__(self, quiet=False, stream=None):
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.perf_counter()
        self._open_line = False

    def message(self, text):
        """A set-up or finishing stage (the ``progress`` callback)."""
        if self.quiet:
            return
        self._end_line()
        print(f"[{time.perf_counter() - self.start:6.1f} s] {text}", file=self.stream, flush=True)

    def volume(self, doc):
        """The live line after a volume (the ``display`` callback)."""
        if self.quiet:
            return
        line = live_line(doc)
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
            self.stream.flush()
            self._open_line = True
        else:
            print(line, file=self.stream, flush=True)

    def _end_line(self):
        if self._open_line:
            self.stream.write("\n")
            self._open_line = False


def add_subcommands(sub):
    """Register ``watch`` and ``replay`` on the top-level subparsers."""
    p = sub.add_parser(
        "watch",
        help="follow a scanner's real-time export and update the target after every volume",
        description="Watch a folder the scanner's real-time export writes DICOM files into (polling; network "
        "shares work). After every volume: motion correction, FD, the streaming connectivity update, the current "
        "target and its stability, written atomically to OUTPUT/live.json. At the end (expected volumes, "
        "--stop-after idle seconds, or Ctrl-C) the same outputs as 'tmstarget plan' go to OUTPUT/plan/. "
        "Killed and started again on the same OUTPUT, it resumes where it stopped.",
        epilog="example: tmstarget watch /mnt/rt-export --t1 T1w.nii.gz --protocol sgacc-dlpfc "
        "--expected-volumes 120 --output watch-out",
    )
    p.add_argument("incoming", type=Path, metavar="INCOMING_DIR", help="folder the real-time export writes into")
    p.add_argument("--output", "-o", type=Path, required=True, help="watch folder (live.json, state/, plan/)")
    p.add_argument("--protocol", default="rumination-dmpfc", help="protocol name or .toml (default: rumination-dmpfc); "
                   "the watcher streams its live model: the regression model with a cosine high-pass only "
                   "([clean] high_pass_hz; a low-pass only where the protocol sets [live] low_pass_hz)")
    p.add_argument("--t1", type=Path, required=True, help="the participant's T1 (NIfTI, or a DICOM folder)")
    p.add_argument("--events", type=Path, help="BIDS events TSV of a blocks-design task run (onsets from the first "
                   "volume)")
    p.add_argument("--expected-volumes", type=int, metavar="N", help="volumes of the run (the end of the watch; "
                   "needed when band limits or HRF task regressors depend on the run length)")
    p.add_argument("--tr", type=float, metavar="SECONDS", help="repetition time, if known before the scan: the live "
                   "model is then checked at start (else at the first volume); checked against the DICOM headers")
    p.add_argument("--series", metavar="N", help="SeriesNumber or UID to follow (default: the first series seen)")
    p.add_argument("--stop-after", type=float, default=60.0, metavar="SECONDS",
                   help="finish after this many seconds without a new volume, once the scan has started "
                   "(default: 60; 0 = never, wait for --expected-volumes or Ctrl-C)")
    p.add_argument("--gap-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="wait this long for a missing volume once a later one is there (default: 10)")
    p.add_argument("--participant", help="participant label used in the outputs (never read from DICOM)")
    p.add_argument("--stable-mm", type=float, default=2.0, help="stability threshold (default: 2 mm)")
    p.add_argument("--stable-minutes", type=float, default=5.0, help="stability window (default: 5 minutes)")
    p.add_argument("--map-every", type=int, default=10, metavar="N", help="rewrite the live whole-brain maps "
                   "OUTPUT/live_map-*.nii.gz every N volumes (default: 10; 0: only at the end)")
    p.add_argument("--navigation", action="append", default=None, metavar="FORMAT",
                   help="navigation format for the final plan (repeat; default: all; 'none' to skip)")
    p.add_argument("--affine", choices=["qform", "sform"], help="which T1 affine the navigator uses, needed only "
                   "when they differ")
    p.add_argument("--no-report", dest="report", action="store_false",
                   help="do not write OUTPUT/plan/report.html (the HTML report of the final plan)")
    p.add_argument("--force", action="store_true", help="start afresh in a non-empty OUTPUT that holds no watch")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a protocol parameter (recorded in the outputs)")
    add_common(p)
    p.set_defaults(handler=run_watch)
    replay.add_parser(sub)


def run_watch(args):
    from tmstarget.ingest.fmriprep import participant_label
    from tmstarget.outputs.plan import navigation_writer
    from tmstarget.outputs.plan_folder import anonymous_command
    from tmstarget.protocol import load_protocol
    from tmstarget.realtime.watch import Watcher, WatchOptions

    protocol = load_protocol(args.protocol, list(args.overrides))  # the watcher takes its live model
    navigation = navigation_formats(args)
    series = int(args.series) if args.series is not None and args.series.isdigit() else args.series
    writers = [navigation_writer(navigation, args.affine, navigation_skipped)] if navigation else []
    if args.report:
        from tmstarget.outputs.report import ReportWriter

        writers.append(ReportWriter(render_3d=scene_renderer()))
    opts = WatchOptions(
        incoming=args.incoming, output=args.output, protocol=protocol, t1=args.t1, events=args.events,
        expected_volumes=args.expected_volumes, t_r_s=args.tr, series=series, stop_after_s=args.stop_after or None,
        gap_timeout_s=args.gap_timeout, participant=participant_label(args.participant) if args.participant
        else "anonymous", stable_mm=args.stable_mm, stable_minutes=args.stable_minutes, map_every=args.map_every,
        extra_writers=writers,
        command=anonymous_command(args.command_line), force=args.force,
    )
    display = LiveDisplay(args.quiet)
    watcher = Watcher(opts, progress=display.message, display=display.volume)
    document = watcher.run()
    display.message("finished")
    if not args.quiet and document is not None:
        t = document["target"]
        final = watcher.finished
        print(f"target ({protocol.name}): T1w {t['ras_mm']} mm (MNI {t['mni_mm']} mm) -> "
              f"{Path(args.output) / 'plan' / 'target.json'}")
        print(f"model: {final['model']['name']} (not the batch Butterworth band-pass; same model in 'tmstarget plan': "
              f"{final['model']['same_model_in_plan']})")
        verdict = final["significance"]["verdict"] if final["significance"] else None
        if verdict:
            print(verdict)
        for warning in final["warnings"]:
            if warning != verdict:
                print(f"warning: {warning}")
    return 0
