"""Methods fixes of issue 13, each against a reference written here from its definition.

Seed/search overlap, scrubbing neighbours, published motion QC and state balance, the seed's signal
dropout, slice-timing frame times, template labels, GSR for sgacc-dlpfc and the protocol sources.
The cluster rule and cluster scores are in ``test_rois_targets.py`` and ``test_references.py``.
"""

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn.glm.first_level import compute_regressor

import nilearn_reference as ref
from tmstarget.analysis.clean import censored_frames, task_regressors
from tmstarget.analysis.connectivity import state_frames
from tmstarget.analysis.engine import analysis_layout, balance_warnings, motion_warnings, plan, plan_fixed
from tmstarget.analysis.rois import MniGrid
from tmstarget.errors import InputError
from tmstarget.ingest.collect import ExplicitRun, Selection
from tmstarget.ingest.runs import slice_timing_offset
from tmstarget.protocol import load_protocol

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
FUNC = SAMPLE / "derivatives" / "fmriprep" / "sub-01" / "func"
SPACE = "space-MNI152NLin2009cAsym"
EVENTS = SAMPLE / "sub-01" / "func" / "sub-01_task-rumination_events.tsv"
PROTOCOLS = Path(__file__).resolve().parents[1] / "protocols"


def _files(task, bold=None, sidecar=None):
    return ExplicitRun(
        bold=bold or FUNC / f"sub-01_task-{task}_{SPACE}_desc-preproc_bold.nii.gz",
        confounds=FUNC / f"sub-01_task-{task}_desc-confounds_timeseries.tsv",
        sidecar=sidecar,
        events=EVENTS if task == "rumination" else None,
        mask=FUNC / f"sub-01_task-{task}_{SPACE}_desc-brain_mask.nii.gz",
        label=task,
    )


def _fd_jenkinson(motion, centre, radius=80.0):
    """FD_Jenkinson written from science.md section 2 (T = MT R1 R2 R3; M = T(t-1) T(t)^-1 - I)."""
    def matrix(p):
        c, s = np.cos(p[3:]), np.sin(p[3:])
        r1 = np.array([[1, 0, 0], [0, c[0], s[0]], [0, -s[0], c[0]]])
        r2 = np.array([[c[1], 0, s[1]], [0, 1, 0], [-s[1], 0, c[1]]])
        r3 = np.array([[c[2], s[2], 0], [-s[2], c[2], 0], [0, 0, 1]])
        t = np.eye(4)
        t[:3, :3], t[:3, 3] = r1 @ r2 @ r3, p[:3]
        return t

    out = [0.0]
    for prev, cur in zip(motion[:-1], motion[1:]):
        m = matrix(prev) @ np.linalg.inv(matrix(cur)) - np.eye(4)
        a, b = m[:3, :3], m[:3, 3]
        out.append(float(np.sqrt(radius**2 / 5 * np.trace(a.T @ a) + (b + a @ centre) @ (b + a @ centre))))
    return np.array(out)


# ----------------------------------------------------------------------------- 1. seed / search overlap

@pytest.mark.parametrize("protocol,overrides,removes", [
    ("dmn-dlpfc", [], True),  # the SFS-L core node lies inside the left-DLPFC spheres
    ("rumination-dmpfc", [], True),  # SFS-L/R reach the dMPFC spheres
    ("sgacc-dlpfc", [], False),
    ("dmn-dlpfc", ["clean.smoothing_fwhm_mm=0"], True),  # no smoothing: the seed voxels only
])
def test_search_region_leaves_out_the_seed_and_one_fwhm(protocol, overrides, removes):
    p = load_protocol(protocol, overrides)
    mask_img = nib.load(FUNC / f"sub-01_task-rest_{SPACE}_desc-brain_mask.nii.gz")
    brain = np.asarray(mask_img.dataobj) > 0
    layout = analysis_layout(p, brain, mask_img.affine, MniGrid(brain.shape, mask_img.affine))
    gm = ref.grey_matter(mask_img)
    centres = ref.DMPFC_CENTRES if p.search.region == "dmpfc" else ref.DLPFC_CENTRES
    region = ref.spheres(mask_img, centres, 20.0) & gm & brain
    seed = (ref.spheres(mask_img, [ref.SGACC], 10.0) if p.seed.sphere else
            ref.spheres(mask_img, ref.CORE_NODES, 6.0))
    near = ref.near_seed(region, seed, mask_img.affine, p.clean.smoothing_fwhm_mm)
    assert np.array_equal(layout.region, region & ~near)
    assert layout.search_voxels_removed == int(near.sum())
    assert (layout.search_voxels_removed > 0) == removes
    if not p.clean.smoothing_fwhm_mm:
        assert np.array_equal(near, region & seed)


# ----------------------------------------------------------------------------- 4. scrubbing neighbours

def test_censored_frames_take_one_before_and_two_after():
    fd = np.zeros(20)
    fd[[0, 5, 6, 18]] = 0.9
    fd[10] = 0.5  # at the threshold: not above it
    assert np.flatnonzero(censored_frames(fd, 0.5, 1, 2)).tolist() == [0, 1, 2, 4, 5, 6, 7, 8, 17, 18, 19]
    assert np.flatnonzero(censored_frames(fd, 0.5)).tolist() == [0, 5, 6, 18]


def test_scrub_neighbour_defaults_per_protocol():
    for name in ("rumination-dmpfc", "sgacc-dlpfc", "dmn-dlpfc", "rest-dmpfc"):
        clean = load_protocol(name).clean
        assert (clean.frames_before, clean.frames_after) == ((1, 2) if name == "rumination-dmpfc" else (0, 0))


# ----------------------------------------------------------------------------- 5. motion QC, state balance

@pytest.fixture(scope="module")
def rumination_plan():
    return plan(Selection([(_files("rumination"), None)], None, None, []), load_protocol("rumination-dmpfc"))


def test_motion_qc_as_published(rumination_plan):
    q = rumination_plan.qc["runs"][0]
    conf = ref.read_confounds(FUNC / "sub-01_task-rumination_desc-confounds_timeseries.tsv")
    motion = conf[ref.MOTION_COLUMNS].to_numpy(dtype=float)
    img = nib.load(_files("rumination").bold)
    centre = img.affine[:3, :3] @ ((np.array(img.shape[:3]) - 1) / 2) + img.affine[:3, 3]
    fdj = _fd_jenkinson(motion, centre)
    assert q["mean_fd_jenkinson_mm"] == pytest.approx(fdj[5:].mean(), rel=1e-9)
    assert q["max_translation_mm"] == pytest.approx(np.abs(motion[5:, :3]).max())
    assert q["max_rotation_deg"] == pytest.approx(np.degrees(np.abs(motion[5:, 3:]).max()))
    # the two states: frames and mean FD_Jenkinson over the frames each state analyses
    kept = ref.kept_frames(conf, before=1, after=2)
    expected = {}
    for state in ("rumination", "distraction"):
        sel = ref.block_frames(EVENTS, kept, 2.0, state)
        expected[state] = {"frames": int(sel.sum()), "mean_fd_jenkinson_mm": pytest.approx(fdj[kept][sel].mean())}
    assert rumination_plan.qc["state_balance"] == expected
    # the sample moves little: no motion warning at the published limits
    assert not [w for w in rumination_plan.qc["warnings"] if "FD_Jenkinson" in w or "displaced" in w]


def test_motion_and_balance_warnings_follow_the_protocol_thresholds(rumination_plan):
    q = rumination_plan.qc["runs"][0]
    strict = load_protocol("rumination-dmpfc", ["qc.mean_fd_jenkinson_warning_mm=0.01",
                                                "qc.max_translation_warning_mm=0.1", "qc.state_fd_warning_mm=0",
                                                "qc.state_frames_warning_fraction=0.1"]).qc
    warnings = motion_warnings(q, strict)
    assert warnings[0].startswith(f"rumination: mean FD_Jenkinson {q['mean_fd_jenkinson_mm']:.3f} mm is above")
    assert warnings[1].startswith(f"rumination: head displaced up to {q['max_translation_mm']:.2f} mm")
    balance = rumination_plan.qc["state_balance"]
    assert balance_warnings(balance, strict) == [
        f"unbalanced states: rumination has {balance['rumination']['frames']} frames, distraction "
        f"{balance['distraction']['frames']} (more than 10% apart)",
        f"motion differs between states: mean FD_Jenkinson rumination "
        f"{balance['rumination']['mean_fd_jenkinson_mm']:.3f} mm, distraction "
        f"{balance['distraction']['mean_fd_jenkinson_mm']:.3f} mm (more than 0 mm apart): motion may drive the "
        "contrast",
    ]
    assert balance_warnings(balance, load_protocol("rumination-dmpfc").qc) == []


# ----------------------------------------------------------------------------- 2. sgACC seed in dropout, GSR

def test_sgacc_dlpfc_regresses_the_global_signal_by_default():
    assert load_protocol("sgacc-dlpfc").clean.global_signal is True
    assert load_protocol("sgacc-dlpfc", ["clean.global_signal=false"]).clean.global_signal is False
    assert "global signal" in (PROTOCOLS / "sgacc-dlpfc.toml").read_text().lower()


@pytest.mark.slow
def test_seed_in_signal_dropout_is_reported(tmp_path):
    """The same rest run with the sgACC sphere's mean signal cut to a fifth (fluctuations kept): its tSNR falls
    to a fifth, below half the brain's, and the plan warns; the untouched run does not."""
    files = _files("rest")
    img = nib.load(files.bold)
    data = np.asarray(img.dataobj, dtype=np.float32)
    sphere = ref.spheres(img, [ref.SGACC], 10.0)
    mean = data[sphere].mean(axis=1, keepdims=True)
    data[sphere] = data[sphere] - mean + 0.2 * mean
    bold = tmp_path / "dropout_bold.nii.gz"
    nib.save(nib.Nifti1Image(data, img.affine, img.header), bold)
    protocol = load_protocol("sgacc-dlpfc")
    normal = plan(Selection([(files, "rest")], None, None, []), protocol)
    dropout = plan(Selection([(_files("rest", bold=bold), "rest")], None, None, []), protocol)
    q0, q1 = normal.qc["runs"][0], dropout.qc["runs"][0]
    assert q1["tsnr_seed_median"] < 0.5 * q1["tsnr_brain_median"] < q0["tsnr_seed_median"]
    assert not [w for w in normal.qc["warnings"] if "dropout" in w]
    assert [w for w in dropout.qc["warnings"] if w.startswith("rest: the seed sits in signal dropout")]


# ----------------------------------------------------------------------------- 7. slice-timing frame times

def test_slice_timing_offset_from_the_sidecar(tmp_path):
    def sidecar(meta):
        path = tmp_path / f"s{len(list(tmp_path.iterdir()))}.json"
        path.write_text(json.dumps({"RepetitionTime": 2.0, **meta}))
        return path

    assert slice_timing_offset(sidecar({}), 2.0) == 0.0
    assert slice_timing_offset(sidecar({"SliceTimingCorrected": False, "StartTime": 0.7}), 2.0) == 0.0
    assert slice_timing_offset(sidecar({"SliceTimingCorrected": True, "StartTime": 0.95}), 2.0) == 0.95
    assert slice_timing_offset(sidecar({"SliceTimingCorrected": True}), 2.0) == 1.0  # mid-TR
    with pytest.raises(InputError, match="StartTime"):
        slice_timing_offset(sidecar({"SliceTimingCorrected": True, "StartTime": 3.0}), 2.0)


def test_block_frames_and_task_regressors_use_the_mid_tr_reference():
    events = pd.DataFrame({"onset": [11.0], "duration": [20.0], "trial_type": ["rumination"]})
    frames = np.arange(25)
    # block window [11 + 4 + 4, 11 + 20 + 4) = [19, 35) s
    plain = state_frames(events, frames, 2.0, "rumination", 4.0, 4.0)
    shifted = state_frames(events, frames, 2.0, "rumination", 4.0, 4.0, frame_offset_s=1.0)
    assert np.flatnonzero(plain).tolist() == list(range(10, 18))  # t = 20 .. 34
    assert np.flatnonzero(shifted).tolist() == list(range(9, 17))  # t = 19 .. 33
    short = pd.DataFrame({"onset": [11.0], "duration": [4.0], "trial_type": ["a"]})
    box, _ = task_regressors(short, 10, 2.0, "boxcar", frame_offset_s=1.0)
    assert np.flatnonzero(box[:, 0]).tolist() == [5, 6]  # t = 11, 13 (without the offset: 12, 14 -> 6, 7)
    hrf, _ = task_regressors(events, 25, 2.0, "hrf", frame_offset_s=1.0)
    expected, _ = compute_regressor(np.array([[11.0], [20.0], [1.0]]), "spm", np.arange(25) * 2.0 + 1.0,
                                    oversampling=16)
    assert np.allclose(hrf[:, 0], expected[:, 0])


@pytest.mark.slow
def test_plan_reads_slice_timing_from_the_sidecar(tmp_path):
    """Blocks starting 1 s after a volume: with the data at mid-TR (StartTime 1 s) the block edges take other
    frames than at the volumes' starts; the plan's counts are the reference's at ``k * TR + 1 s``."""
    events = pd.read_csv(EVENTS, sep="\t")
    events["onset"] += 1.0
    events.loc[events.index[-1], "duration"] -= 1.0  # still inside the 400-s run
    events_path = tmp_path / "events.tsv"
    events.to_csv(events_path, sep="\t", index=False)
    sidecar = tmp_path / "bold.json"
    sidecar.write_text(json.dumps({"RepetitionTime": 2.0, "SliceTimingCorrected": True, "StartTime": 1.0}))
    files = dataclasses.replace(_files("rumination", sidecar=sidecar), events=events_path)
    corrected = plan(Selection([(files, None)], None, None, []), load_protocol("rumination-dmpfc"))
    conf = ref.read_confounds(FUNC / "sub-01_task-rumination_desc-confounds_timeseries.tsv")
    kept = ref.kept_frames(conf, before=1, after=2)
    # frame k now stands for k * TR + 1 s = (k + 0.5) * TR
    counts = {s: int(ref.block_frames(events_path, kept + 0.5, 2.0, s).sum()) for s in ("rumination", "distraction")}
    at_start = {s: int(ref.block_frames(events_path, kept, 2.0, s).sum()) for s in ("rumination", "distraction")}
    assert corrected.qc["frames_per_state"] == counts != at_start
    assert corrected.qc["runs"][0]["frame_time_offset_s"] == 1.0


# ----------------------------------------------------------------------------- 6. template labels, 8. sources

def test_template_spaces_are_named_truthfully():
    import nilearn

    from tmstarget.anatomy import registration
    from tmstarget.workflows import fmriprep_t1w

    # nilearn downloads the symmetric ICBM152 2009a release (its own description file names the archive)
    description = Path(nilearn.__file__).parent / "datasets" / "description" / "icbm152_2009.rst"
    assert "mni_icbm152_nlin_sym_09a" in description.read_text()
    assert registration.MNI_SPACE == "MNI152NLin2009aSym"
    assert fmriprep_t1w.MNI_SPACE == "MNI152NLin2009cAsym"
    # a fixed target without a T1 lands on nilearn's template grid, so that is its space
    assert plan_fixed(load_protocol("5cm-rule")).space == "MNI152NLin2009aSym"
    atlas = (Path(registration.__file__).parents[1] / "data" / "atlas.toml").read_text()
    assert "coordinate_space" in atlas


def test_every_connectivity_protocol_names_its_source():
    for path in PROTOCOLS.glob("*.toml"):
        text = path.read_text()
        if 'kind = "fixed"' in text:
            continue
        assert "science.md" in text or "Chen 2020" in text or "Fox 2012" in text, path.name
    assert "Salomons" in (PROTOCOLS / "rest-dmpfc.toml").read_text()


def test_targets_tsv_names_the_template_of_the_mni_columns():
    from tmstarget.outputs.plan_folder import targets_tsv

    row = {"rank": 1, "name": "p-1", "ras_mm": [1.0, 2.0, 3.0], "mni_mm": [4.0, 5.0, 6.0], "voxel_ijk": [1, 2, 3],
           "score": -0.5, "method": "peak"}
    native = targets_tsv({"space": "T1w", "mni_space": "MNI152NLin2009aSym", "candidates": [row]})
    assert native.splitlines()[0].split("\t")[2:8] == ["x_t1w_mm", "y_t1w_mm", "z_t1w_mm", "x_mni152nlin2009asym_mm",
                                                       "y_mni152nlin2009asym_mm", "z_mni152nlin2009asym_mm"]
    fmriprep = targets_tsv({"space": "T1w", "mni_space": "MNI152NLin2009cAsym", "candidates": [row]})
    assert "x_mni152nlin2009casym_mm" in fmriprep.splitlines()[0]
