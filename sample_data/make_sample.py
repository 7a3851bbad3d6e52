"""Regenerate the embedded sample patient deterministically.

    python sample_data/make_sample.py            # rewrites sample_data/ in place
    python sample_data/make_sample.py --check    # regenerate into a temp folder and compare hashes

The patient is synthetic (see ``tmstarget/synthetic.py`` for the model and the
planted targets); ``ground_truth.json`` says where each planted spot is.
"""

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from tmstarget.testing.patient import SyntheticConfig, make_patient

HERE = Path(__file__).resolve().parent
GENERATED = ("dataset_description.json", "ground_truth.json", "sub-01", "derivatives")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check the committed files are reproduced")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        make_patient(tmp, SyntheticConfig())
        if args.check:
            cmp = filecmp.dircmp(tmp, HERE, ignore=["make_sample.py", "README.md", "__pycache__"])
            diff = cmp.diff_files + [f"{d}/{f}" for d, sub in cmp.subdirs.items() for f in sub.diff_files]
            print("sample data reproduced" if not diff else f"differs: {diff}")
            return 1 if diff else 0
        for name in GENERATED:
            target = HERE / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            shutil.move(str(Path(tmp) / name), str(target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
