"""What every ``tmstarget`` command shares: the quiet/verbose options, stage messages, navigation warnings."""

import os
import sys
import time


def avoid_hugepage_stalls():
    """Ask numpy for ordinary memory pages for large arrays, in this process and the ones it starts.

    numpy marks every large array ``MADV_HUGEPAGE``. On Linux with transparent huge pages in the
    common ``defrag = madvise`` mode, each first touch of such an array may stall in memory
    compaction when no huge page is free: on the 2-core test machine, casting one 240-volume BOLD to
    float32 took 2.1-2.4 s marked and 0.13-0.16 s unmarked (issue 19). Only speed changes, never a
    value. ``NUMPY_MADVISE_HUGEPAGE`` set by the user wins; child processes inherit the setting.
    """
    os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")
    numpy = sys.modules.get("numpy")
    if numpy is not None:  # already imported (it reads the variable on import): switch it now
        core = getattr(numpy, "_core", None) or numpy.core
        core.multiarray._set_madvise_hugepage(os.environ["NUMPY_MADVISE_HUGEPAGE"] != "0")


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


class CountProgress:
    """``progress(stage, done, total)`` shown on stderr: one line updated in place on a terminal, plain lines otherwise.

    On a terminal the line is redrawn at most every 0.1 s; elsewhere (a log
    file, CI) a stage prints when it starts, at each further tenth and when
    it completes, so a long step is never silent and a log stays short.
    """

    def __init__(self, stream=None):
        self.stream = sys.stderr if stream is None else stream
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self.stage = None
        self.last = (0.0, -1)
        self.open_line = False

    def __call__(self, stage, done, total):
        now = time.perf_counter()
        tenth = done * 10 // total if total else 10
        if stage != self.stage:
            self.close()
            self.stage, self.last = stage, (0.0, -1)
        text = f"[{now - self.start:6.1f} s] {stage}: {done}/{total}"
        if self.tty:
            if done == total or now - self.last[0] >= 0.1:
                self.stream.write("\r\x1b[K" + text)
                self.stream.flush()
                self.open_line = True
                self.last = (now, tenth)
            if done == total:
                self.close()
        elif tenth != self.last[1]:
            print(text, file=self.stream, flush=True)
            self.last = (now, tenth)

    def close(self):
        """End an in-place line (call once at the end, also after an error)."""
        if self.open_line:
            self.stream.write("\n")
            self.stream.flush()
            self.open_line = False


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


def scene_renderer():
    """The report's 3D view (``render_3d``): the viewer's off-screen scene as PNG bytes, or None without the viewer.

    The library report does not import the viewer (a front end); the command
    line hands it this function.
    """
    try:
        from tmstarget.viewer.scene import render_png
    except ImportError:
        return None

    def render(plan_or_dir):
        import io

        from PIL import Image

        from tmstarget.outputs.plan import Plan, load_plan

        plan = plan_or_dir if isinstance(plan_or_dir, Plan) else load_plan(plan_or_dir)
        buffer = io.BytesIO()
        # a modest size (shown at 70 % of the page width) and PIL's default compression: optimize=True costs
        # about five times the encoding time for 4 % fewer bytes
        Image.fromarray(render_png(plan, size=(640, 480))).save(buffer, format="PNG")
        return buffer.getvalue()

    return render
