"""The target's verdict (family-wise p) while a run accrues, for ``live.json``.

The watcher's streaming engine keeps each kept frame's search-region values,
seed value and design row (:attr:`~tmstarget.analysis.streaming.StreamingConnectivity.region_frames`).
:class:`LiveVerdict` cleans them with the same regression model
(:func:`~tmstarget.analysis.clean.regression_operator`) and runs the batch
engine's inference (:func:`~tmstarget.analysis.reliability.target_inference`,
without the bootstrap) on a background thread, at most one job at a time and
at most every ``min_interval_s``, so the per-volume time is not held up.
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class LiveVerdict:
    """Recomputes the live target's ``p_fwe`` in the background as frames arrive.

    Parameters
    ----------
    stream : tmstarget.analysis.streaming.StreamingConnectivity
    protocol : Protocol
    events : pandas.DataFrame, optional
        Blocks design (as given to the stream).
    run_state : str, optional
        The whole run is this state (as given to the stream).
    min_interval_s : float
        Least time between two starts of a recomputation.
    """

    def __init__(self, stream, protocol, events=None, run_state=None, min_interval_s=5.0):
        self.stream, self.protocol = stream, protocol
        self.events, self.run_state = events, run_state
        self.min_interval_s = float(min_interval_s)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tmstarget-verdict")
        self._future = None
        self._started = -np.inf
        self._lock = threading.Lock()
        self._state = None

    def update(self, target):
        """Start a recomputation for ``target`` (a Candidate) unless one runs or the last started too recently."""
        if self._future is not None and not self._future.done():
            return
        if self._future is not None:
            self._future.result()  # re-raise a failed job here, in the watcher's thread
        now = time.monotonic()
        if now - self._started < self.min_interval_s:
            return
        self._started = now
        n = len(self.stream.region_frames)
        self._future = self._pool.submit(self._compute, n, target)

    def _compute(self, n, target):
        from tmstarget.analysis.clean import regression_operator
        from tmstarget.analysis.inference import effective_dof
        from tmstarget.analysis.reliability import run_blocks, target_inference

        frames = self.stream.region_frames[:n]
        volumes = np.asarray(self.stream.frames_added[:n])
        region = np.array([f[0] for f in frames], dtype=np.float64)
        seed = np.array([f[1] for f in frames])
        design = np.array([f[2] for f in frames])
        operator = regression_operator(design)
        region, seed = operator @ region, operator @ seed
        protocol, layout = self.protocol, self.stream.layout
        block_of_row, block_state = run_blocks(volumes, self.stream.t_r, protocol.states, protocol.connectivity,
                                               protocol.inference.segment_s, self.events, self.run_state,
                                               self.stream.frame_offset_s)
        block_state = np.array(block_state, dtype=object)
        dof = {s: effective_dof(operator, seed, np.isin(block_of_row, np.flatnonzero(block_state == s)))
               for s in protocol.states}
        state = {"after_volume": int(volumes[-1]), "effective_dof": {s: round(float(v), 2) for s, v in dof.items()}}
        short = [s for s in protocol.states if dof[s] < protocol.inference.min_effective_dof]
        if short:
            state.update(p_fwe=None, significant=None, verdict=(
                f"not enough data yet: state '{short[0]}' has {dof[short[0]]:.1f} effective degrees of freedom "
                f"of the {protocol.inference.min_effective_dof:g} needed"))
        else:
            qc, _ = target_inference(region, seed, (block_of_row, block_state), [operator], protocol, layout.voxels,
                                     layout.region_cols, target, dof=dof, bootstrap=False)
            state.update({k: qc[k] for k in ("p_fwe", "alpha", "significant", "n_permutations", "verdict")})
        with self._lock:
            self._state = state

    def state(self):
        """The last verdict (dict) or None before the first one."""
        with self._lock:
            return None if self._state is None else dict(self._state)

    def wait(self):
        """Wait for a running recomputation (tests, the end of a run)."""
        if self._future is not None:
            self._future.result()

    def close(self):
        self._pool.shutdown(wait=True)
