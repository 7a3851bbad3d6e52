"""Check: a plan made by this tree is byte-identical to one made by another commit, apart from dates.

    python bench/same_plan.py [--base COMMIT] [--keep DIR] [-- PLAN ARGS...]

Files the newer tree adds (a new output) are listed, not compared. The other commit is exported
with ``git archive`` into a scratch folder; the same
``tmstarget plan`` command (default: ``sample_data --participant 01``, every
navigation format) runs once with that tree and twice with this one (the second
time with the T1 cache of the first: ``tmstarget.anatomy.t1_cache``), each into
its own folder, and every file is compared byte for byte after removing what
holds the time of the run: ``provenance.date_utc`` of ``target.json``, the
``created`` stamp of the navigation provenance files, the ``target_json_sha256``
they quote (the hash of a file holding a date), and the time stamp in the name
of the Localite file (and where it is quoted), and any other UTC time stamp (the report's).
Each plan folder is called ``plan`` (the command line
is in the provenance). Exit status 0 when all are identical; else each difference is printed.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ARGS = ["sample_data", "--participant", "01"]
_STAMPS = [
    (re.compile(rb'"date_utc": "[^"]*"'), b'"date_utc": "<date>"'),
    (re.compile(rb'"created": "[^"]*"'), b'"created": "<date>"'),
    (re.compile(rb'"target_json_sha256": "[0-9a-f]{64}"'), b'"target_json_sha256": "<sha256>"'),
    (re.compile(rb"InstrumentMarker\d{17}"), b"InstrumentMarker<time>"),
    (re.compile(rb"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+00:00"), b"<date>"),  # any other UTC stamp (the report)
]


def normalized_files(folder):
    """{relative name: bytes} of a plan folder with the run's time removed (see the module docstring)."""
    out = {}
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file():
            continue
        name = re.sub(r"InstrumentMarker\d{17}", "InstrumentMarker<time>", path.relative_to(folder).as_posix())
        data = path.read_bytes()
        for pattern, replacement in _STAMPS:
            data = pattern.sub(replacement, data)
        out[name] = data
    return out


def differences(a, b):
    """Lines naming every file that is missing from one folder or differs."""
    fa, fb = normalized_files(a), normalized_files(b)
    lines = [f"only in {a}: {n}" for n in sorted(set(fa) - set(fb))]
    lines += [f"differs: {n}" for n in sorted(set(fa) & set(fb)) if fa[n] != fb[n]]
    return lines


def added_files(a, b):
    """Files only the newer tree writes (new outputs, such as a report): listed, not differences."""
    return sorted(set(normalized_files(b)) - set(normalized_files(a)))


def run_plan(tree, output, args, cache):
    env = {**os.environ, "PYTHONPATH": str(tree), "TMSTARGET_CACHE_DIR": str(cache)}
    # -P: the tree on PYTHONPATH, not the current folder (python -m would put it first on sys.path)
    cmd = [sys.executable, "-P", "-m", "tmstarget.cli", "plan", *args, "--output", str(output), "--quiet"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"plan failed with {tree}:\n{done.stderr[-2000:]}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="commit to compare with (default: main)")
    parser.add_argument("--base-tree", type=Path, help="a source tree to compare with instead of --base (e.g. this "
                        "tree with some commits reverted)")
    parser.add_argument("--keep", type=Path, help="keep the plans in this folder")
    parser.add_argument("plan_args", nargs="*", help="arguments of 'tmstarget plan' (after --)")
    args = parser.parse_args(argv)
    plan_args = args.plan_args or DEFAULT_ARGS
    with tempfile.TemporaryDirectory(prefix="same-plan-") as scratch:
        work = args.keep or Path(scratch)
        base_tree = args.base_tree
        if base_tree is None:
            base_tree = Path(scratch) / "base-tree"
            base_tree.mkdir()
            archive = subprocess.run(["git", "archive", args.base], cwd=ROOT, capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(base_tree)], input=archive, check=True)
        cache = Path(scratch) / "cache"
        base, cold, cached = (work / name / "plan" for name in ("base", "new-cold", "new-cached"))
        run_plan(base_tree, base, plan_args, Path(scratch) / "base-cache")
        run_plan(ROOT, cold, plan_args, cache)
        run_plan(ROOT, cached, plan_args, cache)
        problems = differences(base, cold) + differences(base, cached)
        files = len(normalized_files(base))
        added = added_files(base, cold)
    for line in problems:
        print(line)
    name = args.base_tree or args.base
    print(f"{name} vs this tree (cold and cached T1): {files} files of {name}, "
          + ("identical apart from dates" if not problems else f"{len(problems)} difference(s)")
          + (f"; new files of this tree, not compared: {', '.join(added)}" if added else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
