"""``python -m tmstarget.viewer PLAN_DIR [--screenshot FILE.png] [--live WATCH_DIR] [--compare PLAN_DIR ...]``."""

import argparse
import sys

from tmstarget.errors import TmsTargetError
from tmstarget.viewer.command import add_arguments, run


def main(argv=None):
    """Parse, run, and print a library error as one line (exit 1)."""
    parser = argparse.ArgumentParser(prog="python -m tmstarget.viewer",
                                     description="The tmstarget desktop viewer (same as 'tmstarget view').")
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except TmsTargetError as exc:
        print(f"tmstarget view: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
