"""Benchmark: the plan report (``report.html``), this tree against another commit, in the same run.

    python bench/bench_report.py [--repeats 3] [--base COMMIT] [--overlap 3] [--whole-plan] [-- PLAN ARGS...]

PLAN ARGS default to ``sample_data --participant 01`` (the bench patient:
``bench/results/patient-3mm-240vol --participant 01 --protocol sgacc-dlpfc``). The plan is made
once with this tree (no report, no navigation files). Then, alternating between the two trees
(the other one exported with ``git archive``, default ``main``), a fresh process per build:

* **report step**: what ``tmstarget plan`` spends writing the report. The process loads what a
  plan has loaded before its report (nilearn's signal module), takes the command line's 3D
  renderer (``tmstarget.cli._common.scene_renderer``; started at once when it can start early, as
  the plan command does), waits ``--overlap`` seconds (the analysis the renderer's start-up
  overlaps in a plan), then times ``write_report`` (wall and CPU of this process; a renderer
  process works in parallel).
* **without the 3D view**: ``write_report`` alone in a fresh process (its imports included).
* ``--whole-plan``: the whole ``tmstarget plan`` command with its report (process start to exit),
  and the time from its "writing the report" line to the exit.

Medians over ``--repeats``; the load average is printed (2 shared cores: compare trees within a run).
``NUMPY_MADVISE_HUGEPAGE=0`` is set for every process (see ``tmstarget.cli._common``).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_REPORT_STEP = """
import json, sys, time
import nilearn.signal  # loaded by every plan before its report
from tmstarget.cli._common import scene_renderer
from tmstarget.outputs.report import write_report
plan_dir, out, overlap, with_3d = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4] == "1"
renderer = scene_renderer() if with_3d else None
if hasattr(renderer, "start"):
    renderer.start()
time.sleep(overlap if with_3d else 0.0)
wall, cpu = time.perf_counter(), time.process_time()
write_report(plan_dir, out, render_3d=renderer)
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
if hasattr(renderer, "close"):
    renderer.close()
page = open(out, encoding="utf-8").read()
print(json.dumps({"wall": wall, "cpu": cpu, "kb": len(page.encode()) / 1024,
                  "view3d": "rendered off-screen by the viewer" in page}))
"""


def _env(tree):
    return dict(os.environ, PYTHONPATH=str(tree), NUMPY_MADVISE_HUGEPAGE="0")


def _report_step(tree, plan_dir, out, overlap, with_3d):
    done = subprocess.run([sys.executable, "-c", _REPORT_STEP, str(plan_dir), str(out), str(overlap),
                           "1" if with_3d else "0"], cwd=tree, env=_env(tree), capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"report step failed in {tree}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def _whole_plan(tree, plan_args, out):
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "tmstarget.cli", "plan", *plan_args, "--output", str(out),
                                "--force"], cwd=tree, env=_env(tree), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    report = None
    for line in process.stderr:
        if line.rstrip().endswith("writing the report"):
            report = time.perf_counter()
    if process.wait():
        sys.exit(f"plan failed in {tree}")
    end = time.perf_counter()
    return {"total": end - start, "report_to_exit": end - (report or end)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--base", default="main", help="the other commit (default: main)")
    parser.add_argument("--overlap", type=float, default=3.0,
                        help="seconds between starting the renderer and the report (the plan's analysis)")
    parser.add_argument("--whole-plan", action="store_true", help="also time the whole plan command")
    parser.add_argument("plan_args", nargs="*", help="tmstarget plan arguments (after --)")
    args = parser.parse_args()
    plan_args = [str(ROOT / a) if (ROOT / a).exists() else a for a in args.plan_args] or \
        [str(ROOT / "sample_data"), "--participant", "01"]
    with tempfile.TemporaryDirectory(prefix="bench-report-") as scratch:
        scratch = Path(scratch)
        base = scratch / "base"
        base.mkdir()
        archive = subprocess.run(["git", "archive", args.base], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        plan_dir = scratch / "plan"
        subprocess.run([sys.executable, "-m", "tmstarget.cli", "plan", *plan_args, "--output", str(plan_dir),
                        "--no-report", "--navigation", "none", "-q"], cwd=ROOT, env=_env(ROOT), check=True)
        trees = {f"{args.base} ({base.name})": base, "this tree": ROOT}
        results = {name: {"step": [], "no3d": [], "plan": []} for name in trees}
        for _ in range(args.repeats):
            for name, tree in trees.items():
                results[name]["step"].append(_report_step(tree, plan_dir, scratch / "r.html", args.overlap, True))
                results[name]["no3d"].append(_report_step(tree, plan_dir, scratch / "r.html", 0.0, False))
                if args.whole_plan:
                    results[name]["plan"].append(_whole_plan(tree, plan_args, scratch / "whole"))
        print(f"plan: {' '.join(plan_args)}; {args.repeats} alternating repeats, medians")
        for name, r in results.items():
            def med(rows, key):
                return statistics.median(row[key] for row in rows)

            print(f"{name}: report step {med(r['step'], 'wall'):.2f} s wall / {med(r['step'], 'cpu'):.2f} s CPU "
                  f"(3D view: {all(row['view3d'] for row in r['step'])}), {r['step'][-1]['kb']:.0f} KB; "
                  f"without the 3D view, fresh process {med(r['no3d'], 'wall'):.2f} s wall / "
                  f"{med(r['no3d'], 'cpu'):.2f} s CPU")
            if r["plan"]:
                print(f"    whole plan {med(r['plan'], 'total'):.2f} s, 'writing the report' to exit "
                      f"{med(r['plan'], 'report_to_exit'):.2f} s")
    print(f"load average: {' '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
