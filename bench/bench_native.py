"""Benchmark: DICOM run + T1 -> native target and coil pose (issue 3 §5), time per stage.

Usage::

    python bench/bench_native.py [DICOM_DIR] [--t1 T1] [--protocol NAME]

Defaults: ../shared/data/pydecnef-sub1/dicom/func-run1 (120 Siemens mosaic
volumes) and ../shared/data/pydecnef-sub1/anat/T1w.nii.gz, protocol
sgacc-dlpfc. Runs the same code path as ``tmstarget plan --rest-dicom``
(:func:`tmstarget.plan`, then ``Plan.save``) with a progress callback that stamps every stage,
then times our DICOM -> NIfTI conversion against the dcm2niix binary on the
same folder in the same process run (gzip NIfTI + JSON sidecar each) and
prints their ratio. Goal: total < 5 min on 2 cores.
"""

import argparse
import tempfile
import time
from pathlib import Path

from bench_convert import DEFAULT_DIR, dcm2niix_binary, time_dcm2niix, time_ours

import tmstarget

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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dicom_dir", nargs="?", default=str(DEFAULT_DIR))
    parser.add_argument("--t1", default=str(DEFAULT_T1))
    parser.add_argument("--protocol", default="sgacc-dlpfc")
    args = parser.parse_args(argv)

    clock = StageClock()
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        plan = tmstarget.plan(rest_dicom=args.dicom_dir, t1=args.t1, participant="bench", protocol=args.protocol,
                              progress=clock)
        plan.save(Path(out) / "plan")
        end = time.perf_counter()
    print(f"native plan ({args.protocol}), DICOM {args.dicom_dir} + T1 {args.t1}")
    for name, seconds in clock.durations(end):
        print(f"  {seconds:7.2f} s  {name}")
    print(f"  {end - start:7.2f} s  TOTAL (goal < 300 s)")

    ours = time_ours(Path(args.dicom_dir))
    theirs = time_dcm2niix(dcm2niix_binary(), Path(args.dicom_dir))
    print(f"DICOM -> NIfTI (.nii.gz + .json): tmstarget {ours:.2f} s, dcm2niix {theirs:.2f} s, "
          f"ratio {ours / theirs:.2f}x")


if __name__ == "__main__":
    main()
