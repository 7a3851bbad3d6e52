"""Individual-level inference on a connectivity target: is it real, and how sure are we where it is?

Small pure functions on the engine's matrices (cleaned frames x voxels, the
seed, the cleaning operators), used by :func:`tmstarget.analysis.engine.plan`
and by the real-time watcher.

Effective degrees of freedom
    After band-pass filtering, nuisance regression and scrubbing, neighbouring
    frames are strongly correlated, so a state with ``n`` frames carries far
    fewer than ``n`` independent samples.  We model a voxel's noise as white
    noise passed through the run's cleaning operator ``M`` (its rows at the
    state's kept frames, ``A``), so its covariance is ``S = A A'``, and take the
    seed as it is (its own autocorrelation enters through it, Bartlett 1946 /
    Quenouille 1947).  The null variance of Pearson's r between the seed ``s``
    (centred) and such a voxel is ``var0(r) = s' S s / (|s|^2 tr(C S C))`` with
    ``C`` the centring matrix.  The effective DOF is the number of independent
    frames that would give the same variance: ``N_eff = 1 + 1 / var0(r)``
    (white noise, no cleaning: exactly the frame count).  Without a seed, the
    seed is assumed to share the noise's autocorrelation:
    ``var0(r) = tr((C S C)^2) / tr(C S C)^2``.
"""

import numpy as np


def _as_list(operators):
    if isinstance(operators, np.ndarray) and operators.ndim == 2:
        return [operators]
    return list(operators)


def state_noise_covariance(operators, rows=None):
    """Covariance of cleaned white noise at a state's frames (block diagonal over runs).

    Parameters
    ----------
    operators : ndarray (n_kept, n_frames) or sequence of them
        The cleaning operator of each run (``CleaningPlan.operator``), in the
        order their kept frames are concatenated.
    rows : ndarray of bool, optional
        The state's frames over the concatenated kept frames (default: all).

    Returns
    -------
    ndarray, shape (n_rows, n_rows)
        ``A A'`` per run, ``A`` = the operator's rows at the state's frames.
    """
    operators = _as_list(operators)
    total = sum(op.shape[0] for op in operators)
    rows = np.ones(total, dtype=bool) if rows is None else np.asarray(rows, dtype=bool)
    if rows.shape != (total,):
        raise ValueError(f"rows must have one entry per kept frame ({total}); got shape {rows.shape}")
    n = int(rows.sum())
    cov = np.zeros((n, n))
    start = placed = 0
    for op in operators:
        sel = rows[start:start + op.shape[0]]
        a = np.asarray(op, dtype=np.float64)[sel]
        cov[placed:placed + len(a), placed:placed + len(a)] = a @ a.T
        start += op.shape[0]
        placed += len(a)
    return cov


def null_variance_r(operators, seed=None, rows=None):
    """Null variance of Pearson r between the seed and a voxel of cleaned white noise.

    Parameters
    ----------
    operators : ndarray or sequence of ndarray
        Cleaning operators per run (see :func:`state_noise_covariance`).
    seed : ndarray, shape (n_kept_total,), optional
        The cleaned seed over all concatenated kept frames; None: a seed with
        the noise's own autocorrelation.
    rows : ndarray of bool, optional
        The state's frames (default: all kept frames).

    Returns
    -------
    float
    """
    cov = state_noise_covariance(operators, rows)
    n = cov.shape[0]
    if n < 3:
        return np.inf
    row_mean = cov.mean(axis=1)
    centred = cov - row_mean[:, None] - row_mean[None, :] + cov.mean()
    trace = float(np.trace(centred))
    if trace <= 0:
        return np.inf
    if seed is None:
        return float(np.sum(centred * centred)) / trace**2
    s = np.asarray(seed, dtype=np.float64)
    s = s if rows is None else s[np.asarray(rows, dtype=bool)]
    s = s - s.mean()
    norm2 = float(s @ s)
    if norm2 == 0:
        return np.inf
    return float(s @ cov @ s) / (norm2 * trace)


def effective_dof(operators, seed=None, rows=None):
    """Effective degrees of freedom of a seed correlation (see the module docstring).

    Parameters
    ----------
    operators : ndarray (n_kept, n_frames) or sequence of them
        Cleaning operator of each run (rows: kept frames), concatenated in order.
    seed : ndarray, shape (n_kept_total,), optional
        Cleaned seed over the concatenated kept frames.  None: the seed is
        assumed to have the noise's autocorrelation (a design-only figure,
        available before any data, e.g. in real time).
    rows : ndarray of bool, optional
        The state's frames over the concatenated kept frames (default: all).

    Returns
    -------
    float
        ``N_eff = 1 + 1 / var0(r)``: the number of independent frames giving
        the same null variance of r (white, uncleaned data: the frame count);
        the Fisher z of a correlation then has null SD ``1 / sqrt(N_eff - 3)``.
        0 when fewer than 3 frames are selected.
    """
    var = null_variance_r(operators, seed, rows)
    return 0.0 if not np.isfinite(var) or var <= 0 else 1.0 + 1.0 / var


# ---------------------------------------------------------------- blocks of frames


def time_segments(times_s, segment_s):
    """Split frames of one run into contiguous segments of about ``segment_s`` seconds.

    Parameters
    ----------
    times_s : ndarray (n,)
        Acquisition time of each (kept) frame, increasing.
    segment_s : float

    Returns
    -------
    ndarray of int, shape (n,)
        Segment index 0..k-1 of each frame, ``k = max(1, round(span / segment_s))``
        segments of equal duration.
    """
    times_s = np.asarray(times_s, dtype=float)
    if len(times_s) == 0:
        return np.zeros(0, dtype=int)
    start, span = times_s[0], times_s[-1] - times_s[0]
    k = max(1, int(round(span / segment_s)))
    return np.minimum(((times_s - start) / max(span, 1e-9) * k).astype(int), k - 1)


def block_sums(region_data, seed, block_of_row, n_blocks):
    """Per-block sufficient statistics of the seed correlation (the engine's matrix form).

    Parameters
    ----------
    region_data : ndarray (T, V)
        Cleaned frames of the search-region voxels.
    seed : ndarray (T,)
    block_of_row : ndarray of int (T,)
        Block index of each frame, -1 for frames in no block.
    n_blocks : int

    Returns
    -------
    dict
        ``n, s, ss`` (B,) and ``x, xx, sx`` (B, V): frame count, sums of seed,
        seed^2, voxel, voxel^2 and seed*voxel per block (float64).
    """
    block_of_row = np.asarray(block_of_row)
    onehot = np.zeros((n_blocks, len(block_of_row)))
    inside = block_of_row >= 0
    onehot[block_of_row[inside], np.flatnonzero(inside)] = 1.0
    x = np.asarray(region_data, dtype=np.float64)
    s = np.asarray(seed, dtype=np.float64)
    return {"n": onehot.sum(axis=1), "s": onehot @ s, "ss": onehot @ (s * s), "x": onehot @ x,
            "xx": onehot @ (x * x), "sx": onehot @ (s[:, None] * x)}


def fisher_z_from_sums(weights, sums):
    """Fisher z of the seed correlation over weighted blocks, for many weightings at once.

    Parameters
    ----------
    weights : ndarray (P, B)
        How often each block enters (0/1 for a selection, counts for a bootstrap).
    sums : dict
        :func:`block_sums`.

    Returns
    -------
    ndarray (P, V)
        ``atanh(r)`` (r clipped as :func:`tmstarget.analysis.connectivity.fisher_z`); 0 where undefined.
    """
    from tmstarget.analysis.connectivity import fisher_z

    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    n = (w @ sums["n"])[:, None]
    s, ss = (w @ sums["s"])[:, None], (w @ sums["ss"])[:, None]
    x, xx, sx = w @ sums["x"], w @ sums["xx"], w @ sums["sx"]
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = sx - s * x / n
        var = np.maximum(xx - x * x / n, 0.0) * np.maximum(ss - s * s / n, 0.0)
        r = np.where(var > 0, cov / np.sqrt(var), 0.0)
    return fisher_z(r)


def score_from_weights(sums, weights):
    """The picker's score (z of one state, or z_first - z_second) for many block weightings.

    Parameters
    ----------
    sums : dict
        :func:`block_sums`.
    weights : sequence of ndarray (P, B)
        One weight matrix for a single-state map, two (first, second) for a contrast.

    Returns
    -------
    ndarray (P, V)
    """
    z = [fisher_z_from_sums(w, sums) for w in weights]
    return z[0] if len(z) == 1 else z[0] - z[1]


def region_extreme(scores, direction):
    """Most extreme value of each row, oriented so that larger = more extreme.

    Parameters
    ----------
    scores : ndarray (P, V) or (V,)
    direction : {'negative', 'positive'}
        The picker's direction: ``'negative'`` -> ``-min``, ``'positive'`` -> ``max``.

    Returns
    -------
    ndarray (P,) or float
    """
    if direction not in ("negative", "positive"):
        raise ValueError(f"direction must be 'negative' or 'positive'; got {direction!r}")
    scores = np.asarray(scores)
    return -scores.min(axis=-1) if direction == "negative" else scores.max(axis=-1)


def p_fwe(observed, null):
    """Family-wise p of the observed region extreme: ``(1 + #{null >= observed}) / (1 + n)``.

    Parameters
    ----------
    observed : float
        :func:`region_extreme` of the data.
    null : ndarray (n,)
        :func:`region_extreme` of each null draw.
    """
    null = np.asarray(null, dtype=float)
    return float((1 + np.count_nonzero(null >= observed - 1e-12)) / (1 + len(null)))


# ---------------------------------------------------------------- the task contrast: block relabeling


def relabelings(is_first, n_permutations, rng):
    """Reassignments of the contrast's blocks to its two states, keeping how many each state has.

    All distinct reassignments but the observed one when there are at most
    ``n_permutations + 1`` (an exact permutation test); else
    ``n_permutations`` random ones.

    Parameters
    ----------
    is_first : ndarray of bool (B,)
        Observed assignment: block belongs to the first state (else the second).
    n_permutations : int
    rng : numpy.random.Generator

    Returns
    -------
    assignments : ndarray of bool (n, B)
    exhaustive : bool
    """
    from itertools import combinations
    from math import comb

    is_first = np.asarray(is_first, dtype=bool)
    n_blocks, n_first = len(is_first), int(is_first.sum())
    if comb(n_blocks, n_first) <= n_permutations + 1:
        rows = []
        for chosen in combinations(range(n_blocks), n_first):
            row = np.zeros(n_blocks, dtype=bool)
            row[list(chosen)] = True
            if not np.array_equal(row, is_first):
                rows.append(row)
        return np.array(rows, dtype=bool).reshape(-1, n_blocks), True
    return np.array([rng.permutation(is_first) for _ in range(n_permutations)], dtype=bool), False


def contrast_null(sums, is_first, contrast_blocks, direction, n_permutations, rng):
    """Null distribution of the region extreme of ``z_first - z_second`` under block relabeling.

    Blocks keep their frames (so the autocorrelation within a block and the
    block structure stay); only which state a block counts for changes.

    Parameters
    ----------
    sums : dict
        :func:`block_sums` over all blocks.
    is_first : ndarray of bool (B,)
        Observed: the block belongs to the first state.
    contrast_blocks : ndarray of bool (B,)
        Blocks of either state of the contrast (others never enter).
    direction : {'negative', 'positive'}
    n_permutations : int
    rng : numpy.random.Generator

    Returns
    -------
    null : ndarray (n,)
    exhaustive : bool
    """
    contrast_blocks = np.asarray(contrast_blocks, dtype=bool)
    idx = np.flatnonzero(contrast_blocks)
    assignments, exhaustive = relabelings(np.asarray(is_first)[idx], n_permutations, rng)
    first = np.zeros((len(assignments), len(contrast_blocks)))
    second = np.zeros_like(first)
    first[:, idx] = assignments
    second[:, idx] = ~assignments
    null = np.empty(len(assignments))
    for start in range(0, len(assignments), 256):  # bounded memory: 256 x V at a time
        part = slice(start, start + 256)
        null[part] = region_extreme(score_from_weights(sums, [first[part], second[part]]), direction)
    return null, exhaustive


# ---------------------------------------------------------------- rest maps: phase-randomized seeds


def range_basis(operator, rtol=1e-8):
    """Orthonormal basis of the cleaned signals' space (the operator's column space).

    Parameters
    ----------
    operator : ndarray (n_kept, n_frames)
        A run's cleaning operator.
    rtol : float
        Directions with a singular value below ``rtol`` times the largest are
        left out (the regressed-out confounds).

    Returns
    -------
    ndarray (n_kept, r)
    """
    u, sing, _ = np.linalg.svd(np.asarray(operator, dtype=np.float64), full_matrices=False)
    return u[:, sing > sing.max() * rtol]


def phase_randomized(x, n, rng):
    """Surrogates of ``x`` with its amplitude spectrum and random phases.

    Parameters
    ----------
    x : ndarray (T,)
    n : int
    rng : numpy.random.Generator

    Returns
    -------
    ndarray (n, T)
        Same mean and the same periodogram as ``x``; the Nyquist bin (even
        ``T``) keeps its amplitude with a random sign.
    """
    x = np.asarray(x, dtype=np.float64)
    t = len(x)
    spectrum = np.fft.rfft(x)
    phases = rng.uniform(0.0, 2.0 * np.pi, (n, len(spectrum)))
    phases[:, 0] = 0.0
    if t % 2 == 0:
        phases[:, -1] = np.pi * rng.integers(0, 2, n)
    return np.fft.irfft(np.abs(spectrum)[None, :] * np.exp(1j * phases), n=t, axis=1)


def seed_null(region_data, seed, rows, run_slices, bases, direction, n_permutations, rng):
    """Null distribution of the region extreme of z(seed) with phase-randomized seeds.

    Each run's part of the seed is phase-randomized (its spectrum, so its
    autocorrelation, is kept) and projected onto that run's cleaned-signal
    space (:func:`range_basis`), as the real seed is; the map of the state's
    frames is recomputed and its region extreme taken.

    Parameters
    ----------
    region_data : ndarray (T, V)
        Cleaned search-region voxels, all kept frames of all runs.
    seed : ndarray (T,)
    rows : ndarray of bool (T,)
        The state's frames.
    run_slices : list of slice
        Each run's rows in the concatenation.
    bases : list of ndarray
        :func:`range_basis` of each run's operator.
    direction : {'negative', 'positive'}
    n_permutations : int
    rng : numpy.random.Generator

    Returns
    -------
    ndarray (n_permutations,)
    """
    from tmstarget.analysis.connectivity import fisher_z

    rows = np.asarray(rows, dtype=bool)
    surrogates = np.empty((n_permutations, len(seed)))
    for part, basis in zip(run_slices, bases):
        draws = phase_randomized(seed[part], n_permutations, rng)
        surrogates[:, part] = (draws @ basis) @ basis.T
    s = surrogates[:, rows]
    s -= s.mean(axis=1, keepdims=True)
    x = np.asarray(region_data, dtype=np.float64)[rows]
    x = x - x.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.sqrt((s * s).sum(axis=1))[:, None] * np.sqrt((x * x).sum(axis=0))[None, :]
        r = np.where(norm > 0, (s @ x) / norm, 0.0)
    return region_extreme(fisher_z(r), direction)


# ---------------------------------------------------------------- spatial uncertainty


def bootstrap_weights(state_blocks, n_bootstrap, rng):
    """Block-bootstrap weights: each state's blocks resampled with replacement (counts).

    Parameters
    ----------
    state_blocks : list of ndarray of int
        Block indices of each state of the score (one entry, or first and second).
    n_bootstrap : int
    rng : numpy.random.Generator

    Returns
    -------
    list of ndarray (n_bootstrap, B)
        One weight matrix per state (for :func:`score_from_weights`).
    """
    n_blocks = 1 + max(int(np.max(b)) for b in state_blocks if len(b))
    out = []
    for blocks in state_blocks:
        blocks = np.asarray(blocks, dtype=int)
        w = np.zeros((n_bootstrap, n_blocks))
        draws = blocks[rng.integers(0, len(blocks), (n_bootstrap, len(blocks)))]
        for i in range(n_bootstrap):
            np.add.at(w[i], draws[i], 1.0)
        out.append(w)
    return out


def interleaved_halves(state_blocks):
    """Split-half weights: each state's blocks alternately into half 1 and half 2 (time order).

    Interleaving (not first versus second half) keeps slow drifts from
    posing as instability.

    Parameters
    ----------
    state_blocks : list of ndarray of int
        Block indices of each state, in time order.

    Returns
    -------
    tuple of two lists of ndarray (1, B)
        Weights of each half, per state.
    """
    n_blocks = 1 + max(int(np.max(b)) for b in state_blocks if len(b))
    halves = ([], [])
    for blocks in state_blocks:
        blocks = np.asarray(blocks, dtype=int)
        for h, half in enumerate(halves):
            w = np.zeros((1, n_blocks))
            w[0, blocks[h::2]] = 1.0
            half.append(w)
    return halves


def spread_mm(points_mm, target_mm, within_mm=5.0):
    """How far re-picked targets land from the target.

    Parameters
    ----------
    points_mm : ndarray (n, 3)
        NaN rows: resamples without a target (infinitely far).
    target_mm : array (3,)
    within_mm : float

    Returns
    -------
    spread : float
        95th percentile of the distances (mm); inf when more than 5 % of the points are NaN.
    share_within : float
        Share of points at most ``within_mm`` from the target.
    """
    d = np.linalg.norm(np.asarray(points_mm, dtype=float) - np.asarray(target_mm, dtype=float), axis=1)
    d[np.isnan(d)] = np.inf
    spread = float(np.percentile(d, 95))  # NaN only when the percentile falls between two infinite distances
    return (np.inf if np.isnan(spread) else spread), float(np.mean(d <= within_mm + 1e-9))


def standardized_score(score, dofs):
    """A Fisher-z score divided by its null standard error from effective DOF.

    Parameters
    ----------
    score : float
        z of one state's map, or z_first - z_second.
    dofs : sequence of float
        Effective DOF of the state (one) or of both states (contrast).

    Returns
    -------
    float or None
        ``score / sqrt(sum 1 / (N_eff - 3))``; None when a state has
        ``N_eff <= 3`` (no finite standard error).
    """
    if any(d <= 3 for d in dofs):
        return None
    return float(score / np.sqrt(sum(1.0 / (d - 3.0) for d in dofs)))
