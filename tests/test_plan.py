"""End to end: `tmstarget plan` on the sample patient and on unseen synthetic variants."""

import hashlib
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nilearn import image

import nilearn_reference as ref
from tmstarget.cli.main import main
from tmstarget.testing.patient import SyntheticConfig, make_patient

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
FUNC = SAMPLE / "derivatives" / "fmriprep" / "sub-01" / "func"
SPACE = "space-MNI152NLin2009cAsym"
TASK_BOLD = FUNC / f"sub-01_task-rumination_{SPACE}_desc-preproc_bold.nii.gz"
TASK_CONF = FUNC / "sub-01_task-rumination_desc-confounds_timeseries.tsv"
TASK_MASK = FUNC / f"sub-01_task-rumination_{SPACE}_desc-brain_mask.nii.gz"
REST_BOLD = FUNC / f"sub-01_task-rest_{SPACE}_desc-preproc_bold.nii.gz"
REST_CONF = FUNC / "sub-01_task-rest_desc-confounds_timeseries.tsv"
REST_MASK = FUNC / f"sub-01_task-rest_{SPACE}_desc-brain_mask.nii.gz"
EVENTS = SAMPLE / "sub-01" / "func" / "sub-01_task-rumination_events.tsv"


def run_plan(out, *args, dataset=SAMPLE, protocol="rumination-dmpfc"):
    argv = ["plan"] + ([str(dataset), "--participant", "01"] if dataset else [])
    argv += ["--protocol", protocol, "--output", str(out), "--quiet", *map(str, args)]
    code = main(argv)
    doc = json.loads((Path(out) / "target.json").read_text()) if code == 0 else None
    return code, doc


def truth(dataset=SAMPLE):
    return json.loads((Path(dataset) / "ground_truth.json").read_text())


def voxel_distance(doc, spot):
    """Chebyshev distance (voxels) between the picked target and a planted spot."""
    return int(np.abs(np.array(doc["target"]["voxel_ijk"]) - spot["voxel_ijk"]).max())


@pytest.fixture(scope="module")
def sample_plans(tmp_path_factory):
    base = tmp_path_factory.mktemp("plans")
    plans = {}
    for protocol in ("rumination-dmpfc", "sgacc-dlpfc", "rest-dmpfc", "dmn-dlpfc"):
        code, doc = run_plan(base / protocol, protocol=protocol)
        assert code == 0
        plans[protocol] = (base / protocol, doc)
    return plans


@pytest.mark.parametrize("protocol", ["rumination-dmpfc", "sgacc-dlpfc", "rest-dmpfc", "dmn-dlpfc"])
def test_planted_targets_recovered_within_one_voxel(sample_plans, protocol):
    _, doc = sample_plans[protocol]
    gt = truth()
    assert voxel_distance(doc, gt["spots"][gt["expected_targets"][protocol]]) <= 1
    assert doc["space"] == "MNI152NLin2009cAsym"
    assert doc["target"]["mni_mm"] == doc["target"]["ras_mm"]
    img = nib.load(TASK_BOLD)
    ijk = doc["target"]["voxel_ijk"]
    assert np.allclose(img.affine[:3, :3] @ ijk + img.affine[:3, 3], doc["target"]["ras_mm"])


def test_rumination_subsystem_pattern_and_qc(sample_plans):
    _, doc = sample_plans["rumination-dmpfc"]
    delta = doc["qc"]["subsystem_fc"]["rumination-minus-distraction"]
    assert delta["core-dmpfc"] < 0 < delta["core-mtl"]
    run = doc["qc"]["runs"][0]
    assert 5 < run["tsnr_search_region_median"] < 500
    assert len(doc["candidates"]) == 5 and doc["candidates"][0]["rank"] == 1


def test_qc_thresholds_change_the_warnings_not_the_target(sample_plans, tmp_path):
    """[qc] overrides make the unstable-target, scrubbing and motion warnings appear; maps and target stay."""
    folder, doc = sample_plans["rumination-dmpfc"]
    assert doc["provenance"]["protocol"]["parameters"]["qc"]["split_half_warning_mm"] == 10
    split_half = doc["qc"]["stability"]["split_half_distance_mm"]
    inference = doc["qc"]["inference"]
    verdict = [] if inference["significant"] else [inference["verdict"]]  # the verdict line comes first
    unstable = [f"unstable target: the two halves of the data give targets {split_half:.1f} mm apart"]
    # the planted spot lies 4 mm (one voxel) inside the dMPFC region: the edge warning at the defaults
    edge = ["the target lies on the edge of the search region: the optimum may be outside it"]
    def engine_warnings(doc):  # without the coil-depth notes of the T1 ("the target: ...")
        return [w for w in doc["qc"]["warnings"] if not w.startswith("the target: ")]

    assert engine_warnings(doc) == verdict + (unstable if split_half > 10 else []) + edge
    code, low = run_plan(tmp_path / "qc", "--set", f"qc.split_half_warning_mm={split_half - 0.5}",
                         "--set", "qc.scrubbed_warning_fraction=0.01", "--set", "qc.mean_fd_warning_mm=0.1",
                         "--set", "qc.edge_warning_voxels=0.5")
    assert code == 0
    run = low["qc"]["runs"][0]
    assert engine_warnings(low) == verdict + unstable + [
        f"task-rumination: {run['frames_scrubbed']} frames scrubbed (more than 1%)",
        f"task-rumination: high motion (mean FD {run['mean_fd_power_mm']:.2f} mm)",
    ]
    assert low["target"] == doc["target"] and low["candidates"] == doc["candidates"]
    for name in (doc["images"]["maps"]["delta"], "targets.tsv"):
        assert (tmp_path / "qc" / name).read_bytes() == (folder / name).read_bytes()


def test_task_frame_counts_are_exact(sample_plans):
    """Scrubbed and per-state frame counts equal those derived here from the confounds and the events.

    Each planted motion spike moves the head twice (in and out), so frames s and s+1 exceed 0.5 mm, and
    the protocol censors 1 frame before and 2 after each of them: s-1 .. s+3; the blocks (50 s) shifted by
    the 4-s haemodynamic delay, minus their first 4 s, hold 23 frames each (22 in the first block after the
    5 dummies, 21 in the last distraction block cut by the run's end).
    """
    _, doc = sample_plans["rumination-dmpfc"]
    conf = ref.read_confounds(TASK_CONF)
    spikes = truth()["runs"]["rumination"]["spike_frames"]
    high = np.flatnonzero(ref.fd_power(conf)[5:] > 0.5) + 5
    assert list(high) == sorted(s + d for s in spikes for d in (0, 1))
    params = doc["provenance"]["protocol"]["parameters"]["clean"]
    assert (params["frames_before"], params["frames_after"]) == (1, 2)
    run = doc["qc"]["runs"][0]
    assert (run["volumes"], run["dummy_volumes_dropped"], run["frames_scrubbed"], run["frames_kept"]) == \
        (200, 5, 20, 175)
    kept = ref.kept_frames(conf, before=1, after=2)
    assert sorted(set(range(5, 200)) - set(kept)) == sorted(s + d for s in spikes for d in range(-1, 4))
    counts = {s: int(ref.block_frames(EVENTS, kept, 2.0, s).sum()) for s in ("rumination", "distraction")}
    assert counts == {"rumination": 22 + 3 * 23 - 20, "distraction": 3 * 23 + 21}
    assert doc["qc"]["frames_per_state"] == counts
    # the counts can see the mistakes the map tolerance is there for
    for wrong in (ref.block_frames(EVENTS, kept, 2.0, "rumination", delay=0.0),
                  ref.block_frames(EVENTS, kept + 1, 2.0, "rumination"),
                  ref.block_frames(EVENTS, kept - 1, 2.0, "rumination")):
        assert int(wrong.sum()) != counts["rumination"]


@pytest.fixture(scope="module")
def nilearn_task():
    """The sample's task run cleaned by plain nilearn, with its core seed."""
    mask_img = image.load_img(TASK_MASK)
    mask = mask_img.get_fdata() > 0
    cleaned, frames = ref.clean_run(TASK_BOLD, TASK_CONF, mask_img, EVENTS, before=1, after=2)
    gm = ref.grey_matter(image.load_img(TASK_BOLD))
    return mask_img, mask, gm, cleaned, frames, ref.core_seed(cleaned, mask_img, mask, gm)


def test_maps_equal_plain_nilearn(sample_plans, nilearn_task):
    out, doc = sample_plans["rumination-dmpfc"]
    _, mask, _, cleaned, frames, seed = nilearn_task
    expected = {}
    for state in ("rumination", "distraction"):
        sel = ref.block_frames(EVENTS, frames, 2.0, state)
        expected[f"z_{state}"] = ref.zmap(cleaned[sel], seed[sel])
    expected["delta"] = expected["z_rumination"] - expected["z_distraction"]
    for name, values in expected.items():
        ours = nib.load(out / doc["images"]["maps"][name]).get_fdata()[mask]
        assert np.abs(ours - values).max() < 2e-5, name  # float32 cleaning: 1.0e-5 measured on the sample
    # the tolerance sees a frame selection without the haemodynamic delay, or one volume off, by far
    delta = nib.load(out / doc["images"]["maps"]["delta"]).get_fdata()[mask]
    for shifted, delay in ((frames, 0.0), (frames + 1, 4.0), (frames - 1, 4.0)):
        z = {s: ref.zmap(cleaned[sel], seed[sel]) for s in ("rumination", "distraction")
             for sel in [ref.block_frames(EVENTS, shifted, 2.0, s, delay=delay)]}
        assert np.abs(delta - (z["rumination"] - z["distraction"])).max() > 1e-2


def test_wrong_implementations_would_miss(tmp_path, nilearn_task):
    gt = truth()
    planted = gt["spots"]["dmpfc_target"]
    # a sign error lands on the decoy whose coupling rises
    code, doc = run_plan(tmp_path / "sign", "--set", "target.direction=positive")
    assert code == 0 and voxel_distance(doc, planted) > 2
    # the wrong seed (MTL instead of core) lands elsewhere
    code, doc = run_plan(tmp_path / "seed", "--set", "seed.subsystem=mtl")
    assert code == 0 and voxel_distance(doc, planted) > 2
    # no condition split (whole task run vs the core seed, plain nilearn) lands on the constant decoy
    mask_img, mask, gm, cleaned, _, seed = nilearn_task
    z = ref.zmap(cleaned, seed)
    region = (ref.spheres(mask_img, ref.DMPFC_CENTRES, 20) & gm)[mask]
    ijk = np.argwhere(mask)[np.flatnonzero(region)[np.argmin(z[region])]]
    assert np.abs(ijk - planted["voxel_ijk"]).max() > 2


def test_provenance_holds_real_hashes(sample_plans):
    out, doc = sample_plans["rumination-dmpfc"]
    prov = doc["provenance"]
    assert prov["generated_by"]["version"] == doc["tmstarget_version"]
    inputs = prov["inputs"]
    paths = {Path(v["path"]).name: v["sha256"] for v in inputs.values()}
    for path in (TASK_BOLD, TASK_CONF, EVENTS, TASK_MASK):
        assert paths[path.name] == hashlib.sha256(path.read_bytes()).hexdigest()
    protocol_file = Path(__file__).resolve().parents[1] / "protocols" / "rumination-dmpfc.toml"
    assert prov["protocol"]["sha256"] == hashlib.sha256(protocol_file.read_bytes()).hexdigest()
    assert prov["protocol"]["parameters"]["clean"]["fd_threshold_mm"] == 0.5
    assert (out / "protocol.toml").read_bytes() == protocol_file.read_bytes()
    rows = (out / "targets.tsv").read_text().splitlines()
    assert len(rows) == 1 + len(doc["candidates"]) and rows[1].split("\t")[1] == "rumination-dmpfc-1"
    sphere = nib.load(out / doc["images"]["masks"]["target_sphere"])
    centre = np.argwhere(sphere.get_fdata() > 0).mean(axis=0)
    assert np.allclose(centre, doc["target"]["voxel_ijk"], atol=0.01)


def test_fixed_baselines_need_no_fmri(tmp_path):
    for protocol, mni in (("5cm-rule", [-41, 16, 54]), ("beam-f3", [-37, 26, 49]), ("ba46", [-44, 40, 29])):
        code, doc = run_plan(tmp_path / protocol, protocol=protocol)
        assert code == 0
        assert doc["target"]["mni_mm"] == mni and doc["target"]["method"] == "fixed"
        assert doc["prescription"]["pulses_per_session"] == 3000


VARIANT_SPOTS = {
    "dmpfc_target": (10, 52, 36), "dmpfc_constant": (-12, 40, 50), "dmpfc_sign": (-6, 60, 24),
    "dmpfc_mtl": (12, 38, 48), "dlpfc_target": (-36, 26, 46), "dlpfc_core": (-44, 42, 26),
    "dlpfc_sign": (-30, 44, 40),
}


@pytest.fixture(scope="module")
def variant(tmp_path_factory):
    """Unseen patient: separate runs per state, LAS storage, other planted spots, more motion."""
    out = tmp_path_factory.mktemp("variant")
    cfg = SyntheticConfig(design="separate", flip_x=True, n_rest=150, n_task=140, seed=7, motion_scale=1.3,
                          spots_mni=dict(VARIANT_SPOTS), participant="p2")
    make_patient(out, cfg)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["rumination-dmpfc", "sgacc-dlpfc"])
def test_variant_separate_runs_flipped_storage(variant, tmp_path, protocol):
    argv = ["plan", str(variant), "--participant", "p2", "--protocol", protocol, "--output", str(tmp_path / "o"), "-q"]
    assert main(argv) == 0
    doc = json.loads((tmp_path / "o" / "target.json").read_text())
    gt = truth(variant)
    spot = gt["spots"][gt["expected_targets"][protocol]]
    assert voxel_distance(doc, spot) <= 1
    assert np.linalg.norm(np.array(doc["target"]["ras_mm"]) - spot["mni_mm"]) <= 4 * np.sqrt(3) + 1e-6
    if protocol == "rumination-dmpfc":
        assert {r["state"] for r in doc["qc"]["runs"]} == {"rumination", "distraction"}


def test_sessions_and_runs_are_concatenated(tmp_path, sample_plans):
    deriv = tmp_path / "ds" / "sub-01" / "ses-1" / "func"
    deriv.mkdir(parents=True)
    for run in ("1", "2"):
        for src in FUNC.glob("sub-01_task-rest_*"):
            name = src.name.replace("sub-01_task-rest_", f"sub-01_ses-1_task-rest_run-{run}_")
            shutil.copy(src, deriv / name)
    code, doc = run_plan(tmp_path / "out", dataset=tmp_path / "ds", protocol="rest-dmpfc")
    assert code == 0
    assert [r["run"] for r in doc["qc"]["runs"]] == ["ses-1_task-rest_run-1", "ses-1_task-rest_run-2"]
    single = sample_plans["rest-dmpfc"][1]
    assert doc["qc"]["frames_per_state"]["rest"] == 2 * single["qc"]["frames_per_state"]["rest"]
    assert doc["target"]["voxel_ijk"] == single["target"]["voxel_ijk"]


def test_coil_pose_and_navigation_files(sample_plans):
    out, doc = sample_plans["sgacc-dlpfc"]
    coil = doc["coil"]
    pose = np.array(coil["matrix"])
    target = np.array(doc["target"]["ras_mm"])
    assert np.allclose(pose[:3, :3].T @ pose[:3, :3], np.eye(3), atol=1e-6) and np.linalg.det(pose[:3, :3]) > 0
    to_target = (target - pose[:3, 3]) / np.linalg.norm(target - pose[:3, 3])
    assert np.degrees(np.arccos(np.clip(pose[:3, 2] @ to_target, -1, 1))) < 20  # z points into the head, at the target
    handle = np.array(coil["handle_direction"])
    assert handle[0] < -0.5 and handle[1] < -0.5  # left DLPFC: handle posterior and lateral (left)
    assert pose[0, 3] < target[0] - 5  # the scalp point lies lateral (further left) of a left DLPFC target
    assert 8 < coil["scalp_to_cortex_mm"] < 25
    assert doc["anatomy"]["t1_sha256"] == hashlib.sha256((out / doc["anatomy"]["t1"]).read_bytes()).hexdigest()
    # Localite marker read with a plain XML parser (spec §3.1): RAS file, column 0 = coil normal, column 3 = centre
    import xml.etree.ElementTree as ET

    xml = next((out / "navigation" / "localite").glob("InstrumentMarker*.xml"))
    root = ET.parse(xml).getroot()
    assert root.get("coordinateSpace") == "RAS"
    m = root.find("InstrumentMarker/Marker/Matrix4D")
    data = np.array([[float(m.get(f"data{r}{c}")) for c in range(4)] for r in range(4)])
    assert np.allclose(data[:3, 3], pose[:3, 3], atol=1e-4)
    assert np.allclose(data[:3, 0], pose[:3, 2], atol=1e-5)  # Localite x = SimNIBS z (normal into the head)
    assert np.allclose(data[:3, 1], -pose[:3, 1], atol=1e-5)  # Localite y points toward the handle
