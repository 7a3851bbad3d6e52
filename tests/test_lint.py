"""The repository passes ``ruff check`` (configured in pyproject.toml; ruff comes with the test extra)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ruff_check_is_clean():
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "."],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"ruff check . found problems (fix: ruff check --fix .):\n{done.stdout}{done.stderr}"
