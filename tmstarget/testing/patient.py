"""Deterministic synthetic patients in fMRIPrep layout (sample data, tests, benchmarks).

The anatomy is nilearn's bundled MNI152 template.  Band-limited (0.01-0.1 Hz)
latent signals drive the DMN subsystems (core, dMPFC, MTL) and the sgACC at
the published coordinates, with state-dependent coupling: during rumination
core-dMPFC coupling falls and core-MTL coupling rises.  Planted spots give
each strategy a known answer, and decoys sit where a wrong implementation
would land:

* ``dmpfc_target``: core coupling +0.6 in distraction, -0.6 in rumination, times
  ``rumination_effect`` (2 by default, 0 for a patient with no rumination effect;
  it scales every rumination-vs-distraction difference below) (the rumination-dmpfc answer);
* ``dmpfc_constant``: core coupling -0.8 in every state (what a missing
  condition split would pick; the rest-dmpfc answer);
* ``dmpfc_sign``: core coupling -0.6 / +0.6 (what a sign error would pick);
* ``dmpfc_mtl``: MTL coupling +0.7 / -0.7 (what the wrong seed would pick);
* ``dlpfc_target``: sgACC coupling -0.7 (the sgacc-dlpfc answer);
* ``dlpfc_core``: core coupling -0.7 (the dmn-dlpfc answer, a wrong seed for sgacc-dlpfc);
* ``dlpfc_sign``: sgACC coupling +0.7 (what a sign error would pick).

Artefacts a pipeline must remove: motion (drift and spikes) leaking into the
data through Friston-24-shaped spatial patterns, intensity drops at spike
frames, a physiological signal in WM/CSF (and weaker in grey matter), linear
drift and HRF-shaped task activation in the core.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import signal as sp_signal

from tmstarget._fileio import write_json_atomic, write_nifti_atomic, write_text_atomic
from tmstarget.analysis.rois import grey_matter_mask, load_atlas, region_mask, roi_set
from tmstarget.anatomy.motion import fd_power, friston24

SPACE = "MNI152NLin2009cAsym"
# state -> {spot: (latent, weight)}
SPOTS = {
    "dmpfc_target": ("core", {"rest": 0.0, "distraction": 0.6, "rumination": -0.6}),
    "dmpfc_constant": ("core", {"rest": -0.8, "distraction": -0.8, "rumination": -0.8}),
    "dmpfc_sign": ("core", {"rest": 0.0, "distraction": -0.6, "rumination": 0.6}),
    "dmpfc_mtl": ("mtl", {"rest": 0.0, "distraction": 0.7, "rumination": -0.7}),
    "dlpfc_target": ("sgacc", {"rest": -0.7, "distraction": -0.7, "rumination": -0.7}),
    "dlpfc_core": ("core", {"rest": -0.7, "distraction": -0.7, "rumination": -0.7}),
    "dlpfc_sign": ("sgacc", {"rest": 0.7, "distraction": 0.7, "rumination": 0.7}),
}
DEFAULT_SPOTS_MNI = {
    "dmpfc_target": (-8, 56, 28),
    "dmpfc_constant": (8, 38, 52),
    "dmpfc_sign": (-14, 34, 50),
    "dmpfc_mtl": (12, 60, 22),
    "dlpfc_target": (-42, 44, 30),
    "dlpfc_core": (-38, 18, 54),
    "dlpfc_sign": (-28, 38, 48),
}
# subsystem coupling to the core latent signal, per state
SUBSYSTEM_CORE_COUPLING = {
    "dmpfc": {"rest": 0.4, "distraction": 0.5, "rumination": 0.1},
    "mtl": {"rest": 0.2, "distraction": 0.1, "rumination": 0.5},
}


@dataclass
class SyntheticConfig:
    """Parameters of a synthetic patient (all lengths in mm, times in s)."""

    voxel_mm: float = 4.0
    t_r: float = 2.0
    n_rest: int = 150
    n_task: int = 200
    design: str = "blocks"  # or "separate": one run per state
    block_s: float = 50.0
    noise_percent: float = 1.6
    motion_scale: float = 1.0
    n_spikes: int = 4
    spot_sigma_mm: float = 5.0
    flip_x: bool = False  # store x reversed (LAS) to catch index-vs-world mistakes
    spots_mni: dict = field(default_factory=lambda: dict(DEFAULT_SPOTS_MNI))
    # Scales every rumination-vs-distraction coupling difference of SPOTS and SUBSYSTEM_CORE_COUPLING (0: none).
    # 2 by default: at 1 (the strength before issue 13) a correct family-wise test at alpha 0.05 finds the
    # planted target in only about 3 of 4 patients of this size (8 blocks); see README "How sure is the target?".
    rumination_effect: float = 2.0
    seed: int = 0
    participant: str = "01"


def _grid(voxel_mm, flip_x):
    lo, hi = np.array([-90.0, -126.0, -72.0]), np.array([90.0, 90.0, 108.0])
    shape = tuple(int(v) for v in np.floor((hi - lo) / voxel_mm) + 1)
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = lo
    if flip_x:
        affine[0, 0] = -voxel_mm
        affine[0, 3] = lo[0] + voxel_mm * (shape[0] - 1)
    return shape, affine


def _task_coupling(by_state, state, effect):
    """A coupling in ``state`` with its rumination-vs-distraction difference scaled by ``effect`` (rest as is)."""
    if state == "rest":
        return by_state["rest"]
    mean = 0.5 * (by_state["rumination"] + by_state["distraction"])
    return mean + effect * (by_state[state] - mean)


def _resample(img, shape, affine, interpolation):
    from nilearn import image

    out = image.resample_img(img, target_affine=affine, target_shape=shape, interpolation=interpolation,
                             force_resample=True, copy_header=True)
    return np.asarray(out.get_fdata(), dtype=np.float64)


def _band_limited(rng, n, t_r, size=1, low=0.01, high=0.1):
    white = rng.standard_normal((n + 100, size))
    sos = sp_signal.butter(3, [low, min(high, 0.45 / t_r)], btype="band", fs=1.0 / t_r, output="sos")
    out = sp_signal.sosfiltfilt(sos, white, axis=0)[50:50 + n]
    return out / out.std(axis=0)


def _gaussian_weight(xyz, centre, sigma_mm):
    d2 = np.sum((xyz - np.asarray(centre, dtype=float)) ** 2, axis=-1)
    return np.exp(-0.5 * d2 / sigma_mm**2)


def _hrf_block(onsets, durations, n, t_r):
    from nilearn.glm.first_level import compute_regressor

    reg, _ = compute_regressor(np.vstack([onsets, durations, np.ones(len(onsets))]), "spm", np.arange(n) * t_r)
    return reg[:, 0]


def _snap_spots(cfg, shape, affine, brain):
    """Move each requested spot to the nearest grey-matter voxel of its search region."""
    gm = grey_matter_mask(shape, affine) & brain
    regions = {"dmpfc": region_mask("dmpfc", shape, affine, gm), "dlpfc": region_mask("left-dlpfc", shape, affine, gm)}
    ijk = np.argwhere(np.ones(shape, dtype=bool))
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    snapped = {}
    for name, point in cfg.spots_mni.items():
        region = regions[name.split("_")[0]].ravel()
        candidates = np.flatnonzero(region)
        best = candidates[np.argmin(np.sum((xyz[candidates] - np.asarray(point)) ** 2, axis=1))]
        snapped[name] = {"voxel_ijk": [int(v) for v in ijk[best]], "mni_mm": [float(v) for v in xyz[best]],
                         "requested_mni_mm": [float(v) for v in point]}
    return snapped


def _state_timeline(cfg, n, kind):
    """State name per frame (after the haemodynamic delay) and the events table."""
    times = np.arange(n) * cfg.t_r
    if kind in ("rest", "rumination", "distraction"):
        return np.array([kind] * n), None
    order = ["rumination", "distraction"]
    events, onset, k = [], 0.0, 0
    while onset + cfg.block_s <= n * cfg.t_r + 1e-9:
        events.append((onset, cfg.block_s, order[k % 2]))
        onset += cfg.block_s
        k += 1
    states = np.array(["distraction"] * n, dtype=object)
    for onset, duration, name in events:
        states[(times >= onset + 4.0) & (times < onset + duration + 4.0)] = name
    return states.astype(str), events


def _simulate_run(rng, cfg, kind, n, xyz, brain, tissue, weights, baseline):
    """One run's 4-D data (float64, % signal around baseline) and its confounds table."""
    states, events = _state_timeline(cfg, n, kind)
    latents = dict(zip(("core", "dmpfc", "mtl", "sgacc"), _band_limited(rng, n, cfg.t_r, 4).T))
    v = int(brain.sum())
    bold = np.zeros((n, v))
    for state in np.unique(states):
        frames = states == state
        w = weights(state)
        for latent, wmap in w.items():
            bold[frames] += np.outer(latents[latent][frames], wmap)
    noise = rng.standard_normal((n, v))
    noise[1:] += 0.3 * noise[:-1]  # mild temporal autocorrelation
    bold += cfg.noise_percent * noise
    physio = _band_limited(rng, n, cfg.t_r, 1, low=0.01, high=0.2)[:, 0]
    bold += np.outer(physio, 1.5 * tissue["wm_csf"] + 0.4 * tissue["gm"])
    bold += np.outer(np.linspace(-1, 1, n), rng.normal(0, 0.8, v))  # drift
    if events is not None:
        rum = [e for e in events if e[2] == "rumination"]
        activation = _hrf_block([e[0] for e in rum], [e[1] for e in rum], n, cfg.t_r)
        bold += np.outer(activation, 1.2 * weights("rest")["core"])
    # motion: slow drift plus spikes, leaking through a smooth spatial pattern
    steps = rng.normal(0, 0.015 * cfg.motion_scale, (n, 6)) * np.array([1, 1, 1, 0.02, 0.02, 0.02])
    params = np.cumsum(steps, axis=0)
    spikes = rng.choice(np.arange(10, n - 5), size=min(cfg.n_spikes, max(n - 15, 0)), replace=False)
    for t in spikes:
        params[t] += rng.normal(0, 0.5 * cfg.motion_scale, 6) * np.array([1, 1, 1, 0.01, 0.01, 0.01])
    f24 = friston24(params)
    f24 = (f24 - f24.mean(0)) / np.where(f24.std(0) > 0, f24.std(0), 1)
    centred = (xyz - xyz.mean(0)) / 60.0
    pattern = np.column_stack([centred, centred**2, centred[:, :1] * centred[:, 1:2]])  # (v, 6)
    mixing = rng.normal(0, 0.35 * cfg.motion_scale, (24, pattern.shape[1]))
    bold += f24 @ mixing @ pattern.T
    bold[spikes] -= 3.0 * cfg.motion_scale  # intensity drop at spike frames (only scrubbing removes it)
    data = baseline[None, :] * (1.0 + bold / 100.0)
    confounds = {
        "global_signal": data.mean(axis=1),
        "csf": data[:, tissue["csf_only"]].mean(axis=1),
        "white_matter": data[:, tissue["wm_only"]].mean(axis=1),
    }
    names = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
    for j, name in enumerate(names):
        confounds[name] = params[:, j]
        deriv = np.concatenate([[np.nan], np.diff(params[:, j])])
        confounds[f"{name}_derivative1"] = deriv
        confounds[f"{name}_power2"] = params[:, j] ** 2
        confounds[f"{name}_derivative1_power2"] = deriv**2
    fd = fd_power(params)
    fd[0] = np.nan
    confounds["framewise_displacement"] = fd
    return data, confounds, events, spikes


def _tsv(columns):
    names = list(columns)
    lines = ["\t".join(names)]
    n = len(next(iter(columns.values())))
    for t in range(n):
        lines.append("\t".join("n/a" if np.isnan(columns[c][t]) else f"{columns[c][t]:.6g}" for c in names))
    return "\n".join(lines) + "\n"


def make_patient(out_dir, cfg=None, progress=None):
    """Write a synthetic patient (raw BIDS events + fMRIPrep derivatives) into ``out_dir``.

    Parameters
    ----------
    out_dir : path
    cfg : SyntheticConfig, optional
    progress : callable, optional
        Called with a short message before each slow step (templates, each run).

    Returns
    -------
    dict
        The ground truth (also written to ``out_dir/ground_truth.json``).
    """
    from nilearn import datasets

    cfg = cfg or SyntheticConfig()
    say = progress or (lambda message: None)
    say("loading the MNI templates")
    rng = np.random.default_rng(cfg.seed)
    out = Path(out_dir)
    shape, affine = _grid(cfg.voxel_mm, cfg.flip_x)
    template = datasets.load_mni152_template(resolution=2)
    t1 = _resample(template, shape, affine, "continuous")
    brain = _resample(datasets.load_mni152_brain_mask(resolution=2), shape, affine, "nearest") > 0.5
    wm = _resample(datasets.load_mni152_wm_template(resolution=2), shape, affine, "continuous")[brain]
    gm_prob = _resample(datasets.load_mni152_gm_template(resolution=2), shape, affine, "continuous")[brain]
    ijk = np.argwhere(brain)
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    tissue = {
        "gm": gm_prob,
        "wm_only": wm > 0.9,
        "csf_only": (wm < 0.05) & (gm_prob < 0.05),
    }
    tissue["wm_csf"] = (tissue["wm_only"] | tissue["csf_only"]).astype(float)
    baseline = 100.0 + 150.0 * t1[brain] / max(t1[brain].max(), 1e-6)

    spots = _snap_spots(cfg, shape, affine, brain)
    rois = roi_set("dixon24")
    node_w = {s: np.zeros(len(xyz)) for s in ("core", "dmpfc", "mtl")}
    for roi in rois:
        node_w[roi.subsystem] += _gaussian_weight(xyz, roi.centre_mni_mm, 4.0)
    sgacc = load_atlas()["spheres"]["sgacc"]
    sgacc_w = _gaussian_weight(xyz, sgacc["mni_mm"], 5.0)
    spot_w = {name: _gaussian_weight(xyz, s["mni_mm"], cfg.spot_sigma_mm) for name, s in spots.items()}

    def weights(state):
        state_key = state if state in ("rumination", "distraction") else "rest"
        w = {"core": node_w["core"].copy(), "dmpfc": node_w["dmpfc"].copy(), "mtl": node_w["mtl"].copy(),
             "sgacc": sgacc_w.copy()}
        for sub, coupling in SUBSYSTEM_CORE_COUPLING.items():
            w["core"] += _task_coupling(coupling, state_key, cfg.rumination_effect) * node_w[sub]
        for name, (latent, by_state) in SPOTS.items():
            w[latent] = w[latent] + _task_coupling(by_state, state_key, cfg.rumination_effect) * spot_w[name]
        return w

    sub = f"sub-{cfg.participant}"
    func = out / "derivatives" / "fmriprep" / sub / "func"
    anat = out / "derivatives" / "fmriprep" / sub / "anat"
    write_json_atomic(out / "dataset_description.json",
                      {"Name": "tmstarget synthetic patient", "BIDSVersion": "1.9.0", "DatasetType": "raw"})
    write_json_atomic(out / "derivatives" / "fmriprep" / "dataset_description.json", {
        "Name": "tmstarget synthetic patient (fMRIPrep layout)", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [
            {"Name": "tmstarget.testing.patient", "Description": "synthetic data in fMRIPrep's file names"}
        ],
    })
    t1_img = nib.Nifti1Image(_head_from_template(template), template.affine)
    _set_space(t1_img)
    write_nifti_atomic(anat / f"{sub}_space-{SPACE}_desc-preproc_T1w.nii.gz", t1_img)
    runs = [("rest", cfg.n_rest)]
    runs += [("rumination", cfg.n_task), ("distraction", cfg.n_task)] if cfg.design == "separate" else \
        [("rumination-blocks", cfg.n_task)]
    truth_runs = {}
    for kind, n in runs:
        if n == 0:
            continue
        task = "rumination" if kind == "rumination-blocks" else kind
        say(f"simulating and writing the {kind} run ({n} volumes)")
        data, confounds, events, spikes = _simulate_run(rng, cfg, kind, n, xyz, brain, tissue, weights, baseline)
        vol = np.zeros(shape + (n,), dtype=np.int16)
        vol[brain] = np.clip(np.round(data.T), -32768, 32767).astype(np.int16)
        img = nib.Nifti1Image(vol, affine)
        img.header.set_xyzt_units("mm", "sec")
        img.header["pixdim"][4] = cfg.t_r
        _set_space(img)
        stem = f"{sub}_task-{task}"
        write_nifti_atomic(func / f"{stem}_space-{SPACE}_desc-preproc_bold.nii.gz", img)
        mask_img = nib.Nifti1Image(brain.astype(np.uint8), affine)
        _set_space(mask_img)
        write_nifti_atomic(func / f"{stem}_space-{SPACE}_desc-brain_mask.nii.gz", mask_img)
        write_json_atomic(func / f"{stem}_space-{SPACE}_desc-preproc_bold.json",
                          {"RepetitionTime": cfg.t_r, "TaskName": task, "SkullStripped": False})
        write_text_atomic(func / f"{stem}_desc-confounds_timeseries.tsv", _tsv(confounds))
        if events is not None:
            lines = ["onset\tduration\ttrial_type"] + [f"{o:g}\t{d:g}\t{t}" for o, d, t in events]
            write_text_atomic(out / sub / "func" / f"{stem}_events.tsv", "\n".join(lines) + "\n")
        truth_runs[task] = {"volumes": n, "spike_frames": sorted(int(s) for s in spikes)}
    truth = {
        "description": "planted answers of this synthetic patient (MNI152 mm = world coordinates of the images)",
        "config": {k: v for k, v in cfg.__dict__.items() if k != "spots_mni"},
        "spots": spots,
        "expected_targets": {
            "rumination-dmpfc": "dmpfc_target", "rest-dmpfc": "dmpfc_constant",
            "sgacc-dlpfc": "dlpfc_target", "dmn-dlpfc": "dlpfc_core",
        },
        "subsystem_coupling_to_core": SUBSYSTEM_CORE_COUPLING,
        "runs": truth_runs,
    }
    write_json_atomic(out / "ground_truth.json", json.loads(json.dumps(truth)))
    return truth


def _head_from_template(template):
    """The template on its own 2-mm grid with a skull and scalp added (it is skull-stripped).

    Skull (diploe, mid-grey) 0-8 mm and bright scalp 8-13 mm outside the template's tissue, so
    coil placement has a real head surface; uint8.
    """
    from scipy import ndimage

    data = template.get_fdata()
    voxel_mm = np.sqrt((template.affine[:3, :3] ** 2).sum(axis=0))
    tissue = ndimage.binary_fill_holes(data > 0.05)
    outside_mm = ndimage.distance_transform_edt(~tissue, sampling=voxel_mm)
    head = data.copy()
    head[(outside_mm > 0) & (outside_mm <= 8)] = 0.25  # meninges and skull with diploe
    head[(outside_mm > 8) & (outside_mm <= 13)] = 0.7
    return np.round(np.clip(head, 0, 1) * 255).astype(np.uint8)


def _set_space(img):
    img.set_qform(img.affine, code=4)
    img.set_sform(img.affine, code=4)
