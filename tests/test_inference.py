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


# ---------------------------------------------------------------- small block-design case with slow references

from itertools import combinations  # noqa: E402

from tmstarget.analysis import inference  # noqa: E402

N_BLOCKS, BLOCK_FRAMES, N_VOX = 8, 12, 30


def _block_case(effect=0.0, seed=0, effect_voxel=7, n_blocks=N_BLOCKS):
    """Alternating A/B blocks; voxel ``effect_voxel`` couples to the seed with -effect in A and +effect in B."""
    rng = np.random.default_rng(seed)
    t = n_blocks * BLOCK_FRAMES
    block_of_row = np.repeat(np.arange(n_blocks), BLOCK_FRAMES)
    is_a = np.arange(n_blocks) % 2 == 0
    seed_ts = rng.standard_normal(t)
    data = rng.standard_normal((t, N_VOX))
    sign = np.where(is_a[block_of_row], -1.0, 1.0)
    data[:, effect_voxel] += effect * sign * seed_ts
    return data, seed_ts, block_of_row, is_a


def _reference_delta_z(data, seed_ts, block_of_row, a_blocks):
    """Plain loop: Pearson r per voxel with np.corrcoef on the frames of each state."""
    rows_a = np.isin(block_of_row, a_blocks)
    rows_b = ~rows_a
    out = []
    for v in range(data.shape[1]):
        ra = np.corrcoef(seed_ts[rows_a], data[rows_a, v])[0, 1]
        rb = np.corrcoef(seed_ts[rows_b], data[rows_b, v])[0, 1]
        out.append(np.arctanh(ra) - np.arctanh(rb))
    return np.array(out)


def _engine_p(data, seed_ts, block_of_row, is_a, direction="negative", n_permutations=1000, rng_seed=0):
    sums = inference.block_sums(data, seed_ts, block_of_row, len(is_a))
    w = [is_a.astype(float)[None], (~is_a).astype(float)[None]]
    observed = inference.region_extreme(inference.score_from_weights(sums, w)[0], direction)
    null, exhaustive = inference.contrast_null(sums, is_a, np.ones(len(is_a), bool), direction, n_permutations,
                                               np.random.default_rng(rng_seed))
    return inference.p_fwe(observed, null), len(null), exhaustive


def test_block_sums_give_the_plain_correlation_maps():
    data, seed_ts, block_of_row, is_a = _block_case(effect=0.4)
    sums = inference.block_sums(data, seed_ts, block_of_row, N_BLOCKS)
    got = inference.score_from_weights(sums, [is_a.astype(float)[None], (~is_a).astype(float)[None]])[0]
    np.testing.assert_allclose(got, _reference_delta_z(data, seed_ts, block_of_row, np.flatnonzero(is_a)),
                               atol=1e-10)


@pytest.mark.parametrize("effect", [0.0, 0.25])
def test_exhaustive_relabeling_p_equals_a_slow_reference_loop(effect):
    data, seed_ts, block_of_row, is_a = _block_case(effect=effect, seed=5)
    observed = -_reference_delta_z(data, seed_ts, block_of_row, np.flatnonzero(is_a)).min()
    extremes = [-_reference_delta_z(data, seed_ts, block_of_row, list(a)).min()
                for a in combinations(range(N_BLOCKS), N_BLOCKS // 2)]
    reference = np.mean(np.array(extremes) >= observed - 1e-12)  # the observed labeling is one of them
    p, n, exhaustive = _engine_p(data, seed_ts, block_of_row, is_a)
    assert exhaustive and n == 69
    assert p == pytest.approx(reference, abs=1e-12)


def test_random_relabeling_p_matches_the_reference_within_monte_carlo_error():
    data, seed_ts, block_of_row, is_a = _block_case(effect=0.05, seed=11, n_blocks=14)  # C(14, 7) = 3432
    rng = np.random.default_rng(99)
    observed = -_reference_delta_z(data, seed_ts, block_of_row, np.flatnonzero(is_a)).min()
    extremes = np.array([-_reference_delta_z(data, seed_ts, block_of_row,
                                             np.flatnonzero(rng.permutation(is_a))).min() for _ in range(400)])
    reference = (1 + np.sum(extremes >= observed)) / (1 + len(extremes))
    p, n, exhaustive = _engine_p(data, seed_ts, block_of_row, is_a, n_permutations=2000)
    assert not exhaustive and n == 2000
    assert 0.05 < reference < 0.95  # a case where the comparison means something
    se = np.sqrt(reference * (1 - reference) / 400 + p * (1 - p) / 2000)
    assert abs(p - reference) < 4 * se


def test_tail_direction_follows_the_picker():
    """A planted drop in A (negative delta z) is significant looking for negatives, not looking for positives."""
    data, seed_ts, block_of_row, is_a = _block_case(effect=0.6, seed=2)
    p_neg, n, _ = _engine_p(data, seed_ts, block_of_row, is_a, "negative")
    p_pos, _, _ = _engine_p(data, seed_ts, block_of_row, is_a, "positive")
    assert p_neg == pytest.approx(1 / (1 + n))
    assert p_pos > 0.2
    assert inference.region_extreme(np.array([-3.0, 1.0]), "negative") == 3.0
    assert inference.region_extreme(np.array([-3.0, 1.0]), "positive") == 1.0


def test_null_relabeling_keeps_the_block_counts_and_leaves_out_the_observed_labeling():
    is_first = np.array([1, 0, 1, 0, 1, 0], dtype=bool)
    rows, exhaustive = inference.relabelings(is_first, 1000, np.random.default_rng(0))
    assert exhaustive and len(rows) == 19 and (rows.sum(axis=1) == 3).all()
    assert not any(np.array_equal(r, is_first) for r in rows)
    assert len({tuple(r) for r in rows}) == 19


def test_p_fwe_counts_ties_and_adds_one():
    assert inference.p_fwe(2.0, np.array([1.0, 2.0, 3.0])) == pytest.approx(3 / 4)
    assert inference.p_fwe(5.0, np.zeros(99)) == pytest.approx(0.01)


# ---------------------------------------------------------------- rest maps: phase randomization


def test_phase_randomized_surrogates_keep_the_spectrum_not_the_order():
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.standard_normal(101))
    s = inference.phase_randomized(x, 50, rng)
    np.testing.assert_allclose(np.abs(np.fft.rfft(s, axis=1)), np.abs(np.fft.rfft(x))[None].repeat(50, 0),
                               rtol=1e-8, atol=1e-8)
    assert np.all(np.abs([np.corrcoef(x, si)[0, 1] for si in s]) < 0.99)


def test_seed_null_matches_a_slow_reference_within_monte_carlo_error():
    """Reference: per surrogate, random phases by hand, projection with the operator's pseudo-inverse, np.corrcoef."""
    rng = np.random.default_rng(8)
    n_frames = 120
    op = _operator(n=n_frames, n_confounds=6, seed=2)
    seed_ts = op @ rng.standard_normal(n_frames)
    data = op @ rng.standard_normal((n_frames, 25))
    data[:, 3] -= 0.25 * seed_ts / seed_ts.std() * data[:, 3].std()
    rows = np.ones(op.shape[0], dtype=bool)
    basis = inference.range_basis(op)
    projector = op @ np.linalg.pinv(op, rcond=1e-8)
    z_obs = np.arctanh([np.corrcoef(seed_ts, data[:, v])[0, 1] for v in range(25)])
    observed = -z_obs.min()
    ref_rng = np.random.default_rng(1234)
    amplitude = np.abs(np.fft.rfft(seed_ts))
    extremes = []
    for _ in range(500):
        phases = ref_rng.uniform(0, 2 * np.pi, len(amplitude))
        phases[0] = 0.0
        phases[-1] = np.pi * ref_rng.integers(0, 2)  # even length: the Nyquist bin stays real
        surrogate = np.fft.irfft(amplitude * np.exp(1j * phases), n=n_frames)
        r = np.corrcoef(np.vstack([projector @ surrogate, data.T]))[0, 1:]
        extremes.append(-np.arctanh(r).min())
    reference = (1 + np.sum(np.array(extremes) >= observed)) / 501
    null = inference.seed_null(data, seed_ts, rows, [slice(0, op.shape[0])], [basis], "negative", 2000,
                               np.random.default_rng(0))
    p = inference.p_fwe(observed, null)
    assert 0.03 < reference < 0.97
    se = np.sqrt(reference * (1 - reference) / 500 + p * (1 - p) / 2000)
    assert abs(p - reference) < 4 * se


# ---------------------------------------------------------------- bootstrap and split halves


def test_interleaved_halves_alternate_blocks_within_each_state():
    first, second = inference.interleaved_halves([np.array([0, 2, 4, 6]), np.array([1, 3, 5, 7])])
    assert np.flatnonzero(first[0][0]).tolist() == [0, 4] and np.flatnonzero(second[0][0]).tolist() == [2, 6]
    assert np.flatnonzero(first[1][0]).tolist() == [1, 5] and np.flatnonzero(second[1][0]).tolist() == [3, 7]


def test_interleaved_halves_are_not_fooled_by_a_drift_in_where_the_effect_is():
    """Effect at voxel 3 in the first half of the run, at voxel 9 in the second: interleaved halves agree,
    a first-versus-second-half split would not."""
    rng = np.random.default_rng(4)
    t = N_BLOCKS * BLOCK_FRAMES
    block_of_row = np.repeat(np.arange(N_BLOCKS), BLOCK_FRAMES)
    seed_ts = rng.standard_normal(t)
    data = 0.3 * rng.standard_normal((t, N_VOX))
    data[: t // 2, 3] += -seed_ts[: t // 2]
    data[t // 2:, 9] += -seed_ts[t // 2:]
    sums = inference.block_sums(data, seed_ts, block_of_row, N_BLOCKS)
    state = [np.arange(N_BLOCKS)]
    halves = inference.interleaved_halves(state)
    picks = [int(np.argmin(inference.score_from_weights(sums, h)[0])) for h in halves]
    first_second = [np.r_[np.ones(4), np.zeros(4)][None], np.r_[np.zeros(4), np.ones(4)][None]]
    naive = [int(np.argmin(inference.score_from_weights(sums, [w])[0])) for w in first_second]
    assert naive[0] != naive[1]  # the naive split sees the drift as instability
    assert picks[0] == picks[1]


def test_bootstrap_weights_resample_each_state_with_replacement():
    w = inference.bootstrap_weights([np.array([0, 2, 4]), np.array([1, 3])], 50, np.random.default_rng(0))
    assert (w[0].sum(axis=1) == 3).all() and (w[1].sum(axis=1) == 2).all()
    assert (w[0][:, [1, 3]] == 0).all() and (w[1][:, [0, 2, 4]] == 0).all()
    assert w[0].max() > 1  # with replacement


def test_spread_and_share_within_5_mm():
    points = np.array([[0, 0, 0], [3, 0, 0], [0, 4, 0], [6, 8, 0]], dtype=float)
    spread, share = inference.spread_mm(points, [0, 0, 0])
    assert share == pytest.approx(0.75)
    assert spread == pytest.approx(np.percentile([0, 3, 4, 10], 95))


def test_standardized_score_uses_effective_dof_not_frames():
    assert inference.standardized_score(-0.6, [28.0, 28.0]) == pytest.approx(-0.6 / np.sqrt(2 / 25))
    assert inference.standardized_score(0.5, [103.0]) == pytest.approx(5.0)
    assert inference.standardized_score(0.5, [3.0]) is None


def test_time_segments_split_a_run_evenly():
    seg = inference.time_segments(np.arange(0, 240, 2.0), 60.0)
    assert seg.max() == 3 and np.bincount(seg).tolist() == [30, 30, 30, 30]
    assert (np.diff(seg) >= 0).all()


def test_resamples_without_a_target_count_as_infinitely_far():
    """A bootstrap resample whose region holds no value in the picker's direction has no target (the cluster
    picker has nothing to cluster): it never lands within 5 mm, and past 5 % of them the spread is unbounded."""
    points = np.zeros((100, 3))
    points[:3] = np.nan  # 3 % without a target: the 95th percentile is still a distance
    spread, share = inference.spread_mm(points, [0, 0, 0])
    assert spread == 0.0 and share == pytest.approx(0.97)
    points[:10] = np.nan  # 10 %: unbounded
    spread, share = inference.spread_mm(points, [0, 0, 0])
    assert spread == np.inf and share == pytest.approx(0.90)
