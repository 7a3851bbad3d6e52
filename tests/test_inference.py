"""Inference: effective DOF, family-wise null, bootstrap, split halves (against slow, obvious references)."""

import numpy as np
import pytest

from tmstarget.analysis.clean import cleaning_operator
from tmstarget.analysis.inference import effective_dof


def _operator(n=160, t_r=2.0, n_confounds=12, seed=0, kept=None):
    rng = np.random.default_rng(seed)
    confounds = np.cumsum(rng.standard_normal((n, n_confounds)), axis=0)
    return cleaning_operator(n, t_r, confounds=confounds, kept=kept, high_pass_hz=0.01, low_pass_hz=0.1)


def test_effective_dof_of_white_uncleaned_frames_is_the_frame_count():
    assert effective_dof(np.eye(50)) == pytest.approx(50.0)
    seed = np.random.default_rng(1).standard_normal(50)
    assert effective_dof(np.eye(50), seed) == pytest.approx(50.0)
    rows = np.zeros(50, dtype=bool)
    rows[10:30] = True
    assert effective_dof(np.eye(50), seed, rows) == pytest.approx(20.0)


def test_effective_dof_matches_monte_carlo_null_variance_of_r():
    """Reference: correlate a fixed cleaned seed with many cleaned white-noise voxels; var(r) = 1/(N_eff - 1)."""
    rng = np.random.default_rng(3)
    op = _operator(kept=np.setdiff1d(np.arange(160), [40, 41, 90]))
    seed = op @ rng.standard_normal(160)
    rows = np.zeros(op.shape[0], dtype=bool)
    rows[:70] = True
    rows[100:] = True
    voxels = op @ rng.standard_normal((160, 20000))
    s = seed[rows] - seed[rows].mean()
    x = voxels[rows] - voxels[rows].mean(axis=0)
    r = s @ x / np.sqrt((s @ s) * (x * x).sum(axis=0))
    expected = 1.0 + 1.0 / r.var()
    got = effective_dof(op, seed, rows)
    assert got == pytest.approx(expected, rel=0.05)
    # the frame count is far off: a gate or SE computed from it would be badly anti-conservative
    assert got < 0.5 * rows.sum()


def test_effective_dof_without_seed_assumes_the_noise_autocorrelation():
    rng = np.random.default_rng(4)
    op = _operator()
    noise = op @ rng.standard_normal((160, 2 * 8000))
    a, b = noise[:, :8000] - noise[:, :8000].mean(0), noise[:, 8000:] - noise[:, 8000:].mean(0)
    r = (a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0))
    assert effective_dof(op) == pytest.approx(1.0 + 1.0 / r.var(), rel=0.06)


def test_effective_dof_over_two_runs_is_block_diagonal():
    """Frames of separate runs are independent: the DOF of two identical runs is about twice one run's."""
    op = _operator()
    one = effective_dof(op)
    two = effective_dof([op, op])
    assert 1.9 * one < two < 2.1 * one
