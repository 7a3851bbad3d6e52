"""What every ``tmstarget`` command shares: the quiet/verbose options, stage messages, navigation warnings."""

import sys
import time


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


def add_common(parser):
    """``--quiet`` and ``--verbose``."""
    parser.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks on error")


def navigation_formats(args):
    """``--navigation``: None (default) -> ``"all"``, ``none`` -> ``[]``."""
    return [] if args.navigation == ["none"] else (args.navigation or "all")


def navigation_skipped(message):
    """Navigation files (or one format) skipped under the default ``--navigation all``: a warning line."""
    print(f"warning: {message}", file=sys.stderr)
