"""Benchmark: tmstarget DICOM -> NIfTI conversion against dcm2niix, same folder, same run.

Usage::

    python bench/bench_convert.py [DICOM_DIR] [--repeats N]

Default folder: ../shared/data/pydecnef-sub1/dicom/func-run1 (120 Siemens
mosaic files).  Both converters write a gzip-compressed NIfTI plus a JSON
sidecar into a fresh temporary folder; the median wall time of N runs is
reported, with their ratio and our peak memory (tracemalloc, Python and numpy
allocations) and the process' peak RSS.  dcm2niix is the binary shipped in
the ``dcm2niix`` pip package, called directly (no Python wrapper start-up).
"""

import argparse
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
import tracemalloc
from pathlib import Path

from tmstarget.ingest.dicom.series import convert, load_series

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "pydecnef-sub1" / "dicom" / "func-run1"


def dcm2niix_binary():
    """Path of the dcm2niix executable from the pip package (or PATH)."""
    try:
        import dcm2niix

        candidate = Path(dcm2niix.__file__).parent / "dcm2niix"
        if candidate.is_file():
            return str(candidate)
    except ImportError:
        pass
    found = shutil.which("dcm2niix")
    if found is None:
        raise SystemExit("dcm2niix not found: pip install dcm2niix")
    return found


def time_ours(dicom_dir):
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        convert(dicom_dir, Path(out) / "nii", "bench")
        return time.perf_counter() - start


def time_load_only(dicom_dir):
    start = time.perf_counter()
    load_series(dicom_dir)
    return time.perf_counter() - start


def time_dcm2niix(binary, dicom_dir):
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run(
            [binary, "-z", "y", "-b", "y", "-f", "bench", "-o", out, str(dicom_dir)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dicom_dir", nargs="?", default=str(DEFAULT_DIR))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    dicom_dir = Path(args.dicom_dir)
    binary = dcm2niix_binary()
    n_files = sum(1 for p in dicom_dir.iterdir() if p.is_file())

    ours, theirs, load_only = [], [], []
    for _ in range(args.repeats):
        theirs.append(time_dcm2niix(binary, dicom_dir))
        ours.append(time_ours(dicom_dir))
        load_only.append(time_load_only(dicom_dir))
    tracemalloc.start()
    time_ours(dicom_dir)
    _, peak_bytes = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    ours_s, theirs_s = statistics.median(ours), statistics.median(theirs)
    print(f"folder: {dicom_dir} ({n_files} files), median of {args.repeats} runs")
    print(f"tmstarget convert (.nii.gz + .json): {ours_s:.3f} s")
    print(f"tmstarget load_series (in memory):   {statistics.median(load_only):.3f} s")
    print(f"dcm2niix -z y -b y:                   {theirs_s:.3f} s  ({binary})")
    print(f"ratio tmstarget / dcm2niix:           {ours_s / theirs_s:.2f}")
    print(f"tmstarget peak traced memory:         {peak_bytes / 2**20:.1f} MiB (tracemalloc)")
    print(f"process peak RSS:                     {max_rss_mb:.1f} MiB")


if __name__ == "__main__":
    main()
