"""The engine's inference step: is the target real, and how sure are we where it is?

:func:`target_inference` runs the methods of :mod:`tmstarget.analysis.inference`
on a plan's matrices (cleaned search-region voxels, seed, cleaning operators,
blocks of frames) and returns ``qc.inference``; :func:`state_blocks` cuts the
states' frames into the exchangeable blocks those methods resample.  Used by
:func:`tmstarget.analysis.engine.plan` and by the real-time watcher.
"""

import dataclasses

import numpy as np

from tmstarget.analysis import inference
from tmstarget.analysis.connectivity import state_frames
from tmstarget.analysis.inference import effective_dof, time_segments
from tmstarget.analysis.targets import pick_targets


def run_blocks(kept, t_r, states, conn, segment_s, events=None, run_state=None, frame_offset_s=0.0):
    """Exchangeable blocks of one run's kept frames (see :func:`state_blocks`).

    Parameters
    ----------
    kept : ndarray of int
        Kept frames (indices in the file).
    t_r : float
    states : list of str
        The protocol's states.
    conn : ConnectivityParams
    segment_s : float
    events : pandas.DataFrame, optional
        Blocks design: one block per events row of a state.
    run_state : str, optional
        The whole run is this state: segments of about ``segment_s`` seconds.
    frame_offset_s : float
        Time of each frame within its TR (``Run.frame_offset_s``: mid-TR for a slice-timing corrected run).

    Returns
    -------
    block_of_frame : ndarray of int
        Block (0-based, this run) of each kept frame, -1 for frames in no state.
    block_state : list of str
    """
    local = np.full(len(kept), -1)
    block_state = []
    if run_state is not None:
        if run_state in states:
            local = time_segments(np.asarray(kept) * t_r, segment_s)
            block_state = [run_state] * (int(local.max()) + 1)
        return local, block_state
    events = events.sort_values("onset", kind="stable")
    for i in range(len(events)):
        state = events["trial_type"].iloc[i]
        if state not in states:
            continue
        sel = state_frames(events.iloc[[i]], kept, t_r, state, conn.hrf_delay_s, conn.transition_s,
                           frame_offset_s) & (local < 0)
        if sel.any():
            local[sel] = len(block_state)
            block_state.append(state)
    return local, block_state


def state_blocks(runs, plans, states, conn, segment_s):
    """Exchangeable blocks of the states' frames over the concatenated kept frames of all runs.

    A block is one events row of a blocks-design run (its frames as
    :func:`~tmstarget.analysis.connectivity.state_frames` selects them), or a
    segment of about ``segment_s`` seconds of a run that is one state as a whole.

    Returns
    -------
    block_of_row : ndarray of int
        Block of each kept frame, -1 for frames in no state.
    block_state : ndarray of str
        State of each block; blocks are numbered in time order.
    """
    of_row, block_state = [], []
    for run, cplan in zip(runs, plans):
        local, names = run_blocks(cplan.kept, run.t_r, states, conn, segment_s, run.events, run.state,
                                  run.frame_offset_s)
        of_row.append(np.where(local >= 0, local + len(block_state), -1))
        block_state += names
    return np.concatenate(of_row), np.array(block_state, dtype=object)


def target_inference(region_data, seed, blocks, operators, protocol, voxels, region_cols, target, run_labels=None,
                     dof=None, bootstrap=True):
    """``qc.inference`` of a target: family-wise p of the region extreme, bootstrap spread, split halves.

    Shared by :func:`plan` and the real-time watcher; the methods are in
    :mod:`tmstarget.analysis.inference`.

    Parameters
    ----------
    region_data : ndarray (T, V)
        Cleaned search-region voxels over the concatenated kept frames of all runs.
    seed : ndarray (T,)
    blocks : tuple
        ``(block_of_row, block_state)`` from :func:`state_blocks`.
    operators : list of ndarray
        Cleaning operator of each run (rows: its kept frames, concatenated in order).
    protocol : Protocol
    voxels : VoxelSet
    region_cols : ndarray of int
    target : Candidate
        The picked target (``ras_mm``, ``score``).
    run_labels : list of str, optional
        Names of the runs for ``effective_dof_per_run``.
    dof : dict, optional
        Effective DOF per state when already computed.
    bootstrap : bool
        False: no bootstrap and no split halves (a quick verdict).

    Returns
    -------
    qc : dict
    split_half_mm : float or None
    """
    inf_p, conn, target_p = protocol.inference, protocol.connectivity, protocol.target
    rng = np.random.default_rng(inf_p.random_seed)
    block_of_row, block_state = blocks
    block_state = np.asarray(block_state, dtype=object)
    starts = np.cumsum([0] + [op.shape[0] for op in operators])
    run_slices = [slice(a, b) for a, b in zip(starts, starts[1:])]
    rows = {state: np.isin(block_of_row, np.flatnonzero(block_state == state)) for state in protocol.states}
    if dof is None:
        dof = {state: effective_dof(operators, seed, sel) for state, sel in rows.items()}
    sums = inference.block_sums(region_data, seed, block_of_row, len(block_state))
    per_state = [np.flatnonzero(block_state == state) for state in protocol.states]
    observed_w = [np.isin(np.arange(len(block_state)), b).astype(float)[None] for b in per_state]
    observed = float(inference.region_extreme(inference.score_from_weights(sums, observed_w)[0], target_p.direction))
    if conn.contrast is not None:
        first, second = conn.contrast
        null, exhaustive = inference.contrast_null(sums, block_state == first, np.isin(block_state, conn.contrast),
                                                   target_p.direction, inf_p.n_permutations, rng)
        method = (f"block relabeling: {'all' if exhaustive else 'random'} {len(null)} reassignments of the "
                  f"{len(per_state[0])} {first} and {len(per_state[1])} {second} blocks; "
                  f"statistic: the search region's most {target_p.direction} delta z")
    else:
        null = inference.seed_null(region_data, seed, rows[conn.state], run_slices,
                                   [inference.range_basis(op) for op in operators], target_p.direction,
                                   inf_p.n_permutations, rng)
        method = (f"phase-randomized seed: {len(null)} surrogates with the seed's spectrum, projected onto each "
                  f"run's cleaned-signal space; statistic: the search region's most {target_p.direction} z")
    p_value = inference.p_fwe(observed, null)
    one = dataclasses.replace(target_p, n_candidates=1)

    def repick(values):
        """The resample's target (mm); NaN when no region value lies in the protocol's direction (no target)."""
        if not np.any(values < 0 if target_p.direction == "negative" else values > 0):
            return np.full(3, np.nan)
        full = np.zeros(len(voxels))
        full[region_cols] = values
        return pick_targets(full, voxels, region_cols, one)[0].ras_mm

    spread = share = split_half_mm = None
    boot = []
    no_target = 0
    if bootstrap and inf_p.n_bootstrap:
        weights = inference.bootstrap_weights(per_state, inf_p.n_bootstrap, rng)
        boot = [repick(values) for values in inference.score_from_weights(sums, weights)]
        no_target = int(sum(np.isnan(point).any() for point in boot))
        spread, share = inference.spread_mm(boot, target.ras_mm)
    if bootstrap:
        halves = [repick(inference.score_from_weights(sums, h)[0])
                  for h in inference.interleaved_halves(per_state)]
        # a half without any target is as unstable as it gets: reported as "infinitely" far (warned on)
        split_half_mm = float(np.linalg.norm(halves[0] - halves[1])) if not np.isnan(halves).any() else np.inf
    labels = run_labels or [f"run_{i + 1}" for i in range(len(operators))]
    run_dof = {label: round(inference.effective_dof(op, seed[part]), 2)
               for label, op, part in zip(labels, operators, run_slices)}
    standardized = inference.standardized_score(target.score, [dof[s] for s in protocol.states])
    qc = {
        "p_fwe": round(p_value, 6),
        "alpha": inf_p.alpha,
        "significant": bool(p_value <= inf_p.alpha),
        "n_permutations": int(len(null)),
        "method": method,
        "region_extreme": round(observed, 6),
        "effective_dof": {s: round(float(dof[s]), 2) for s in protocol.states},
        "effective_dof_per_run": run_dof,
        "standardized_score": None if standardized is None else round(standardized, 4),
        "standardized_score_note": ("target score / its null SE sqrt(sum over states of 1 / (effective_dof - 3)) "
                                    "(Fisher z)"),
        # None when more than 5 % of the resamples found no target at all (the spread is then unbounded)
        "bootstrap_spread_mm": None if spread is None or not np.isfinite(spread) else round(spread, 2),
        "bootstrap_resamples_without_target": no_target,
        "bootstrap_within_5mm_share": None if share is None else round(share, 4),
        "n_bootstrap": inf_p.n_bootstrap if bootstrap else 0,
        "bootstrap_method": "blocks of each state resampled with replacement ("
                            + ("events blocks" if conn.contrast is not None else f"~{inf_p.segment_s:g} s segments")
                            + "), target re-picked; spread = 95th percentile of the distance to the target",
        "random_seed": inf_p.random_seed,
    }
    if bootstrap:  # the evidence behind the spread and the split half, for figures (report, viewer)
        qc["bootstrap_offsets_mm"] = _offsets(boot, target.ras_mm)
        qc["split_half_offsets_mm"] = _offsets(halves, target.ras_mm)
        qc["offsets_note"] = ("re-picked targets minus the target, mm, in the analysis grid's world; "
                              "null: that resample or half found no target")
    qc["verdict"] = verdict(protocol, qc)
    return qc, split_half_mm


def _offsets(points, target_mm):
    """Each point minus the target (mm, 0.1 mm), None for a NaN point (no target)."""
    out = []
    for point in points:
        point = np.asarray(point, dtype=float)
        out.append(None if np.isnan(point).any() else [round(float(v), 1) for v in point - np.asarray(target_mm)])
    return out


def verdict(protocol, inference_qc):
    """The plain line saying whether the target is reliable (run summary, ``qc.warnings``, ``live.json``).

    Parameters
    ----------
    protocol : Protocol
    inference_qc : dict
        ``p_fwe``, ``alpha``, ``significant`` and ``bootstrap_spread_mm``/``bootstrap_within_5mm_share``
        (None: not computed).
    """
    conn, p_value = protocol.connectivity, inference_qc["p_fwe"]
    if not inference_qc["significant"]:
        what = conn.contrast[0] if conn.contrast is not None else protocol.name
        alternatives = "the sgacc-dlpfc or a fixed target" if conn.contrast is not None else \
            "another protocol or a fixed target (e.g. beam-f3)"
        return f"no reliable {what} target: p_fwe = {p_value:.2f}; consider {alternatives}"
    where = ""
    if inference_qc.get("bootstrap_spread_mm") is not None:
        where = (f"; 95% of bootstrap re-picks within {inference_qc['bootstrap_spread_mm']:.1f} mm, "
                 f"{100 * inference_qc['bootstrap_within_5mm_share']:.0f}% within 5 mm")
    return f"reliable target: p_fwe = {p_value:.3f} (alpha {inference_qc['alpha']:g}){where}"
