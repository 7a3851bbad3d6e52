"""Shared pytest fixtures.

Real data lives in ``../shared/data`` beside the repository (never copied in);
tests that need it use the ``shared_data`` fixture and skip with a reason when
it is absent.  ``TMSTARGET_SHARED_DATA`` overrides the location.

With ``TMSTARGET_REQUIRE_SHARED_DATA=1`` (set by ``.ci/run``) an absent
``../shared/data`` is a failure, not a skip: a green CI means those tests ran.
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# The T1 cache (scalp surface, tissues: tmstarget.anatomy.t1_cache) of a test session is a temporary folder,
# shared by the session's plans (and the CLI runs it starts), never the user's cache.
os.environ["TMSTARGET_CACHE_DIR"] = tempfile.mkdtemp(prefix="tmstarget-test-cache-")
atexit.register(shutil.rmtree, os.environ["TMSTARGET_CACHE_DIR"], True)


def _shared_data_dir():
    env = os.environ.get("TMSTARGET_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data():
    """Path to ``../shared/data``; skips the test when it is absent."""
    path = _shared_data_dir()
    if not (path / "README.md").is_file():
        reason = f"shared test data not found at {path} (set TMSTARGET_SHARED_DATA)"
        if os.environ.get("TMSTARGET_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"{reason}; TMSTARGET_REQUIRE_SHARED_DATA=1 forbids skipping", pytrace=False)
        pytest.skip(reason)
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def sample_plan_dir(tmp_path_factory):
    """The sample patient planned once per session (rumination-dmpfc, MNI space, coil on its T1): the folder."""
    import tmstarget

    out = tmp_path_factory.mktemp("sample-plan") / "plan"
    tmstarget.plan(REPO_ROOT / "sample_data", participant="01").save(out)
    return out
