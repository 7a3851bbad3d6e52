"""Plant known bugs in a scratch copy of the repository and check that the tests catch each one.

The suite's safety net (issue 20): a test suite that only checks the code
against itself passes a behaviour change as happily as a code move. Each bug
below is a small, plausible edit; for each one this script copies the working
tree to a temporary folder (never touching this checkout), applies the edit,
runs the named test files with that copy first on ``PYTHONPATH`` and reports
which tests fail. A bug that no test catches is a hole in the net.

Usage::

    python tests/planted_bugs.py              # every bug
    python tests/planted_bugs.py hrf offbyone # some bugs
    python tests/planted_bugs.py --list

Exit status 1 when a bug goes uncaught. Not collected by pytest (no ``test_``
prefix): it runs the suite many times and takes about 15 minutes.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Bug:
    name: str
    description: str
    edits: tuple  # (file, old, new): ``old`` must occur exactly once in ``file``
    tests: tuple  # test files (or node ids) run against the bugged copy


BUGS = (
    Bug("coreg-inverted", "EPI->T1 coregistration applied the wrong way round (native path)",
        (("tmstarget/workflows/native.py", 'dst = map_points(src, transform, "forward")',
          'dst = map_points(src, transform, "inverse")'),
         ("tmstarget/workflows/native.py", 't1_pts = np.atleast_2d(map_points(epi_pts, epi_to_t1, "forward"))',
          't1_pts = np.atleast_2d(map_points(epi_pts, epi_to_t1, "inverse"))')),
        ("tests/test_native_truth.py", "tests/test_native.py")),
    Bug("mosaic-spacing-swapped", "row/column pixel spacing swapped in the mosaic geometry",
        (("tmstarget/ingest/dicom/headers.py",
          "+ row_cos * spacing[1] * (mosaic_cols - cols) / 2.0\n"
          "        + col_cos * spacing[0] * (mosaic_rows - rows) / 2.0",
          "+ row_cos * spacing[0] * (mosaic_cols - cols) / 2.0\n"
          "        + col_cos * spacing[1] * (mosaic_rows - rows) / 2.0"),),
        ("tests/test_mosaic_geometry.py", "tests/test_synthetic_dicom.py", "tests/test_dicom.py")),
    Bug("scalp-qform", "qform used instead of sform for the scalp",
        (("tmstarget/anatomy/scalp.py", "affine = np.asarray(img.affine, dtype=float)",
          "affine = np.asarray(img.get_qform(), dtype=float)"),),
        ("tests/test_t1_geometry.py", "tests/test_scalp.py")),
    Bug("hrf-dropped", "HRF delay dropped when selecting state frames",
        (("tmstarget/analysis/connectivity.py", "start = onset + hrf_delay_s + transition_s",
          "start = onset + transition_s"),
         ("tmstarget/analysis/connectivity.py", "stop = onset + duration + hrf_delay_s", "stop = onset + duration")),
        ("tests/test_plan.py", "tests/test_references.py", "tests/test_streaming.py")),
    Bug("frames-off-by-one", "state frames off by one volume",
        (("tmstarget/analysis/connectivity.py", "times = np.asarray(frames) * t_r",
          "times = (np.asarray(frames) + 1) * t_r"),),
        ("tests/test_plan.py", "tests/test_references.py", "tests/test_streaming.py")),
    Bug("fisher-z-dropped", "Pearson r reported as Fisher z (arctanh dropped)",
        (("tmstarget/analysis/connectivity.py", "return np.arctanh(np.clip(r, -_R_LIMIT, _R_LIMIT))",
          "return np.clip(r, -_R_LIMIT, _R_LIMIT)"),),
        ("tests/test_plan.py", "tests/test_references.py")),
    Bug("rescale-slope-ignored", "DICOM RescaleSlope ignored when converting",
        (("tmstarget/ingest/dicom/headers.py", "slope = 1.0 if not np.isfinite(slope) or slope == 0 else slope",
          "slope = 1.0"),),
        ("tests/test_dicom.py", "tests/test_synthetic_dicom.py")),
    Bug("philips-requantised", "a scaled image re-quantised on writing (Philips stored integers lost)",
        (("tmstarget/_fileio.py", "    img = _keep_stored_scaling(img)\n", ""),),
        ("tests/test_dicom_exact.py",)),
    Bug("mosaic-slices-by-cross-product", "mosaic slices sorted along row x column instead of the tile order",
        (("tmstarget/ingest/dicom/assemble.py", "    normal = headers[0].slice_direction\n", "    normal = None\n"),),
        ("tests/test_dicom_exact.py",)),
    Bug("brainsight-z-kept", "Brainsight coil z axis written into the head instead of out of it",
        (("tmstarget/spaces.py", "_K_BRAINSIGHT = np.diag([-1.0, 1.0, -1.0])",
          "_K_BRAINSIGHT = np.diag([1.0, -1.0, 1.0])"),),
        ("tests/test_navigation_conformance.py", "tests/test_navigation_formats.py")),
    Bug("coil-x-flipped", "coil pose x = z x y instead of y x z (a left-handed, mirrored coil)",
        (("tmstarget/spaces.py", "mat[:3, 0] = np.cross(y_ras, z_ras)", "mat[:3, 0] = np.cross(z_ras, y_ras)"),),
        ("tests/test_scalp.py",)),
    Bug("dof-frame-count", "the frame count used as the effective DOF (cleaning and autocorrelation ignored)",
        (("tmstarget/analysis/inference.py", "return 0.0 if not np.isfinite(var) or var <= 0 else 1.0 + 1.0 / var",
          "return float(state_noise_covariance(operators, rows).shape[0])"),),
        ("tests/test_inference.py",)),
    Bug("fwe-tail-flipped", "the family-wise null taken in the other tail from the picker's direction",
        (("tmstarget/analysis/inference.py",
          "return -scores.min(axis=-1) if direction == \"negative\" else scores.max(axis=-1)",
          "return scores.max(axis=-1) if direction == \"negative\" else -scores.min(axis=-1)"),),
        ("tests/test_inference.py",)),
    Bug("split-first-second-half", "split halves as first versus second half instead of interleaved blocks",
        (("tmstarget/analysis/inference.py", "w[0, blocks[h::2]] = 1.0",
          "w[0, np.array_split(blocks, 2)[h]] = 1.0"),),
        ("tests/test_inference.py",)),
)


def _copy_tree(dest, ref=None):
    """Copy the working tree (tracked and new files, no .git, no caches), or commit ``ref``, to ``dest``."""
    if ref is not None:
        dest.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", ref], cwd=REPO, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        return
    ignore = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", "*.egg-info", "build", ".pytest_cache")
    shutil.copytree(REPO, dest, ignore=ignore)


def _plant(root, bug):
    for rel, old, new in bug.edits:
        path = root / rel
        text = path.read_text()
        count = text.count(old)
        if count != 1:
            raise SystemExit(f"{bug.name}: expected the text to plant once in {rel}, found it {count} times: {old!r}")
        path.write_text(text.replace(old, new))


def run_bug(bug, verbose=False, ref=None):
    """Plant ``bug`` in a scratch copy and run its tests; returns (failed test ids, seconds)."""
    with tempfile.TemporaryDirectory(prefix=f"planted-{bug.name}-") as tmp:
        root = Path(tmp) / "repo"
        _copy_tree(root, ref)
        _plant(root, bug)
        # the copy lies elsewhere: point it at this checkout's ../shared/data, and never skip those tests
        shared = os.environ.get("TMSTARGET_SHARED_DATA", str(REPO.parent / "shared" / "data"))
        env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1", TMSTARGET_SHARED_DATA=shared,
                   TMSTARGET_REQUIRE_SHARED_DATA="1")
        where = subprocess.run([sys.executable, "-c", "import tmstarget; print(tmstarget.__file__)"],
                               cwd=root, env=env, capture_output=True, text=True, check=True).stdout.strip()
        if not where.startswith(str(root)):
            raise SystemExit(f"{bug.name}: the scratch copy is not the one imported ({where})")
        start = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", *bug.tests],
                                cwd=root, env=env, capture_output=True, text=True)
        seconds = time.monotonic() - start
        if verbose:
            print(result.stdout[-4000:])
        failed = sorted(set(re.findall(r"^(?:FAILED|ERROR) (\S+)", result.stdout, flags=re.M)))
        return failed, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bugs", nargs="*", help="names of the bugs to plant (default: all)")
    parser.add_argument("--list", action="store_true", help="list the bugs and exit")
    parser.add_argument("--verbose", action="store_true", help="show pytest's output")
    parser.add_argument("--ref", help="plant into this commit (git archive) instead of the working tree")
    args = parser.parse_args(argv)
    if args.list:
        for bug in BUGS:
            print(f"{bug.name:24s} {bug.description}")
        return 0
    unknown = set(args.bugs) - {b.name for b in BUGS}
    if unknown:
        parser.error(f"unknown bug(s): {', '.join(sorted(unknown))}")
    chosen = [b for b in BUGS if not args.bugs or b.name in args.bugs]
    missed = []
    print("| planted bug | caught by (failing tests) | run |")
    print("|---|---|---|")
    for bug in chosen:
        failed, seconds = run_bug(bug, args.verbose, args.ref)
        if not failed:
            missed.append(bug.name)
        caught = "<br>".join(failed) if failed else "**NOT CAUGHT**"
        print(f"| {bug.description} (`{bug.name}`) | {caught} | {seconds:.0f} s |", flush=True)
    if missed:
        print(f"not caught: {', '.join(missed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
