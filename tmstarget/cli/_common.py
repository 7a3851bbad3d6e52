"""What every ``tmstarget`` command shares: the quiet/verbose options, stage messages, navigation warnings."""

import json
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


def idle_blas_threads_sleep():
    """Let OpenBLAS's idle threads sleep at once, in this process and the ones it starts.

    After each call OpenBLAS's worker threads spin for about 2^28 cycles (~0.1 s) waiting
    for the next one; a plan makes many calls between Python work, so on the 2-core test
    machine they burned about a fifth of the command's CPU time (``perf``: 5.0 s of CPU with the
    spin, 3.9 s without; issue 19), the core the smoothing and import threads need.
    ``OPENBLAS_THREAD_TIMEOUT=4`` (its minimum) makes them sleep instead. The number of threads
    and the split of the work are unchanged, so every result is the same. Effective only before
    numpy loads OpenBLAS (the command imports numpy after this); a value the user set wins.
    """
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")


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


def scene_renderer(size=(640, 480)):
    """The report's 3D view (``render_3d``): a :class:`SceneRenderer`, or None when the viewer cannot render.

    The library report does not import the viewer (a front end); the command
    line hands it this object. Call :meth:`SceneRenderer.start` early (the plan
    command does so before its analysis) to hide the renderer's start-up.
    """
    from importlib.util import find_spec

    try:
        available = find_spec("pyvista") is not None and find_spec("tmstarget.viewer.render_worker") is not None
    except ImportError:
        available = False
    return SceneRenderer(size) if available else None


class SceneRenderer:
    """Renders plans' 3D views (PNG bytes) in a child process, :mod:`tmstarget.viewer.render_worker`.

    Importing pyvista/VTK and preparing off-screen OpenGL take 1.5-2 s of one core; the child does it
    while this process works (:meth:`start`), and renders while the report draws its other figures:
    calling the renderer with a plan folder sends the request and returns a function that waits for
    the picture (``render_3d`` of :func:`tmstarget.outputs.report.write_report`). A plan given as a
    :class:`~tmstarget.outputs.plan.Plan` object (no folder to read) is rendered in this process.

    Parameters
    ----------
    size : (int, int)
        Width and height of the picture in pixels; modest (the report shows it at 70 % of the page width).
    timeout_s : float
        Longest wait for one picture before the report goes without it.
    """

    def __init__(self, size=(640, 480), timeout_s=300.0):
        self.size, self.timeout_s = tuple(size), float(timeout_s)
        self._process = None

    def start(self):
        """Start the child process (once); returns self."""
        if self._process is None:
            import atexit
            import subprocess
            from pathlib import Path

            import tmstarget

            env = dict(os.environ)
            source = str(Path(tmstarget.__file__).resolve().parents[1])  # the child imports this same tmstarget
            env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
            self._process = subprocess.Popen([sys.executable, "-m", "tmstarget.viewer.render_worker"],
                                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                             stderr=subprocess.DEVNULL, env=env)
            atexit.register(self.close)
        return self

    def __call__(self, plan_or_dir):
        from pathlib import Path

        if not isinstance(plan_or_dir, (str, Path)):
            from tmstarget.outputs.report_raster import png_bytes
            from tmstarget.viewer.scene import render_png

            return png_bytes(render_png(plan_or_dir, size=self.size))
        process = self.start()._process
        request = {"plan": str(Path(plan_or_dir).resolve()), "size": list(self.size)}
        process.stdin.write(json.dumps(request).encode() + b"\n")
        process.stdin.flush()
        return self._answer

    def _answer(self):
        import select

        stdout = self._process.stdout
        if not select.select([stdout], [], [], self.timeout_s)[0]:
            self.close()
            raise TimeoutError(f"no picture from the renderer within {self.timeout_s:g} s")
        line = stdout.readline()
        if not line:
            code = self._process.wait()
            self._process = None
            raise RuntimeError(f"the renderer process ended (exit code {code})")
        answer = json.loads(line)
        if not answer["ok"]:
            raise RuntimeError(answer["error"])
        return stdout.read(answer["length"])

    def close(self):
        """End the child process: it holds no file or result (a clean exit would only tear VTK down, about 0.5 s)."""
        process, self._process = self._process, None
        if process is None:
            return
        process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            try:
                stream.close()
            except OSError:  # a pipe whose reader is gone
                pass
