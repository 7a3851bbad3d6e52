"""Seed connectivity from running sums: the engine's regression model, one frame at a time.

With ``[clean] filter = "cosine"`` a run is cleaned by one least-squares
regression over its kept frames (:func:`tmstarget.analysis.clean.regression_operator`)
on a design whose every row is known when its frame arrives: constant, trend
and cosine band regressors (functions of the frame index and the run length),
task regressors (from ``events.tsv``), Friston-24 (this frame's and the
previous frame's motion) and the WM/CSF means.  The residuals' covariances
over any set of frames then follow from sums over those frames of ``x x'``,
``x y'``, ``y^2``, ``y s`` and ``x s`` (``x`` design row, ``y`` voxel values,
``s`` seed value), so the Fisher-z map of every state can be read after any
frame, and after the last frame it equals :func:`tmstarget.analysis.engine.plan` on
the whole run.  Sums are kept per *bucket*: frames that belong to the same
states.

Why it is exact: with ``b = G^+ X'y`` (``G = X'X`` over all kept frames), a
state's residual cross-product is ``sum_S e_a e_b = A_S - b_a' XB_S - XA_S' b_b
+ b_a' G_S b_b``; sums of residuals use the constant column (``sum_S x =
G_S[:, 0]``).  Each voxel's values are stored relative to its value in the
first frame added, and each design column minus its first-frame value times
the constant: the constant regressor absorbs both shifts (the residuals do not
change) and the running sums lose far fewer digits (normal equations square
the design's condition number).

Scrubbing neighbours (``[clean] frames_before`` / ``frames_after``): a frame
after a high-motion frame is refused when it arrives; a frame *before* one
is already in the sums when the high-motion frame arrives, so its terms are
subtracted again (every sum is a plain sum over frames, so removal is exact up
to float64 rounding). The last ``frames_before`` kept frames are held for that.
"""

from collections import deque

import numpy as np

from tmstarget.analysis.clean import RANK_RTOL
from tmstarget.analysis.connectivity import fisher_z, subsystem_table
from tmstarget.errors import InputError


def _pseudo_inverse(gram):
    """``G^+`` after equilibrating the columns, dropping directions the batch SVD drops too."""
    scale = np.sqrt(np.diag(gram))
    live = scale > 0
    inv_scale = np.zeros_like(scale)
    inv_scale[live] = 1.0 / scale[live]
    eq = gram * np.outer(inv_scale, inv_scale)
    values, vectors = np.linalg.eigh(eq)
    # singular values of the equilibrated X are sqrt(eigenvalues): same relative tolerance as the batch
    keep = values > (values.max() * RANK_RTOL**2 if values.size else 0.0)
    inv = (vectors[:, keep] / values[keep]) @ vectors[:, keep].T
    return inv * np.outer(inv_scale, inv_scale), int(keep.sum())


class RunningSums:
    """Per-bucket sums for a set of data columns, a seed and (optionally) ROI signals.

    Parameters
    ----------
    n_regressors : int
        Columns of the design row ``x`` (column 0 is the constant).
    n_columns : int
        Data columns (voxels) kept.
    n_buckets : int
    n_rois : int
        ROI signals whose full residual covariance is kept (0: none).
    """

    def __init__(self, n_regressors, n_columns, n_buckets, n_rois=0):
        p, c, b = n_regressors, n_columns, n_buckets
        self.count = np.zeros(b, dtype=np.int64)
        self.xx = np.zeros((b, p, p))
        self.xy = np.zeros((b, p, c))
        self.yy = np.zeros((b, c))
        self.ys = np.zeros((b, c))
        self.xs = np.zeros((b, p))
        self.ss = np.zeros(b)
        self.xr = np.zeros((b, p, n_rois))
        self.rr = np.zeros((b, n_rois, n_rois))
        self.version = 0  # changes with every update (keys cached inverses)

    def add(self, bucket, x, y, s, r=None, sign=1):
        """Add frames of one bucket: ``x`` (m, p), ``y`` (m, c), ``s`` (m,), ``r`` (m, n_rois).

        ``sign=-1`` removes frames added before (a frame censored after the fact).
        """
        self.version += 1
        self.count[bucket] += sign * x.shape[0]
        self.xx[bucket] += sign * (x.T @ x)
        self.xy[bucket] += sign * (x.T @ y)
        self.yy[bucket] += sign * np.einsum("mc,mc->c", y, y)
        self.ys[bucket] += sign * (s @ y)
        self.xs[bucket] += sign * (x.T @ s)
        self.ss[bucket] += sign * (s @ s)
        if r is not None:
            self.xr[bucket] += sign * (x.T @ r)
            self.rr[bucket] += sign * (r.T @ r)

    def state_arrays(self, buckets):
        """Sums over the frames of the given buckets (a state)."""
        idx = list(buckets)
        return {name: getattr(self, name)[idx].sum(axis=0) for name in
                ("count", "xx", "xy", "yy", "ys", "xs", "ss", "xr", "rr")}


def _residual_moments(state, total, inv, columns=None):
    """Residual covariance of the data columns with the seed, their variances, the seed's, and the ROIs'.

    ``state``/``total`` are :meth:`RunningSums.state_arrays` of the state and of all frames.
    """
    pick = slice(None) if columns is None else columns
    xy_t, xy_s = total["xy"][:, pick], state["xy"][:, pick]
    beta = inv @ xy_t
    beta_s = inv @ total["xs"]
    g_s = state["xx"]
    n = state["count"]
    sum_x = g_s[:, 0]  # column 0 is the constant: sum over the state of x
    e_y = xy_s[0] - beta.T @ sum_x
    e_s = state["xs"][0] - beta_s @ sum_x
    g_beta_s = g_s @ beta_s
    cross = state["ys"][pick] - beta.T @ state["xs"] - xy_s.T @ beta_s + beta.T @ g_beta_s
    sq = state["yy"][pick] - 2.0 * np.einsum("pc,pc->c", beta, xy_s) + np.einsum("pc,pc->c", beta, g_s @ beta)
    ss = state["ss"] - 2.0 * beta_s @ state["xs"] + beta_s @ g_beta_s
    cov = cross - e_y * e_s / n
    var = sq - e_y**2 / n
    var_s = ss - e_s**2 / n
    rois = None
    if total["xr"].shape[1]:
        beta_r = inv @ total["xr"]
        e_r = state["xr"][0] - beta_r.T @ sum_x
        rr = (state["rr"] - beta_r.T @ state["xr"] - state["xr"].T @ beta_r + beta_r.T @ g_s @ beta_r
              - np.outer(e_r, e_r) / n)
        rois = rr
    return cov, var, var_s, rois


def _correlation(cov, var, var_s):
    norm = np.sqrt(np.maximum(var, 0.0) * max(var_s, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, cov / np.where(norm > 0, norm, 1.0), 0.0)


class StreamingConnectivity:
    """Seed connectivity of one run, updated frame by frame (regression model).

    Parameters
    ----------
    layout : tmstarget.analysis.engine.AnalysisLayout
        Voxels, region, ROIs and seed on the analysis grid.
    protocol : Protocol
        Must use ``[clean] filter = "cosine"`` (or no band limits at all).
    t_r : float
        Repetition time (s).
    n_volumes : int
        Volumes the run will have (dummies included): the cosine and task
        regressors depend on the run length.
    events : pandas.DataFrame, optional
        Blocks of a task run (states from ``trial_type``).
    run_state : str, optional
        State of the whole run (``"rest"``) when there are no blocks.
    full_brain : bool
        Keep sums for every voxel (maps), not only the search region.
    block : int
        Frames buffered before the whole-brain sums are updated (one matrix
        product per block instead of a rank-one update per frame).
    frame_offset_s : float
        Time of a frame's data after its volume's start (the slice-timing
        reference of a corrected run; 0 as acquired), as ``Run.frame_offset_s``.
    """

    def __init__(self, layout, protocol, t_r, n_volumes, events=None, run_state=None, full_brain=True, block=8,
                 frame_offset_s=0.0):
        clean = protocol.clean
        if clean.filter != "cosine" and (clean.high_pass_hz or clean.low_pass_hz):
            raise InputError("streaming needs the regression model: set [clean] filter = \"cosine\" "
                             "(band limits as cosine regressors); a Butterworth filter is not causal",
                             key="clean.filter")
        if (events is None) == (run_state is None):
            raise InputError("give either the events of a blocks-design run or the state of the whole run")
        self.protocol, self.layout = protocol, layout
        self.t_r, self.n_volumes = float(t_r), int(n_volumes)
        self.frame_offset_s = float(frame_offset_s)
        self.first = clean.dummy_volumes
        self.n_frames = self.n_volumes - self.first
        if self.n_frames < 2:
            raise InputError(f"{n_volumes} expected volumes leave no frame after {self.first} dummy volumes")
        fixed = _fixed_design(clean, t_r, self.n_volumes, events, self.frame_offset_s)
        self.fixed = fixed
        self.motion_model = clean.motion
        self.n_regressors = fixed.shape[1] + _n_confound_columns(clean)
        self.params = clean
        self.states = list(protocol.states)
        self.bucket_of, self.bucket_states = self._buckets(events, run_state, protocol.connectivity)

        voxels = layout.voxels
        self.seed_weights = _mean_of_means_weights(layout.seed_groups, len(voxels))
        roi_names = [r.name for r in layout.roi_list if len(layout.roi_cols[r.name])]
        self.roi_names = roi_names
        self.roi_subsystems = [r.subsystem for r in layout.roi_list if len(layout.roi_cols[r.name])]
        self.roi_weights = np.column_stack([_mean_of_means_weights([layout.roi_cols[n]], len(voxels))
                                            for n in roi_names]) if roi_names else np.zeros((len(voxels), 0))
        n_b = len(self.bucket_states)
        self.region = RunningSums(self.n_regressors, len(layout.region_cols), n_b, len(roi_names))
        self.brain = RunningSums(self.n_regressors, len(voxels), n_b) if full_brain else None
        self.block = block
        self._pending = []  # (bucket, x, y, s) waiting for the whole-brain update
        self._worker = None
        self._folds = []
        self._inverse_cache = (None, None)
        self.offset = None
        self._box = None
        self.previous_motion = None
        self.frames_added = []
        self.censored_after_the_fact = []  # volumes added, then removed as a high-motion frame's neighbour
        self._recent = deque(maxlen=clean.frames_before)  # kept frames a later high-motion frame may censor
        self._censor_through = -1  # frames up to this volume follow a high-motion frame: censored
        self.region_frames = []  # (region values, seed, design row) of each added frame: the live verdict's input

    def _buckets(self, events, run_state, conn):
        member = _state_membership(self.states, events, run_state, conn, self.n_volumes, self.t_r,
                                   self.frame_offset_s)
        patterns, bucket_of = np.unique(member, axis=0, return_inverse=True)
        bucket_states = [tuple(s for s, on in zip(self.states, row) if on) for row in patterns]
        return bucket_of.ravel(), bucket_states

    def design_row(self, volume, motion, nuisance):
        """Design row of a volume (file numbering, dummies included).

        Parameters
        ----------
        volume : int
        motion : array (6,) or None
            This volume's motion parameters (mm, rad).
        nuisance : sequence of float
            WM, CSF (if ``wm_csf``) and global signal (if ``global_signal``), in that order.
        """
        from tmstarget.anatomy.motion import friston24

        frame = volume - self.first
        parts = [self.fixed[frame]]
        if self.motion_model != "none":
            current = np.asarray(motion, dtype=float)
            if self.motion_model == "6p":
                parts.append(current)
            elif frame == 0:  # Friston-24 lags start at the first frame after the dummies (as the batch design)
                parts.append(friston24(current[None, :])[0])
            else:
                parts.append(friston24(np.vstack([self.previous_motion, current]))[1])
        parts.append(np.asarray(nuisance, dtype=float))
        return np.concatenate(parts)

    def note_motion(self, motion):
        """Remember a volume's motion for the next volume's Friston lags (call for every volume, kept or not)."""
        self.previous_motion = None if motion is None else np.asarray(motion, dtype=float)

    def push(self, volume, data, motion, nuisance, fd_mm, missing=False):
        """Take one volume of the run, in acquisition order: scrub or add it.

        Parameters
        ----------
        volume : int
            Volume index in the file (dummies included).
        data : ndarray (I, J, K)
            The (realigned) volume on the analysis grid.
        motion : array (6,) or None
            Its motion parameters (mm, rad); a missing volume carries its predecessor's.
        nuisance : sequence of float
            WM, CSF, global signal as the protocol asks (see :meth:`design_row`).
        fd_mm : float
            FD_Power of the volume (0 for the first).
        missing : bool
            The volume never arrived (a gap): left out like a scrubbed frame.

        Returns
        -------
        str
            ``"dummy"``, ``"missing"``, ``"scrubbed"`` or ``"kept"``. Earlier
            volumes a high-motion frame censors after the fact are appended to
            :attr:`censored_after_the_fact`.
        """
        from tmstarget.analysis.voxels import smoothed_volume_values

        try:
            if volume < self.first:
                return "dummy"
            if missing:
                return "missing"
            if self.params.scrub and fd_mm > self.params.fd_threshold_mm:
                self._retract(volume - self.params.frames_before)
                self._censor_through = max(self._censor_through, volume + self.params.frames_after)
                return "scrubbed"
            if self.params.scrub and volume <= self._censor_through:
                return "scrubbed"
            if self._box is None:
                from tmstarget.analysis.voxels import smoothing_box

                self._box = smoothing_box(self.layout.voxels, self.params.smoothing_fwhm_mm)
            values = smoothed_volume_values(data, self.layout.voxels, self.params.smoothing_fwhm_mm, self._box)
            self.add(volume, values, self.design_row(volume, motion, nuisance))
            return "kept"
        finally:
            self.note_motion(motion)

    def add(self, volume, values, x):
        """Add one kept frame.

        Parameters
        ----------
        volume : int
            Volume index in the file (>= dummy volumes).
        values : ndarray (V,)
            Smoothed values of the analysed voxels (``layout.voxels`` order).
        x : ndarray (p,)
            :meth:`design_row` of the volume.
        """
        frame = volume - self.first
        if not 0 <= frame < self.n_frames:
            raise InputError(f"volume {volume} is outside the expected run (volumes {self.first}.."
                             f"{self.n_volumes - 1} are analysed)", volume=volume)
        y = np.asarray(values, dtype=np.float64)
        if self.offset is None:
            self.offset = y.copy()
            # design columns minus multiples of the constant: the same span, far better conditioned sums
            self.x_offset = np.asarray(x, dtype=np.float64).copy()
            self.x_offset[0] = 0.0
        y = y - self.offset
        x = x - self.x_offset
        s = float(y @ self.seed_weights)
        r = y @ self.roi_weights
        bucket = int(self.bucket_of[volume])
        cols = self.layout.region_cols
        self.region.add(bucket, x[None, :], y[cols][None, :], np.array([s]), r[None, :])
        self.region_frames.append((y[cols].astype(np.float32), s, x))
        self.frames_added.append(volume)
        if self._recent.maxlen:
            self._recent.append((volume, bucket, x, y, s, r))
        if self.brain is not None:
            self._pending.append((volume, bucket, x, y, s))
            if len(self._pending) >= self.block:
                self._fold_in_background()

    def _retract(self, from_volume):
        """Take the held frames from ``from_volume`` on back out of every sum (censored after the fact)."""
        cols = self.layout.region_cols
        while self._recent and self._recent[-1][0] >= from_volume:
            volume, bucket, x, y, s, r = self._recent.pop()
            self.region.add(bucket, x[None, :], y[cols][None, :], np.array([s]), r[None, :], sign=-1)
            at = self.frames_added.index(volume)
            del self.frames_added[at], self.region_frames[at]
            self.censored_after_the_fact.append(volume)
            if self.brain is None:
                continue
            waiting = [p for p in self._pending if p[0] == volume]
            if waiting:
                self._pending.remove(waiting[0])
            else:
                self._submit(self.brain.add, bucket, x[None, :], y[None, :], np.array([s]), None, -1)
        self._recent.clear()  # frames before from_volume are older than frames_before: never censored now

    def _submit(self, job, *args):
        """Run a job on the one worker thread (BLAS runs without the GIL), after every job handed in before."""
        from concurrent.futures import ThreadPoolExecutor

        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tmstarget-sums")
        self._folds = [f for f in self._folds if not f.done() or f.result() is not None]  # re-raises errors
        self._folds.append(self._worker.submit(job, *args))

    def _fold_in_background(self):
        """Hand the buffered frames to the worker: the whole-brain update adds no latency."""
        batch, self._pending = self._pending, []
        self._submit(self._fold, batch)

    def brain_maps_in_background(self, callback):
        """Compute the whole-brain maps of the frames added so far on the worker and call ``callback(z, score)``
        there (for live map files); the caller's loop does not wait."""
        if self.brain is None:
            raise InputError("whole-brain sums were not kept (full_brain=False)")
        self._fold_in_background()

        def job():
            z, _ = self.readout(self.brain)
            callback(z, self.score(z))

        self._submit(job)

    def _fold(self, batch):
        by_bucket = {}
        for _, bucket, x, y, s in batch:
            by_bucket.setdefault(bucket, []).append((x, y, s))
        for bucket, rows in by_bucket.items():  # one worker, in order: the same sums as folding inline
            self.brain.add(bucket, np.array([r[0] for r in rows]), np.array([r[1] for r in rows]),
                           np.array([r[2] for r in rows]))

    def flush(self):
        """Fold every buffered frame into the whole-brain sums (waits for the worker)."""
        for future in self._folds:
            future.result()
        self._folds = []
        batch, self._pending = self._pending, []
        self._fold(batch)

    @property
    def n_added(self):
        return len(self.frames_added)

    def _state_buckets(self, state):
        return [i for i, states in enumerate(self.bucket_states) if state in states]

    def ready(self):
        """Whether every state has enough frames beyond the model's regressors; and why not."""
        need = self.params.min_volumes
        for state in self.states:  # the cheap test first
            n = int(self.region.count[self._state_buckets(state)].sum())
            if n < need:
                return False, f"state '{state}' has {n} of the {need} frames needed"
        total = self.region.state_arrays(range(len(self.bucket_states)))
        _, rank = self._inverse(self.region, total)
        if total["count"] <= rank + 2:
            return False, f"{total['count']} frames for a model of rank {rank}"
        return True, ""

    def _inverse(self, sums, total):
        """``G^+`` and rank of a set of sums, computed once per state of the sums (ready() and the readout share it)."""
        key = (id(sums), sums.version, int(total["count"]))
        cached = self._inverse_cache  # one read: the worker thread may replace it meanwhile
        if cached[0] == key:
            return cached[1]
        result = _pseudo_inverse(total["xx"])
        self._inverse_cache = (key, result)
        return result

    def readout(self, sums, columns=None):
        """Fisher-z per state (and the ROI table) from a set of sums."""
        total = sums.state_arrays(range(len(self.bucket_states)))
        inv, _ = self._inverse(sums, total)
        z, tables = {}, {}
        for state in self.states:
            st = sums.state_arrays(self._state_buckets(state))
            cov, var, var_s, rois = _residual_moments(st, total, inv, columns)
            z[state] = fisher_z(_correlation(cov, var, var_s))
            if rois is not None and rois.size:
                d = np.sqrt(np.maximum(np.diag(rois), 0.0))
                with np.errstate(invalid="ignore", divide="ignore"):
                    corr = rois / np.outer(d, d)
                tables[state] = subsystem_table(fisher_z(corr), self.roi_subsystems)
        return z, tables

    def score(self, z):
        conn = self.protocol.connectivity
        if conn.contrast is not None:
            first, second = conn.contrast
            return z[first] - z[second]
        return z[conn.state]

    def region_maps(self):
        """Fisher-z of the search-region voxels per state, the score, and the subsystem tables."""
        z, tables = self.readout(self.region)
        return z, self.score(z), tables

    def brain_maps(self):
        """Fisher-z of every analysed voxel per state, and the score (flushes the buffer)."""
        if self.brain is None:
            raise InputError("whole-brain sums were not kept (full_brain=False)")
        self.flush()
        z, _ = self.readout(self.brain)
        return z, self.score(z)


def _fixed_design(clean, t_r, n_volumes, events, frame_offset_s=0.0):
    """The design columns known before the run: constant, trend, cosine band and task regressors (frames after
    the dummies; a frame's data ``frame_offset_s`` after its volume's start)."""
    from tmstarget.analysis.clean import regression_design, task_regressors

    first = clean.dummy_volumes
    fixed = regression_design(n_volumes - first, t_r, None, clean.detrend, clean.high_pass_hz, clean.low_pass_hz)
    if events is not None and clean.task_regressors != "none":
        regs, _ = task_regressors(events, n_volumes, t_r, clean.task_regressors, frame_offset_s)
        fixed = np.hstack([fixed, regs[first:]])
    return fixed


def _n_confound_columns(clean):
    """Design columns that come from the data (motion, WM/CSF, global signal)."""
    return {"friston24": 24, "6p": 6, "none": 0}[clean.motion] + 2 * clean.wm_csf + clean.global_signal


def _state_membership(states, events, run_state, conn, n_volumes, t_r, frame_offset_s=0.0):
    """Boolean (n_volumes, n_states): which state each volume of the file counts for."""
    from tmstarget.analysis.connectivity import state_frames

    frames = np.arange(n_volumes)
    if events is not None:
        return np.column_stack([state_frames(events, frames, t_r, s, conn.hrf_delay_s, conn.transition_s,
                                             frame_offset_s) for s in states])
    return np.column_stack([np.full(len(frames), run_state == s) for s in states])


def live_protocol(protocol):
    """The watcher's model of a protocol: the regression model, high-pass only unless ``[live] low_pass_hz``.

    ``[clean] filter`` becomes ``"cosine"`` and ``[clean] low_pass_hz`` becomes ``[live] low_pass_hz`` (0 by
    default: no low-pass), both recorded as overrides, so that ``tmstarget plan --set clean.filter=cosine
    --set clean.low_pass_hz=<live>`` on the recorded run is the same model.

    Parameters
    ----------
    protocol : tmstarget.protocol.Protocol

    Returns
    -------
    tmstarget.protocol.Protocol

    Raises
    ------
    InputError
        For an override that contradicts the live model (``clean.filter=butterworth``, or a
        ``clean.low_pass_hz`` other than ``[live] low_pass_hz``).
    """
    import dataclasses

    low = float(protocol.live.low_pass_hz)
    given = protocol.overrides
    if given.get("clean.filter", "cosine") != "cosine":
        raise InputError("the watcher streams the regression model: clean.filter must be cosine", key="clean.filter")
    if "clean.low_pass_hz" in given and float(given["clean.low_pass_hz"]) != low:
        raise InputError(f"the live model's low-pass is [live] low_pass_hz ({low:g} Hz; 0 = none): set "
                         f"live.low_pass_hz instead of clean.low_pass_hz", key="clean.low_pass_hz")
    clean = dataclasses.replace(protocol.clean, filter="cosine", low_pass_hz=low)
    overrides = {**given, "clean.filter": "cosine", "clean.low_pass_hz": low}
    return dataclasses.replace(protocol, clean=clean, overrides=overrides)


#: Seed of the white-noise columns that stand in for the data-driven regressors before the run.
STAND_IN_SEED = 0


def live_effective_dof(protocol, t_r, n_volumes, events=None, run_state=None):
    """Effective degrees of freedom per state the regression model leaves, from its design alone (before the run).

    The model's residual-forming operator over all frames (none scrubbed) goes through
    :func:`tmstarget.analysis.inference.effective_dof` without a seed (the seed assumed to share the noise's
    autocorrelation), as the batch engine's gate does with the real seed.  The regressors known before the run
    (constant, trend, cosine band, task) enter as they are; the data-driven ones (motion, WM/CSF, global signal)
    are stood in for by as many seeded white-noise columns (on the sample patient within 20 % of the figure
    with its real confounds).  Scrubbed frames only lower the result.

    Parameters
    ----------
    protocol : tmstarget.protocol.Protocol
        Its ``[clean]`` section is the model (use :func:`live_protocol` for the watcher's).
    t_r : float
        Repetition time (s).
    n_volumes : int
        Volumes of the run, dummies included.
    events : pandas.DataFrame, optional
        Blocks of a task run; else ``run_state`` names the state of the whole run.
    run_state : str, optional

    Returns
    -------
    dict
        State -> effective degrees of freedom (float).
    """
    from tmstarget.analysis.clean import regression_operator
    from tmstarget.analysis.inference import effective_dof

    clean = protocol.clean
    fixed = _fixed_design(clean, t_r, n_volumes, events)
    stand_ins = np.random.default_rng(STAND_IN_SEED).standard_normal((fixed.shape[0], _n_confound_columns(clean)))
    operator = regression_operator(np.hstack([fixed, stand_ins]))
    member = _state_membership(protocol.states, events, run_state, protocol.connectivity, n_volumes, t_r)
    member = member[clean.dummy_volumes:]
    return {state: float(effective_dof(operator, None, member[:, i])) for i, state in enumerate(protocol.states)}


def _mean_of_means_weights(groups, n_columns):
    """Weights ``w`` with ``data @ w`` = mean over non-empty groups of each group's mean (the seed signal)."""
    groups = [np.asarray(g) for g in groups if len(g)]
    w = np.zeros(n_columns)
    for g in groups:
        w[g] += 1.0 / (len(g) * len(groups))
    return w
