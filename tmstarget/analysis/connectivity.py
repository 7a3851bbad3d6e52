"""Seed signals, voxelwise Fisher-z connectivity, brain states and subsystem FC.

All functions take cleaned time series (frames x voxels) and plain arrays;
states are boolean frame selections so the same code serves whole runs
(rest, separate-run designs) and blocks of one run (``events.tsv``).
"""

import numpy as np

from tmstarget.analysis.rois import SUBSYSTEMS
from tmstarget.errors import InputError

# Keeps atanh finite for a voxel identical to its seed (|r| = 1 -> z ~ 9.9).
_R_LIMIT = 1.0 - 1e-8


def fisher_z(r):
    """Fisher transform ``atanh(r)``, with |r| clipped just below 1."""
    return np.arctanh(np.clip(r, -_R_LIMIT, _R_LIMIT))


def correlation_with_seed(data, seed):
    """Pearson r of every column of ``data`` with ``seed``.

    Parameters
    ----------
    data : ndarray, shape (T, V)
    seed : ndarray, shape (T,)

    Returns
    -------
    ndarray, shape (V,)
        0 for constant columns.
    """
    data = np.asarray(data)
    seed = np.asarray(seed, dtype=np.float64)
    seed = seed - seed.mean()
    seed_norm = np.sqrt(seed @ seed)
    if seed_norm == 0:
        raise InputError("the seed time series is constant (empty or fully masked seed)")
    centred_dot = seed.astype(data.dtype) @ data  # sum_t (s_t - mean s) x_t; x's mean cancels
    sum_sq = np.einsum("tv,tv->v", data, data, dtype=np.float64)
    mean = data.mean(axis=0, dtype=np.float64)
    var = sum_sq - data.shape[0] * mean**2
    norm = np.sqrt(np.maximum(var, 0.0)) * seed_norm
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(norm > 0, centred_dot / norm, 0.0)
    return r


def seed_signal(data, column_groups):
    """Seed time series = mean over ROIs of each ROI's mean signal.

    Parameters
    ----------
    data : ndarray, shape (T, V)
    column_groups : list of ndarray of int
        Voxel columns of each ROI; empty groups are skipped.
    """
    means = [data[:, cols].mean(axis=1, dtype=np.float64) for cols in column_groups if len(cols)]
    if not means:
        raise InputError("every ROI of the seed is empty on this grid and mask")
    return np.mean(means, axis=0)


def state_frames(events, frames, t_r, state, hrf_delay_s, transition_s, frame_offset_s=0.0):
    """Which frames belong to a state given as blocks in ``events``.

    A frame at ``t = frame * t_r + frame_offset_s`` belongs to a block
    ``[onset, onset + duration)`` when ``onset + hrf_delay_s + transition_s <= t
    < onset + duration + hrf_delay_s``: the haemodynamic delay shifts the block,
    and the first ``transition_s`` of each shifted block (mixed states) are
    left out.

    Parameters
    ----------
    events : pandas.DataFrame
    frames : ndarray of int
        Frame indices (in the file's numbering) of the kept frames.
    t_r : float
    state : str
        ``trial_type`` value.
    frame_offset_s : float
        Time of a frame's data after its volume's start: 0 as acquired, the
        slice-timing reference (mid-TR) after slice-timing correction.

    Returns
    -------
    ndarray of bool, shape (len(frames),)
    """
    times = np.asarray(frames) * t_r + frame_offset_s
    selected = np.zeros(len(times), dtype=bool)
    rows = events[events["trial_type"] == state]
    for onset, duration in zip(rows["onset"], rows["duration"]):
        start = onset + hrf_delay_s + transition_s
        stop = onset + duration + hrf_delay_s
        selected |= (times >= start - 1e-9) & (times < stop - 1e-9)
    return selected


def subsystem_fc(roi_signals, subsystems):
    """Subsystem FC table from ROI time series (Fisher z of Pearson r); see :func:`subsystem_table`."""
    z = fisher_z(np.corrcoef(roi_signals, rowvar=False))
    return subsystem_table(z, subsystems)


def subsystem_table(z, subsystems):
    """Within- and between-subsystem FC (Chen 2020 definition).

    Parameters
    ----------
    z : ndarray, shape (n_rois, n_rois)
        Fisher-z ROI-to-ROI matrix (diagonal ignored).
    subsystems : sequence of str
        Subsystem of each ROI (``core``, ``dmpfc``, ``mtl``).

    Returns
    -------
    dict
        ``'core-core'``, ``'core-dmpfc'``, ... mean z over ROI pairs (upper
        triangle within a subsystem, all cross pairs between), plus
        ``'dn_total'`` = mean of the three within values.
    """
    labels = np.asarray(subsystems)
    table = {}
    for a_index, a in enumerate(SUBSYSTEMS):
        for b in SUBSYSTEMS[a_index:]:
            ia, ib = np.flatnonzero(labels == a), np.flatnonzero(labels == b)
            if a == b:
                values = z[np.ix_(ia, ia)][np.triu_indices(len(ia), k=1)]
            else:
                values = z[np.ix_(ia, ib)].ravel()
            table[f"{a}-{b}"] = float(values.mean()) if values.size else float("nan")
    table["dn_total"] = float(np.mean([table[f"{s}-{s}"] for s in SUBSYSTEMS]))
    return table
