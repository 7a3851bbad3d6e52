"""Benchmark: DICOM run + T1 -> native target and coil pose (issue 3 §5, issue 19), time per stage.

Usage::

    python bench/bench_native.py [DICOM_DIR] [--t1 T1] [--protocol NAME] [--base OTHER_TREE] [--rounds N]

Defaults: ../shared/data/pydecnef-sub1/dicom/func-run1 (120 Siemens mosaic
volumes) and ../shared/data/pydecnef-sub1/anat/T1w.nii.gz, protocol
sgacc-dlpfc. Each measurement runs the same code path as ``tmstarget plan --rest-dicom``
(:func:`tmstarget.plan`, then ``Plan.save``) in a fresh process, with a progress callback that
stamps every stage, twice: with an empty T1 cache (cold: T1 -> MNI registration, scalp and tissue
segmentation computed) and again with the cache that run filled (warm). Registrations and the
tissue segmentation that run in processes of their own are listed with their own wall time
(what the plan logs). ``--base`` times another source tree (e.g. ``git archive`` of an older
commit) in the same rounds, alternating with this one, so both see the same machine load; the
load average is printed with every run. Then our DICOM -> NIfTI conversion is timed against the
dcm2niix binary on the same folder (gzip NIfTI + JSON sidecar each). Goal (issue 19): under 60 s
on 2 cores.
"""

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_convert import DEFAULT_DIR, dcm2niix_binary, time_dcm2niix, time_ours

HERE = Path(__file__).resolve().parent
DEFAULT_T1 = DEFAULT_DIR.parents[1] / "anat" / "T1w.nii.gz"


class StageClock:
    """Progress callback recording when each stage starts."""

    def __init__(self):
        self.start = time.perf_counter()
        self.marks = []

    def __call__(self, message):
        self.marks.append((message, time.perf_counter()))

    def durations(self, end):
        stamps = self.marks + [("end", end)]
        return [(name, stamps[i + 1][1] - t) for i, (name, t) in enumerate(stamps[:-1])]


class _Timings(logging.Handler):
    """Keeps the log lines of the registrations and the segmentation that give their own duration."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        message = record.getMessage()
        if record.name.startswith("tmstarget.anatomy") and ("registration" in message or "segmentation" in message
                                                             or "SyN" in message):
            self.lines.append(message)


def one_run(dicom_dir, t1, protocol):
    """One plan in this process (its tmstarget from PYTHONPATH): stages, total and logged durations."""
    import tmstarget

    handler = _Timings()
    logging.getLogger("tmstarget").addHandler(handler)
    logging.getLogger("tmstarget").setLevel(logging.INFO)
    clock = StageClock()
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        plan = tmstarget.plan(rest_dicom=dicom_dir, t1=t1, participant="bench", protocol=protocol, progress=clock)
        plan.save(Path(out) / "plan")
        end = time.perf_counter()
    return {"stages": clock.durations(end), "total": end - start, "logged": handler.lines}


def measure(tree, args, cache):
    """Run :func:`one_run` in a fresh interpreter importing ``tree``'s tmstarget, with the T1 cache ``cache``."""
    env = {**os.environ, "PYTHONPATH": str(tree), "TMSTARGET_CACHE_DIR": str(cache), "NUMPY_MADVISE_HUGEPAGE": "0"}
    before = os.getloadavg()
    code = (f"import sys, json; sys.path.insert(0, {str(HERE)!r}); from bench_native import one_run; "
            f"print(json.dumps(one_run({args.dicom_dir!r}, {args.t1!r}, {args.protocol!r})))")
    done = subprocess.run([sys.executable, "-P", "-c", code], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the plan failed with {tree}:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load"] = [before, os.getloadavg()]
    return result


def show(name, result):
    load = " -> ".join(f"{a[0]:.1f}" for a in result["load"])
    print(f"\n{name}: {result['total']:.1f} s (load average {load})")
    for stage, seconds in result["stages"]:
        print(f"  {seconds:7.2f} s  {stage}")
    for line in result["logged"]:
        print(f"      log: {line}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dicom_dir", nargs="?", default=str(DEFAULT_DIR))
    parser.add_argument("--t1", default=str(DEFAULT_T1))
    parser.add_argument("--protocol", default="sgacc-dlpfc")
    parser.add_argument("--base", type=Path, help="another source tree, timed in the same rounds")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-convert", action="store_true", help="skip the DICOM conversion against dcm2niix")
    args = parser.parse_args(argv)
    args.dicom_dir, args.t1 = str(Path(args.dicom_dir).resolve()), str(Path(args.t1).resolve())

    trees = ([("base", args.base.resolve())] if args.base else []) + [("this tree", HERE.parent)]
    print(f"native plan ({args.protocol}), DICOM {args.dicom_dir} + T1 {args.t1}")
    totals = {}
    for round_ in range(args.rounds):
        for name, tree in trees:
            with tempfile.TemporaryDirectory(prefix="bench-native-cache-") as cache:
                for state in ("cold", "warm"):
                    result = measure(tree, args, cache)
                    show(f"round {round_ + 1}, {name}, {state} T1 cache", result)
                    totals.setdefault((name, state), []).append(result["total"])
    print("\nTOTAL (goal < 60 s on 2 cores)")
    for (name, state), values in totals.items():
        print(f"  {name:10s} {state}: {' '.join(f'{v:.1f}' for v in values)} s")

    if not args.no_convert:
        ours = time_ours(Path(args.dicom_dir))
        theirs = time_dcm2niix(dcm2niix_binary(), Path(args.dicom_dir))
        print(f"DICOM -> NIfTI (.nii.gz + .json): tmstarget {ours:.2f} s, dcm2niix {theirs:.2f} s, "
              f"ratio {ours / theirs:.2f}x")


if __name__ == "__main__":
    main()
