"""Benchmark: the plan report (``report.html``) of the sample patient, its size and build time.

    python bench/bench_report.py [--repeats 3]

Plans ``sample_data`` (participant 01, rumination-dmpfc, no report, no navigation files) into a
temporary folder, then builds the report in this process ``--repeats`` times without the 3D view
and with the viewer's off-screen 3D view (when the viewer is installed). Reported per variant: the
first build (it imports matplotlib and nilearn's plotting; the plan process has nilearn itself
loaded already, as here), the median of the others, each as wall and CPU time, and the file size.
CPU time is what the machine's load does not inflate.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _timed(plan_dir, out, render_3d):
    from tmstarget.outputs.report import write_report

    wall, cpu = time.perf_counter(), time.process_time()
    write_report(plan_dir, out, render_3d=render_3d)
    return time.perf_counter() - wall, time.process_time() - cpu, os.path.getsize(out) / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import nilearn.signal  # noqa: F401  (loaded by every plan before its report)

    from tmstarget.cli._common import scene_renderer
    from tmstarget.cli.main import main as cli

    with tempfile.TemporaryDirectory(prefix="bench-report-") as scratch:
        plan_dir = Path(scratch) / "plan"
        code = cli(["plan", str(ROOT / "sample_data"), "--participant", "01", "--output", str(plan_dir),
                    "--no-report", "--navigation", "none", "-q"])
        if code:
            sys.exit(code)
        variants = [("without the 3D view", None)]
        renderer = scene_renderer()
        variants.append(("with the viewer's 3D view", renderer) if renderer else ("3D view: viewer not installed",
                                                                                  None))
        for name, render in variants:
            runs = [_timed(plan_dir, Path(scratch) / "report.html", render) for _ in range(max(2, args.repeats))]
            rest = runs[1:]
            print(f"{name}: first {runs[0][0]:.2f} s wall / {runs[0][1]:.2f} s CPU; then median "
                  f"{statistics.median(r[0] for r in rest):.2f} s wall / {statistics.median(r[1] for r in rest):.2f} s "
                  f"CPU; {runs[-1][2]:.0f} KB")
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
