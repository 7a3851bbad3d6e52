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
