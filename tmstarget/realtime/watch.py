"""``tmstarget watch``: the target, its stability and the head motion after every volume.

Per volume, in acquisition order (:class:`~tmstarget.realtime.incoming.IncomingSeries`):
rigid registration to the reference volume (the series' first) and
reslicing (:mod:`tmstarget.anatomy.motion`), FD, WM/CSF means, a committed row in the
state record (:class:`~tmstarget.realtime.store.RunStore`), the streaming
engine's update (:class:`~tmstarget.analysis.streaming.StreamingConnectivity`) and the
live readout: target and candidates in T1w and MNI, drift, stability, QC,
written atomically to ``OUTPUT/live.json``.

Set-up happens once: the T1 -> MNI registration starts as the watcher starts
(the T1 is acquired first), the EPI -> T1 coregistration when the reference
volume arrives; the MNI-defined masks are then warped onto the EPI grid as in
a native plan (:mod:`tmstarget.workflows.native`).

At the end (expected volumes, ``stop_after_s`` idle, Ctrl-C or SIGTERM) the
recorded run goes through :func:`tmstarget.workflows.native.native_plan`: the
same outputs as ``tmstarget plan`` in ``OUTPUT/plan/``, and a self-check of
the streaming maps against them in ``live.json``.

Output layout::

    OUTPUT/live.json    the live state (rewritten atomically after each volume)
    OUTPUT/watch.log    the log
    OUTPUT/state/       what a restarted watcher resumes from
    OUTPUT/plan/        the final plan

Size: one front end, the :class:`Watcher` with its set-up, per-volume loop, resume and final
plan, which share the watcher's state.
"""

import json
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import nibabel as nib
import numpy as np

from tmstarget import __version__
from tmstarget._fileio import sha256_file, write_json_atomic, write_nifti_atomic, write_text_atomic
from tmstarget.analysis.streaming import live_effective_dof, live_protocol
from tmstarget.errors import InputError, TmsTargetError
from tmstarget.realtime.live import LiveFile, utc_now
from tmstarget.realtime.store import RunStore
from tmstarget.templates import NILEARN_MNI_SPACE as MNI_SPACE  # the watcher registers to nilearn's template

log = logging.getLogger(__name__)

LIVE_SCHEMA = "tmstarget-live/1"
DRIFT_WINDOWS_MIN = (1, 2, 5)
#: Files read per poll: a backlog (watcher started late, replay --fast) stays on disk, memory stays flat.
MAX_FILES_PER_POLL = 64
#: Motion estimation on the latency path (:func:`~tmstarget.anatomy.motion.prepare_reference` options): a volume
#: starts from the previous volume's parameters at the finest level only (the coarse level is for the first
#: volume's capture range), and stops once an update moves no point of a 50-mm sphere by 0.01 mm. On the shared
#: real run this changes the parameters by at most 0.0003 mm / 0.0004 degrees against the batch defaults, in
#: half the time (bench/bench_watch.py --compare-motion), and the final plan keeps its target. Looser is not
#: safe: at 0.05 mm (0.0014 mm / 0.0022 degrees) the real run's final target moved to the runner-up cluster,
#: 33 mm away (two clusters of nearly the same size: a knife edge the z maps cross with 0.01 of change).
REALTIME_MOTION = {"warm_levels": 1, "tol_mm": 0.01}


@dataclass
class WatchOptions:
    """Everything ``tmstarget watch`` was asked to do.

    Attributes
    ----------
    incoming : Path
        Folder the scanner's real-time export writes into.
    output : Path
        Watch folder (``live.json``, ``state/``, ``plan/``).
    protocol : Protocol
        The protocol; the watcher streams its live model (:func:`~tmstarget.analysis.streaming.live_protocol`:
        the regression model, high-pass only unless ``[live] low_pass_hz``).
    t1 : Path
        T1 NIfTI, or a DICOM folder.
    events : Path, optional
        BIDS events of a blocks-design run (onsets from the series' first volume).
    expected_volumes : int, optional
        Volumes of the run; needed when the model depends on the run length.
    t_r_s : float, optional
        Repetition time (s), if known before the scan: the live model's degrees of freedom are then checked at
        start (else when the first volume brings its RepetitionTime); checked against the DICOM headers.
    series : int or str, optional
    stop_after_s : float, optional
        Finish after this many seconds without a new volume (counted from the first volume: a watcher
        may be started long before the scan). None: wait for the expected volumes or Ctrl-C.
    gap_timeout_s : float
        A missing volume is waited for this long once a later one is there.
    participant : str
    stable_mm, stable_minutes : float
        Verdict "stable": the target moved less than ``stable_mm`` over the last ``stable_minutes``.
    map_every : int
        Write the live whole-brain maps (``live_map-*.nii.gz``) every this many volumes (0: never).
    extra_writers : list of callable
        Run in the final plan's staging folder (navigation export).
    command : list of str
    force : bool
        Start afresh in a non-empty output folder that is not a watch.
    poll_s : float
    """

    incoming: Path
    output: Path
    protocol: object
    t1: Path
    events: Path | None = None
    expected_volumes: int | None = None
    t_r_s: float | None = None
    series: object = None
    stop_after_s: float | None = 60.0
    gap_timeout_s: float = 10.0
    participant: str = "anonymous"
    stable_mm: float = 2.0
    stable_minutes: float = 5.0
    map_every: int = 10
    extra_writers: list = field(default_factory=list)
    command: list = field(default_factory=list)
    force: bool = False
    poll_s: float = 0.01


def _needs_run_length(protocol):
    clean = protocol.clean
    return bool(clean.high_pass_hz or clean.low_pass_hz) or clean.task_regressors == "hrf"


def check_options(opts):
    """Refuse what the watcher cannot do, before anything is written (one clear line each).

    Returns
    -------
    Protocol
        The live model of ``opts.protocol`` (:func:`~tmstarget.analysis.streaming.live_protocol`).
    """
    from tmstarget.ingest.runs import load_events

    p = live_protocol(opts.protocol)
    if p.kind != "connectivity":
        raise InputError(f"protocol '{p.name}' is a fixed target: there is nothing to watch")
    states = p.states
    if states != ["rest"] and opts.events is None:
        raise InputError(f"protocol '{p.name}' needs the states {states}: give the task's --events (one series is "
                         "watched; for one run per state, plan the runs afterwards with 'tmstarget plan')")
    if states == ["rest"] and opts.events is not None:
        raise InputError(f"protocol '{p.name}' analyses rest: --events does not apply", path=opts.events)
    if opts.expected_volumes is None and _needs_run_length(p):
        raise InputError("--expected-volumes is needed: the protocol's band limits (cosine regressors) or HRF task "
                         "regressors depend on the run length")
    if opts.expected_volumes is not None and opts.expected_volumes <= p.clean.dummy_volumes + 1:
        raise InputError(f"--expected-volumes {opts.expected_volumes} leaves no frame after "
                         f"{p.clean.dummy_volumes} dummy volumes")
    if not Path(opts.t1).exists():
        raise InputError("T1 not found", path=opts.t1)
    events = None
    if opts.events is not None:
        events = load_events(opts.events, float("inf"), 1.0)  # checked against the run's end at set-up
        missing = [s for s in states if s not in set(events["trial_type"])]
        if missing:
            raise InputError(f"events have no block of {missing} (trial_type values: "
                             f"{sorted(set(events['trial_type']))})", path=opts.events, key="trial_type")
    if opts.t_r_s is not None:
        if not opts.t_r_s > 0:
            raise InputError(f"--tr must be > 0 seconds, got {opts.t_r_s!r}", key="t_r_s")
        if opts.expected_volumes is not None:
            check_live_dof(p, opts.t_r_s, opts.expected_volumes, events)
    incoming = Path(opts.incoming).resolve()
    out = Path(opts.output).resolve()
    if out == incoming or incoming in out.parents:
        raise InputError("the output folder may not be inside the incoming folder (the watcher would read its "
                         f"own files); use e.g. {incoming.parent / (incoming.name + '-watch')}", path=opts.output)
    return p


def check_live_dof(protocol, t_r, n_volumes, events=None):
    """Refuse a live model that leaves a state fewer effective degrees of freedom than the protocol's floor.

    Parameters
    ----------
    protocol : Protocol
        The live model (:func:`~tmstarget.analysis.streaming.live_protocol`).
    t_r : float
    n_volumes : int
        Expected volumes (dummies included).
    events : pandas.DataFrame, optional
        Blocks of a task run (None: a rest run).

    Returns
    -------
    dict
        State -> effective degrees of freedom (:func:`~tmstarget.analysis.streaming.live_effective_dof`).

    Raises
    ------
    InputError
        Saying how many remain in which state, and the floor.
    """
    dof = live_effective_dof(protocol, t_r, n_volumes, events=events, run_state="rest" if events is None else None)
    floor = protocol.inference.min_effective_dof
    short = {s: d for s, d in dof.items() if d < floor}
    if short:
        low = protocol.live.low_pass_hz
        band = f"a {protocol.clean.high_pass_hz:g}-{low:g} Hz band" if low else "a high-pass"
        remain = ", ".join(f"{d:.1f} in state '{s}'" for s, d in short.items())
        raise InputError(f"the live model ({band} as cosine regressors, {n_volumes} volumes at TR {t_r:g} s) leaves "
                         f"{remain}: fewer effective degrees of freedom than the protocol's floor of {floor:g} "
                         "([inference] min_effective_dof); use a high-pass only ([live] low_pass_hz = 0) or a longer "
                         "run", key="live.low_pass_hz")
    return dof


def _transform_dict(t):
    return {"from": t.from_space, "to": t.to_space, "fwd_files": list(t.fwd_files), "fwd_invert": list(t.fwd_invert),
            "inv_files": list(t.inv_files), "inv_invert": list(t.inv_invert)}


def _transform_from(d):
    from tmstarget.anatomy.registration import Transform

    return Transform(d["from"], d["to"], tuple(d["fwd_files"]), tuple(d["fwd_invert"]), tuple(d["inv_files"]),
                     tuple(d["inv_invert"]))


class Watcher:
    """Follows one series of a real-time export and keeps the target up to date.

    Parameters
    ----------
    opts : WatchOptions
    progress : callable, optional
        Called with a short message at each set-up stage and at the end.
    display : callable, optional
        Called with the ``live.json`` document after each volume (a terminal's live line).
    """

    def __init__(self, opts, progress=None, display=None):
        from tmstarget.anatomy.t1 import check_whole_head
        from tmstarget.ingest.native import load_image

        protocol = check_options(opts)
        # the T1 is read and checked now: a wrong T1 is refused before the scan starts, not at its first volume
        t1_img, _ = load_image(opts.t1, what="T1")
        if t1_img.ndim != 3:
            raise InputError(f"the T1 must be a 3-D image; got shape {t1_img.shape}", path=opts.t1)
        check_whole_head(t1_img, opts.t1)
        self.t1_img = t1_img
        self.opts = opts
        self.progress = progress or (lambda message: None)
        self.display = display or (lambda doc: None)
        self.out = Path(opts.output).resolve()
        self.state_dir = self.out / "state"
        self.live_path = self.out / "live.json"
        self.live_file = LiveFile(self.live_path, lambda: (self.status, time.monotonic() - self._status_since))
        self.protocol = protocol
        self.clean = self.protocol.clean
        self.events = None
        if opts.events is not None:
            from tmstarget.ingest.runs import load_events

            self.events = load_events(opts.events, float("inf"), 1.0)
        self.protocol_key = _protocol_key(self.protocol)
        self.setup = None  # set-up record (dict), saved in state/setup.json
        self.store = None
        self.stream = None
        self.live_verdict = None  # family-wise p of the live target (tmstarget.realtime.live_verdict)
        self.history = []  # (volume, t1 ras_mm) of the live target
        self.live_target = None
        self.point_cache = {}
        self.started_utc = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.status = "waiting for the first volume"
        self.model = None  # the live model as recorded (set when the repetition time is known)
        self.finished = None
        self._t1_future = None
        self.incoming = None
        self.perf = []
        self.live_maps = None
        self.summary = RowSummary(self.clean.fd_threshold_mm)

    # ----------------------------------------------------------------- state

    @property
    def status(self):
        """What the watcher is doing now (``live.json`` ``status``)."""
        return self._status

    @status.setter
    def status(self, value):
        self._status, self._status_since = value, time.monotonic()

    def _prepare_output(self):
        """Check the output folder; return the saved set-up of a watch to resume (or None)."""
        self.out.mkdir(parents=True, exist_ok=True)
        setup_path = self.state_dir / "setup.json"
        if setup_path.exists():
            saved = json.loads(setup_path.read_text(encoding="utf-8"))
            if saved["protocol_key"] != self.protocol_key or saved["incoming"] != str(
                    Path(self.opts.incoming).resolve()):
                raise InputError("this output folder holds a watch of another series or protocol; give another "
                                 "--output (or --force to start afresh)", path=self.out)
            return saved
        leftovers = [p.name for p in self.out.iterdir() if p.name not in ("watch.log",)]
        if leftovers and not self.opts.force:
            raise InputError(f"output folder is not empty and holds no watch to resume ({', '.join(leftovers[:3])}); "
                             "use --force to start afresh", path=self.out)
        if leftovers:
            import shutil

            for name in leftovers:
                path = self.out / name
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return None

    def _start_t1_registration(self):
        from tmstarget.anatomy.ants_process import IsolatedCall
        from tmstarget.anatomy.registration import register_t1_to_mni
        from tmstarget.anatomy.t1 import check_scalp

        t1_img = self.t1_img
        brain_only = not check_scalp(t1_img).scalp  # as plan --native: a brain-extracted T1 registers brain to brain
        self.t1_from_dicom = Path(self.opts.t1).is_dir()
        self.t1_path = Path(self.opts.t1)
        if self.t1_from_dicom:
            self.t1_path = write_nifti_atomic(self.state_dir / f"sub-{self.opts.participant}_T1w.nii.gz", t1_img)
        self.progress(f"registering the T1 to {MNI_SPACE} (in the background)")
        self.status = f"registering the T1 to {MNI_SPACE} (in the background); waiting for the first volume"
        # a child process, not a thread: ANTs holds the GIL for tens of seconds (live.json would freeze)
        self._t1_future = IsolatedCall(register_t1_to_mni, t1_img, 2, self.state_dir / "ants", brain_only)

    def _set_up(self, volume):
        """Reference volume -> EPI -> T1 coregistration, masks on the EPI grid, streaming engine."""
        from tmstarget.anatomy.ants_process import IsolatedCall
        from tmstarget.anatomy.motion import volume_centre_ras_mm
        from tmstarget.anatomy.registration import coregister_epi_to_t1, save_transform
        from tmstarget.workflows.native import EPI_SPACE, T1_SPACE

        self.status = "setting up: checking the first volume"
        if not volume.t_r_s:
            raise InputError("the series has no RepetitionTime in its DICOM headers", path=volume.files[0])
        if self.opts.t_r_s is not None and abs(self.opts.t_r_s - volume.t_r_s) > 1e-3:
            raise InputError(f"--tr {self.opts.t_r_s:g} s differs from the series' RepetitionTime "
                             f"{volume.t_r_s:g} s", path=volume.files[0])
        if self.opts.events is not None and self.opts.expected_volumes is not None:
            from tmstarget.ingest.runs import load_events

            load_events(self.opts.events, self.opts.expected_volumes, volume.t_r_s)  # blocks inside the run
        self.model = self._model_record(volume.t_r_s)
        # the affine as the recorded run's NIfTI header will hold it (float32), so the final plan smooths with
        # exactly the kernel the streaming engine used
        header = nib.Nifti1Header()
        header.set_sform(volume.affine)
        affine = header.get_sform()
        ref_img = nib.Nifti1Image(volume.data.astype(np.float32), affine)
        ref_path = write_nifti_atomic(self.state_dir / "reference.nii.gz", ref_img)
        self.progress(f"reference volume {volume.index}: coregistering the EPI to the T1 (rigid)")
        self.status = (f"coregistering the EPI (reference volume {volume.index}) to the T1 (rigid); the T1 -> MNI "
                       "registration runs in the background")
        epi_to_t1 = IsolatedCall(coregister_epi_to_t1, ref_img, self.t1_img, EPI_SPACE, T1_SPACE,
                                   workdir=self.state_dir / "ants").result()
        self.progress("waiting for the T1 -> MNI registration")
        self.status = f"registering the T1 to {MNI_SPACE} (waiting for it to finish)"
        t1_to_mni = self._t1_future.result()
        self.status = "bringing the MNI masks onto the EPI grid"
        xfm = self.state_dir / "xfm"
        epi_to_t1 = save_transform(epi_to_t1, xfm, "epi_to_t1")
        t1_to_mni = save_transform(t1_to_mni, xfm, "t1_to_mni")
        setup = {
            "protocol_key": self.protocol_key,
            "incoming": str(Path(self.opts.incoming).resolve()),
            "reference_volume": volume.index,
            "t_r_s": float(volume.t_r_s),
            "shape": list(volume.data.shape),
            "affine": affine.tolist(),
            "series_number": volume.series_number,
            "series_uid": volume.series_uid,
            "description": volume.description,
            "epi_to_t1": _transform_dict(epi_to_t1),
            "t1_to_mni": _transform_dict(t1_to_mni),
            "t1": str(self.t1_path.resolve()),
            "t1_from_dicom": self.t1_from_dicom,
            "events": None if self.opts.events is None else str(Path(self.opts.events).resolve()),
            "participant": self.opts.participant,
            "centre_ras_mm": volume_centre_ras_mm(affine, volume.data.shape).tolist(),
            "reference": str(ref_path),
        }
        self._build(setup, ref_img)
        write_json_atomic(self.state_dir / "setup.json", setup)  # written last: a set-up is all or nothing
        self.setup = setup
        self.store = RunStore(self.state_dir, setup["shape"], np.array(setup["affine"]), setup["t_r_s"])
        self.store.open()

    def _build(self, setup, ref_img):
        """Masks, grid, layout and the streaming engine from a set-up record."""
        from nilearn import datasets

        from tmstarget.analysis.engine import analysis_layout
        from tmstarget.analysis.streaming import StreamingConnectivity
        from tmstarget.anatomy.motion import prepare_reference
        from tmstarget.anatomy.registration import compose, nuisance_masks, warp_image
        from tmstarget.workflows.native import MASK_RESOLUTION_MM, NativeGrid

        self.epi_to_t1 = _transform_from(setup["epi_to_t1"])
        self.t1_to_mni = _transform_from(setup["t1_to_mni"])
        self.t1_path = Path(setup["t1"])
        self.t1_from_dicom = setup["t1_from_dicom"]
        epi_to_mni = compose(self.epi_to_t1, self.t1_to_mni)
        affine = np.array(setup["affine"])
        brain_mni = datasets.load_mni152_brain_mask(resolution=MASK_RESOLUTION_MM)
        brain_mni = nib.Nifti1Image((brain_mni.get_fdata() > 0).astype(np.uint8), brain_mni.affine)
        brain = np.asarray(warp_image(brain_mni, epi_to_mni, ref_img, "inverse", "nearest").dataobj) > 0
        if not brain.any():
            raise InputError("the MNI brain mask warped into EPI space is empty: check the EPI -> T1 -> MNI "
                             "registration")
        tissue = nuisance_masks(epi_to_mni, ref_img, direction="inverse", resolution_mm=MASK_RESOLUTION_MM)
        self.wm_mask = np.asarray(tissue["wm"].dataobj) > 0
        self.csf_mask = np.asarray(tissue["csf"].dataobj) > 0
        self.brain_mask = brain
        self.tissue_index = [np.flatnonzero(m) for m in (self.wm_mask, self.csf_mask, brain)]  # per volume: means
        write_nifti_atomic(self.state_dir / "brain_mask.nii.gz", nib.Nifti1Image(brain.astype(np.uint8), affine))
        self.grid = NativeGrid(ref_img, epi_to_mni)
        self.layout = analysis_layout(self.protocol, brain, affine, self.grid, self.opts.incoming)
        self.reslice_first, self.reslice_later = _reslice_parts(self.layout.voxels, self.clean.smoothing_fwhm_mm,
                                                                (brain, self.wm_mask, self.csf_mask))
        self.ref_prep = prepare_reference(np.asarray(ref_img.dataobj, dtype=np.float32), affine, **REALTIME_MOTION)
        self.affine = affine
        self.centre = np.array(setup["centre_ras_mm"])
        n_volumes = self.opts.expected_volumes or 10000
        run_state = "rest" if self.events is None else None
        self.stream = StreamingConnectivity(self.layout, self.protocol, setup["t_r_s"], n_volumes,
                                            events=self.events, run_state=run_state)
        from tmstarget.realtime.live_verdict import LiveVerdict

        self.live_verdict = LiveVerdict(self.stream, self.protocol, events=self.events, run_state=run_state)
        self._map_search_region()
        from tmstarget.workflows.native import rigid_matrix_ras

        self.t1w_affine = rigid_matrix_ras(self.epi_to_t1, affine, tuple(setup["shape"])) @ affine

    def _model_record(self, t_r):
        """The live model as ``live.json`` and the final plan record it (refused when it leaves too few degrees
        of freedom: :func:`check_live_dof`)."""
        p, n = self.protocol, self.opts.expected_volumes
        clean = p.clean
        dof = check_live_dof(p, t_r, n, self.events) if n is not None else None
        low = clean.low_pass_hz or None
        band = (f"{clean.high_pass_hz:g}-{low:g} Hz band" if low and clean.high_pass_hz else
                f"high-pass {clean.high_pass_hz:g} Hz" if clean.high_pass_hz else "no band limits")
        return {
            "name": f"live model: regression with discrete-cosine {band}",
            "filter": "cosine", "high_pass_hz": clean.high_pass_hz or None, "low_pass_hz": low,
            "effective_dof_per_state": None if dof is None else {s: round(d, 1) for s, d in dof.items()},
            "min_effective_dof": p.inference.min_effective_dof,
            "differs_from_batch": "the final plan uses this live model, not the batch default (Butterworth "
                                  f"{p.clean.high_pass_hz:g}-{self.opts.protocol.clean.low_pass_hz:g} Hz band-pass): "
                                  "'tmstarget plan' with the protocol's defaults on the same run can give another "
                                  "target",
            "same_model_in_plan": " ".join(f"--set {k}={v:g}" if isinstance(v, float) else f"--set {k}={v}"
                                           for k, v in (("clean.filter", "cosine"), ("clean.low_pass_hz",
                                                                                     clean.low_pass_hz))),
        }

    def _restore(self, saved):
        """Resume: rebuild the engine and feed it the committed volumes again."""
        self.progress("resuming the watch from its saved state")
        self.model = self._model_record(saved["t_r_s"])
        ref_img = nib.load(saved["reference"])
        self._build(saved, ref_img)
        self.setup = saved
        self.store = RunStore(self.state_dir, saved["shape"], np.array(saved["affine"]), saved["t_r_s"])
        rows = self.store.open()
        for row in rows:
            self.summary.add(row)
            motion = np.array([row[k] for k in ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")])
            data = None if row["missing"] else self.store.read_volume(row["volume"])
            self.stream.push(row["volume"], data, motion,
                             self._nuisance(row["white_matter"], row["csf"], row["global_signal"]),
                             row["fd_power_mm"], missing=row["missing"])
            self._track(row["volume"])
        log.info("resumed after %d committed volumes", len(rows))

    # ------------------------------------------------------------- per volume

    def _process(self, item):
        from tmstarget.anatomy.motion import fd_jenkinson, fd_power, register_volume, reslice_volume
        from tmstarget.realtime.incoming import Gap

        picked = time.monotonic()
        missing = isinstance(item, Gap)
        if self.setup is None:
            if missing:
                log.warning("volume %d never arrived before the reference volume: skipped", item.index)
                return
            self._set_up(item)
        index = item.index
        of = f" of {self.opts.expected_volumes}" if self.opts.expected_volumes else ""
        self.status = f"processing volume {index + 1}{of}"
        expected = len(self.store.rows)
        if index != expected:
            raise InputError(f"volume {index} released while volume {expected} was expected", volume=index)
        previous = self._motion_row(-1) if self.store.rows else None
        start, cpu_start = time.monotonic(), time.thread_time()
        if missing:
            motion = previous if previous is not None else np.zeros(6)
            realigned = np.zeros(self.store.shape, dtype=np.float32)
            wm = csf = gs = float("nan")
            log.warning("volume %d missing after %.1f s: recorded as a gap (left out of the analysis)",
                        index, item.waited_s)
        else:
            motion = register_volume(self.ref_prep, item.data, init_params=previous)
            # the voxels the stream and the tissue means read now, the rest after live.json (same values)
            realigned = reslice_volume(item.data, self.affine, motion, where=self.reslice_first)
            flat = realigned.reshape(-1)  # flat indices pick what the boolean masks pick, in the same order
            wm, csf, gs = (float(flat[where].mean(dtype=np.float64)) for where in self.tissue_index)
        moved, cpu_moved = time.monotonic(), time.thread_time()
        pair = np.vstack([previous if previous is not None else motion, motion])
        fd_p = float(fd_power(pair)[1])
        fd_j = float(fd_jenkinson(pair, self.centre)[1])
        status = self.stream.push(index, None if missing else realigned, motion, self._nuisance(wm, csf, gs), fd_p,
                                  missing=missing)
        latency = 1000.0 * (time.monotonic() - item.seen_s) if not missing else 0.0
        row = dict(zip(("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"), map(float, motion)))
        row.update(missing=missing, fd_power_mm=fd_p, fd_jenkinson_mm=fd_j, white_matter=0.0 if missing else wm,
                   csf=0.0 if missing else csf, global_signal=0.0 if missing else gs, status=status, latency_ms=latency)
        pushed, cpu_pushed = time.monotonic(), time.thread_time()
        self.store.add(index, realigned, row)  # live.json counts it; committed below
        self.summary.add(self.store.rows[-1])
        self._track(index)
        tracked, cpu_tracked = time.monotonic(), time.thread_time()
        self.status = (f"tracking the target (volume {index + 1}{of} processed)" if self.live_target is not None
                       else f"collecting volumes (volume {index + 1}{of} processed)")
        doc = self.write_live()
        done, cpu_done = time.monotonic(), time.thread_time()
        # the commit (two fsyncs) and the live maps come after live.json: off the latency path. A watcher killed
        # in between resumes before this volume and processes it again (the stream is rebuilt from commits).
        if not missing:
            reslice_volume(item.data, self.affine, motion, where=self.reslice_later, out=realigned)
        self.store.commit()
        if self.live_target is not None and self.opts.map_every and (index + 1) % self.opts.map_every == 0:
            self.stream.brain_maps_in_background(lambda z, score, v=index: self._write_live_maps(v, z, score))
        stored = time.monotonic()
        self.display(doc)
        if not missing:  # milliseconds: file complete -> live.json, and the stages of this volume's processing
            # from the first poll that saw the file at its final size (the settle wait and the read included);
            # cpu_*: this thread's CPU time (the machine's load inflates it far less than wall time), cpu_ms from
            # the motion correction to live.json
            self.perf.append({"volume": index, "latency_ms": 1000 * (done - item.seen_s),
                              "processing_ms": 1000 * (done - start), "motion_ms": 1000 * (moved - start),
                              "stream_ms": 1000 * (pushed - moved), "target_ms": 1000 * (tracked - pushed),
                              "live_json_ms": 1000 * (done - tracked), "record_ms": 1000 * (stored - done),
                              "cpu_ms": 1000 * (cpu_done - cpu_start), "motion_cpu_ms": 1000 * (cpu_moved - cpu_start),
                              "stream_cpu_ms": 1000 * (cpu_pushed - cpu_moved),
                              "target_cpu_ms": 1000 * (cpu_tracked - cpu_pushed),
                              "live_json_cpu_ms": 1000 * (cpu_done - cpu_tracked), "setup_ms": 1000 * (start - picked),
                              "settle_read_ms": 1000 * (picked - item.seen_s)})

    def _nuisance(self, wm, csf, gs):
        """The nuisance values the protocol regresses, in the stream's order (WM, CSF, global signal)."""
        clean = self.protocol.clean
        return ([wm, csf] if clean.wm_csf else []) + ([gs] if clean.global_signal else [])

    def _motion_row(self, i):
        row = self.store.rows[i]
        return np.array([row[k] for k in ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")])

    def _track(self, volume):
        """Live target after this volume (when every state has enough frames)."""
        from tmstarget.analysis.targets import pick_targets

        ready, why = self.stream.ready()
        self.ready_why = why
        if not ready:
            self.live_target = None
            return
        _, region_score, tables = self.stream.region_maps()
        full = np.zeros(len(self.layout.voxels))
        full[self.layout.region_cols] = region_score
        candidates = pick_targets(full, self.layout.voxels, self.layout.region_cols, self.protocol.target)
        points = self._t1_and_mni(candidates)
        self.live_target = {"candidates": candidates, "points": points, "tables": tables}
        self.live_verdict.update(candidates[0])
        self.history.append((volume, points[0][0]))

    def _write_live_maps(self, volume, z, score):
        """Live whole-brain maps (Fisher z per state, and the score), on the EPI grid placed in T1w world."""
        delta = [("delta", score)] if self.protocol.connectivity.contrast is not None else []
        for name, values in [(f"z_{s}", v) for s, v in z.items()] + delta:
            img = nib.Nifti1Image(self.layout.voxels.to_volume(values), self.t1w_affine)
            img.header["descrip"] = f"tmstarget live map after volume {volume}".encode()[:79]
            write_nifti_atomic(self.out / f"live_map-{name}.nii.gz", img)
        self.live_maps = {"after_volume": volume, "files": sorted(p.name for p in self.out.glob("live_map-*.nii.gz")),
                          "world": "T1w (the EPI grid moved by the rigid coregistration)"}

    def _map_search_region(self):
        """T1w and MNI mm of every search-region voxel, mapped once (as :func:`tmstarget.workflows.native.to_t1w` maps
        candidates): a pick is then a look-up, not a call into ITK on the latency path."""
        from tmstarget.anatomy.registration import map_points

        cols = self.layout.region_cols
        epi = self.layout.voxels.ras_mm(cols)
        t1 = np.atleast_2d(map_points(epi, self.epi_to_t1, "forward"))
        mni = np.atleast_2d(map_points(t1, self.t1_to_mni, "forward"))
        ijk = [tuple(int(v) for v in self.layout.voxels.ijk[c]) for c in cols]
        self.point_cache = {key: (a, b) for key, a, b in zip(ijk, t1, mni)}

    def _t1_and_mni(self, candidates):
        """T1w and MNI mm of candidates (search-region voxels)."""
        return [self.point_cache[c.voxel_ijk] for c in candidates]

    # ------------------------------------------------------------------ live

    def _stability(self):
        t_r_s = self.setup["t_r_s"] if self.history else None  # no set-up before the first target
        return target_stability(self.history, t_r_s, self.opts.stable_mm, self.opts.stable_minutes)

    def live_document(self):
        rows = self.store.rows if self.store is not None else []
        summary = self.summary
        t_r = self.setup["t_r_s"] if self.setup else None
        doc = {
            "schema": LIVE_SCHEMA,
            "status": self.status,
            "status_elapsed_s": round(time.monotonic() - self._status_since, 1),
            "updated_utc": utc_now(),
            "started_utc": self.started_utc,
            "participant": self.opts.participant,
            "protocol": self.protocol.name,
            "series": None if not self.setup else {"number": self.setup["series_number"],
                                                   "description": self.setup["description"]},
            "model": None if self.model is None else {**self.model, "regressors": getattr(self.stream, "n_regressors",
                                                                                             None)},
            "volumes": {
                "processed": len(rows),
                "received": (self.incoming.first_index + self.incoming.n_released) if self.incoming else len(rows),
                "expected": self.opts.expected_volumes,
                "gaps": list(summary.gaps),
                "duplicates_ignored": len(self.incoming.duplicates) if self.incoming else 0,
                "files_skipped": len(self.incoming.skipped) if self.incoming else 0,
            },
            "last_volume": None,
            "qc": {
                "fd_power_mm": list(summary.fd),
                "fd_threshold_mm": self.clean.fd_threshold_mm,
                "frames_above_threshold": summary.above_threshold,
                "frames_censored": summary.analysable - (self.stream.n_added if self.stream is not None else 0),
                "frames_kept": int(self.stream.n_added if self.stream is not None else 0),
                "usable_minutes": round((self.stream.n_added if self.stream is not None else 0) * (t_r or 0) / 60.0,
                                        2),
                "frames_per_state": {s: int(self.stream.region.count[self.stream._state_buckets(s)].sum())
                                     for s in self.protocol.states} if self.stream else {},
                "max_abs_translation_mm": round(summary.max_abs_translation_mm, 3),
                "max_abs_rotation_deg": round(float(np.degrees(summary.max_abs_rotation_rad)), 3),
            },
            "target": None,
            "candidates": [],
            "waiting_for": None if self.live_target is not None else getattr(self, "ready_why", "the first volume"),
            "stability": self._stability(),
            "inference": self.live_verdict.state() if self.live_verdict is not None else None,
            "subsystem_fc": None,
            "coordinates": {"ras_mm": "T1w world (scanner RAS of the T1)", "mni_mm": MNI_SPACE},
            "live_maps": self.live_maps,
            "final": self.finished,
            "tmstarget_version": __version__,
        }
        if rows:
            r = rows[-1]
            doc["last_volume"] = {"volume": r["volume"], "status": r["status"],
                                  "fd_power_mm": round(r["fd_power_mm"], 4), "latency_ms": round(r["latency_ms"], 1)}
        if self.live_target is not None:
            entries = []
            for c, (t1, mni) in zip(self.live_target["candidates"], self.live_target["points"]):
                entries.append({"rank": c.rank, "ras_mm": [round(float(v), 2) for v in t1],
                                "mni_mm": [round(float(v), 2) for v in mni], "voxel_ijk": list(c.voxel_ijk),
                                "score": round(float(c.score), 5)})
            doc["target"], doc["candidates"] = entries[0], entries
            doc["subsystem_fc"] = {s: {k: round(v, 5) for k, v in t.items()}
                                   for s, t in self.live_target["tables"].items()} or None
        return doc

    def write_live(self):
        """Rewrite ``live.json`` now; returns the document written."""
        doc = self.live_document()
        self.live_file.write(doc)
        return doc

    # ------------------------------------------------------------------ run

    def run(self):
        """Watch until the run ends; write the final plan. Returns the final ``target.json`` document or None."""
        from tmstarget.realtime.incoming import IncomingSeries

        saved = self._prepare_output()
        handler = logging.FileHandler(self.out / "watch.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger("tmstarget")
        root.addHandler(handler)
        # the log file gets INFO; consoles keep the level the user chose
        for console in logging.getLogger().handlers:
            if console.level == logging.NOTSET:
                console.setLevel(logging.getLogger().level)
        if root.level == logging.NOTSET or root.level > logging.INFO:
            root.setLevel(logging.INFO)
        in_main = threading.current_thread() is threading.main_thread()  # signals can only be caught there
        previous_term = signal.signal(signal.SIGTERM, _raise_interrupt) if in_main else None
        try:
            if saved is not None:
                self.status = "resuming: rebuilding the set-up and replaying the committed volumes"
            self.write_live()
            self.live_file.start()  # from now on live.json is refreshed at least every HEARTBEAT_S
            if saved is not None:
                self._restore(saved)
            else:
                self._start_t1_registration()
            start = len(self.store.rows) if self.store else 0
            # settle_s=0: a file is read once its size held across two polls; the parse then proves it complete
            self.incoming = IncomingSeries(self.opts.incoming, series=self.opts.series, first_index=start,
                                           settle_s=0.0, gap_timeout_s=self.opts.gap_timeout_s,
                                           poll_s=self.opts.poll_s, max_files_per_poll=MAX_FILES_PER_POLL)
            if saved is not None:
                self.status = "waiting for the next volume"
            self.write_live()
            # one BLAS thread each for this loop and the streaming engine's worker: two threads on two cores
            # instead of four fighting over them (latency spikes)
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=1, user_api="blas"):
                reason = self._loop()
            return self._finish(reason)
        except TmsTargetError as exc:
            self.live_file.stop()
            self.status = f"failed: {exc}"  # readers of live.json learn why the updates stopped
            self.write_live()
            raise
        finally:
            self.live_file.stop()
            if self._t1_future is not None:
                self._t1_future.cancel()
            if in_main:
                signal.signal(signal.SIGTERM, previous_term)
            root.removeHandler(handler)
            handler.close()

    def _loop(self):
        last_activity = time.monotonic() if self.store is not None and self.store.rows else None  # idle clock
        expected = self.opts.expected_volumes
        try:
            while True:
                if expected is not None and self.store is not None and len(self.store.rows) >= expected:
                    return f"all {expected} expected volumes received"
                events = self.incoming.n_file_events
                items = self.incoming.poll()
                busy = bool(items) or self.incoming.n_file_events != events  # files moving: poll again at once
                while items:
                    item = items.pop(0)  # a processed volume's data is released at once
                    if expected is not None and item.index >= expected:
                        log.warning("volume %d is beyond the %d expected volumes: ignored", item.index, expected)
                        continue
                    self._process(item)
                    last_activity = time.monotonic()
                if busy:
                    continue
                idle = 0.0 if last_activity is None else time.monotonic() - last_activity
                if self.opts.stop_after_s is not None and idle > self.opts.stop_after_s:
                    self._record_missing_tail(idle)
                    return f"no new volume for {self.opts.stop_after_s:g} s"
                time.sleep(self.opts.poll_s)
        except KeyboardInterrupt:
            return "interrupted"

    def _record_missing_tail(self, idle_s):
        """The scan has stopped short of ``expected_volumes``: the volumes that never came are gaps.

        A missing last volume has no later volume to start the gap wait; recording the tail keeps the run its
        planned length, so the final plan's model (cosine regressors of N volumes) is the streaming one.
        """
        from tmstarget.realtime.incoming import Gap

        if self.store is None or self.opts.expected_volumes is None:
            return
        for index in range(len(self.store.rows), self.opts.expected_volumes):
            self._process(Gap(index, index + 1, idle_s))

    def _finish(self, reason):
        """The recorded run through the batch engine: the same outputs as ``tmstarget plan``."""
        from tmstarget.workflows.native import confounds_tsv, native_plan

        log.info("finishing: %s", reason)
        self.progress(f"finishing ({reason})")
        rows = self.store.rows if self.store else []
        n_kept = sum(1 for r in rows if r["status"] == "kept")
        if not rows or n_kept == 0:
            self.status = f"stopped ({reason}) before any usable volume"
            self.write_live()
            raise InputError(f"the watch ended ({reason}) before any usable volume arrived", path=self.opts.incoming)
        self.status = "writing the final plan"
        self.write_live()
        bold = self.store.seal()
        motion = np.array([[r[k] for k in ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")] for r in rows])
        stem = _recorded_stem(self.state_dir, self.opts.participant, self.events is not None)
        write_text_atomic(Path(f"{stem}_desc-confounds_timeseries.tsv"), confounds_tsv(
            motion, self.store.column("fd_power_mm"), self.store.column("fd_jenkinson_mm"),
            self.store.column("white_matter"), self.store.column("csf"), self.store.column("global_signal"),
            self.store.column("missing")))
        write_json_atomic(Path(f"{stem}_desc-realigned_bold.json"), {
            "RepetitionTime": self.setup["t_r_s"], "SkullStripped": False, "MotionCorrected": True,
            "SeriesNumber": self.setup["series_number"], "SeriesDescription": self.setup["description"]})
        qc = {"realtime": {"reason_stopped": reason, "reference_volume": self.setup["reference_volume"],
                           "volumes": len(rows), "gaps": [r["volume"] for r in rows if r["missing"]],
                           "latency_ms_p50": _percentile([r["latency_ms"] for r in rows if not r["missing"]], 50),
                           "latency_ms_p95": _percentile([r["latency_ms"] for r in rows if not r["missing"]], 95),
                           "incoming_sha256_note": "DICOM files are not hashed one by one; the realigned run is",
                           "realigned_run_sha256": sha256_file(bold), "model": self._final_model()}}
        session = recorded_session(self.out, qc)
        plan_dir = self.out / "plan"
        plan = native_plan(session, self.protocol, self.opts.participant, command=self.opts.command,
                           progress=self.progress)
        plan.save(plan_dir, force=True, writers=self.opts.extra_writers)
        document = plan.document
        target, plan_qc = document["target"], document.get("qc", {})
        inference = plan_qc.get("inference")
        self.finished = {"reason": reason, "plan": "plan/target.json",
                         "target": {k: target[k] for k in ("ras_mm", "mni_mm", "voxel_ijk") if k in target},
                         "model": {**self._final_model(),
                                   "effective_dof_per_state_in_plan": plan_qc.get("effective_dof_per_state")},
                         "significance": None if inference is None else {
                             k: inference.get(k) for k in ("verdict", "significant", "p_fwe", "alpha")},
                         "warnings": list(plan_qc.get("warnings", [])),
                         "max_abs_dz_stream_vs_plan": self._self_check(plan_dir, document["images"]["maps"]),
                         "same_target_voxel_as_live": (self.live_target is not None and list(
                             self.live_target["candidates"][0].voxel_ijk) == target["voxel_ijk"])}
        self.status = "finished"
        self.write_live()
        return document

    def _final_model(self):
        """The live model as the final plan used it (:meth:`_model_record` with the regressor count)."""
        return {**self.model, "regressors": self.stream.n_regressors}

    def _self_check(self, plan_dir, map_files):
        """Largest |z difference| between the streaming maps and the final plan's maps (both on the EPI grid)."""
        z, score = self.stream.brain_maps()
        self._write_live_maps(len(self.store.rows) - 1, z, score)
        ijk = tuple(self.layout.voxels.ijk.T)
        worst = 0.0
        for state, values in z.items():
            written = np.asarray(nib.load(plan_dir / map_files[f"z_{state}"]).dataobj)[ijk]
            worst = max(worst, float(np.abs(values - written).max()))
        return worst


def _reslice_parts(voxels, fwhm_mm, masks):
    """Flat voxel indices to reslice before the stream (the analysed voxels grown by the smoothing kernel's
    half-width per axis, where the separable smoothing reads, and the tissue masks) and after live.json (the rest).

    The stream smooths its box; values beyond the kernel's reach of every analysed voxel never enter a smoothed
    value, so leaving them zero until later changes no number.
    """
    from scipy import ndimage

    from tmstarget.analysis.clean import smoothing_radius

    radius = smoothing_radius(voxels.affine, fwhm_mm) if fwhm_mm else [0, 0, 0]
    first = ndimage.maximum_filter(voxels.mask, size=[2 * r + 1 for r in radius], mode="constant", cval=False)
    for mask in masks:
        first = first | mask
    flat = first.reshape(-1)
    return np.flatnonzero(flat), np.flatnonzero(~flat)


class RowSummary:
    """The run's QC figures in ``live.json``, kept up to date row by row (not recounted over every row after
    every volume).

    Parameters
    ----------
    fd_threshold_mm : float
        A frame above it counts in :attr:`above_threshold` (dummies and gaps aside).
    """

    def __init__(self, fd_threshold_mm):
        self.fd_threshold_mm = fd_threshold_mm
        self.fd = []  # FD_Power per volume (mm, 4 decimals)
        self.gaps = []  # volumes that never arrived
        self.analysable = 0  # volumes neither dummy nor missing
        self.above_threshold = 0
        self.max_abs_translation_mm = 0.0
        self.max_abs_rotation_rad = 0.0

    def add(self, row):
        """Count one committed (or about to be committed) ``frames.tsv`` row."""
        self.fd.append(round(row["fd_power_mm"], 4))
        if row["missing"]:
            self.gaps.append(row["volume"])
        if row["status"] not in ("dummy", "missing"):
            self.analysable += 1
            self.above_threshold += row["fd_power_mm"] > self.fd_threshold_mm
        self.max_abs_translation_mm = max(self.max_abs_translation_mm,
                                          *(abs(row[k]) for k in ("trans_x", "trans_y", "trans_z")))
        self.max_abs_rotation_rad = max(self.max_abs_rotation_rad, *(abs(row[k]) for k in ("rot_x", "rot_y", "rot_z")))


def _recorded_stem(state_dir, participant, task):
    return Path(state_dir) / f"sub-{participant}_{'task_run-1' if task else 'rest_run-1'}"


def recorded_session(watch_dir, qc=None):
    """The run a finished watch recorded, ready for :func:`tmstarget.workflows.native.native_plan`.

    The realigned run, its confounds (the watcher's motion, FD, WM/CSF, gaps), brain mask and
    transforms from ``WATCH_DIR/state/``: the same inputs the watcher's final plan used.

    Parameters
    ----------
    watch_dir : Path
        A ``tmstarget watch`` output folder whose watch has finished.
    qc : dict, optional
        Recorded in the plan's ``qc.native``.

    Returns
    -------
    tmstarget.workflows.native.NativeSession
    """
    from nilearn import image

    from tmstarget.anatomy.registration import compose
    from tmstarget.ingest.collect import ExplicitRun, Selection
    from tmstarget.workflows.native import NativeGrid, NativeSession

    state = Path(watch_dir) / "state"
    setup_path = state / "setup.json"
    if not setup_path.is_file():
        raise InputError("not a tmstarget watch folder (no state/setup.json)", path=watch_dir)
    setup = json.loads(setup_path.read_text(encoding="utf-8"))
    events = setup.get("events")
    stem = _recorded_stem(state, setup.get("participant", "anonymous"), events is not None)
    confounds = Path(f"{stem}_desc-confounds_timeseries.tsv")
    if not confounds.is_file():
        raise InputError(f"the watch has not finished (no {confounds.name})", path=watch_dir)
    epi_to_t1, t1_to_mni = _transform_from(setup["epi_to_t1"]), _transform_from(setup["t1_to_mni"])
    run = ExplicitRun(bold=state / "realigned.nii", confounds=confounds,
                      sidecar=Path(f"{stem}_desc-realigned_bold.json"), events=None if events is None else Path(events),
                      mask=state / "brain_mask.nii.gz", label=stem.name.split("_", 1)[1])
    grid = NativeGrid(image.load_img(setup["reference"]), compose(epi_to_t1, t1_to_mni))
    t1 = Path(setup["t1"])
    selection = Selection([(run, "rest" if events is None else None)], t1, None,
                          [Path(setup["incoming"]), t1], grid=grid)
    return NativeSession(selection, epi_to_t1, t1_to_mni, t1, setup["t1_from_dicom"], qc or {})


def plan_recorded_watch(watch_dir, protocol, command=None, progress=None):
    """Plan the run a finished watch recorded, with any protocol (``tmstarget plan --from-watch``).

    With the watcher's live model (``--set clean.filter=cosine --set clean.low_pass_hz=0`` on the
    protocol, the overrides its final plan records) this is the watcher's final plan again; with the
    protocol's defaults it is the batch (Butterworth) model on the same recorded data and transforms.

    Parameters
    ----------
    watch_dir : Path
        A ``tmstarget watch`` output folder whose watch has finished.
    protocol : Protocol
    command : list of str, optional
    progress : callable, optional

    Returns
    -------
    tmstarget.outputs.plan.Plan
        In the T1's world, as the watcher's final plan.
    """
    from tmstarget.workflows.native import native_plan

    session = recorded_session(watch_dir, {"recorded_watch": "state/ of a tmstarget watch (realigned run, confounds "
                                                             "and transforms as the watcher recorded them)"})
    setup = json.loads((Path(watch_dir) / "state" / "setup.json").read_text(encoding="utf-8"))
    return native_plan(session, protocol, setup.get("participant", "anonymous"), command=command, progress=progress)


def _moved_over(history, t_r_s, minutes):
    """Largest distance (mm) from the newest target to the targets of the last ``minutes``;
    None while the target has existed for less than that."""
    now_volume, now_xyz = history[-1]
    start = now_volume - minutes * 60.0 / t_r_s
    if history[0][0] > start:
        return None
    moved = 0.0
    for volume, xyz in reversed(history):  # newest first: only the window is visited
        if volume < start:
            break
        moved = max(moved, float(np.linalg.norm(np.asarray(now_xyz, float) - np.asarray(xyz, float))))
    return moved


def target_stability(history, t_r_s, stable_mm, stable_minutes):
    """The live stability verdict of a target history.

    Parameters
    ----------
    history : sequence of (int, array-like of 3 floats)
        ``(volume index, target mm)`` of every live target so far, oldest first.
    t_r_s : float
        Repetition time (s): the windows count minutes, not volumes (unused for an empty history).
    stable_mm : float
        The target is stable when it moved less than this ...
    stable_minutes : float
        ... over this many minutes.

    Returns
    -------
    dict
        ``verdict`` ("no target yet", "settling" while the target has existed
        for less than ``stable_minutes``, "stable" or "moving"), the ``rule``
        in words and ``drift_mm`` over the last 1, 2 and 5 minutes (None for a
        window longer than the history).
    """
    rule = f"stable when the target moved less than {stable_mm:g} mm over the last {stable_minutes:g} minutes"
    if not history:
        return {"verdict": "no target yet", "rule": rule, "drift_mm": {f"{w}min": None for w in DRIFT_WINDOWS_MIN}}
    drift = {f"{w}min": _moved_over(history, t_r_s, w) for w in DRIFT_WINDOWS_MIN}
    moved = _moved_over(history, t_r_s, stable_minutes)
    verdict = "settling" if moved is None else "stable" if moved < stable_mm else "moving"
    return {"verdict": verdict, "rule": rule,
            "drift_mm": {k: None if v is None else round(v, 2) for k, v in drift.items()}}


def _protocol_key(protocol):
    """Identity of a protocol with its overrides: a watch resumes only under the same one."""
    import hashlib

    return hashlib.sha256(json.dumps(protocol.to_dict(), sort_keys=True).encode()).hexdigest()


def _percentile(values, q):
    return round(float(np.percentile(values, q)), 1) if values else None


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt
