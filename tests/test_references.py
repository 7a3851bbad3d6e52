"""`tmstarget plan` against references written from the published rules, not from tmstarget's code.

The resting-state sgACC protocol (``sgacc-dlpfc``) on the sample patient is recomputed with nilearn's
maskers only (``NiftiSpheresMasker`` for the sgACC sphere, ``NiftiMasker`` for every brain voxel: 6-mm
smoothing, detrend, Butterworth 0.01-0.1 Hz, Friston-24 + WM + CSF + global signal (the protocol's
published default), FD_Power > 0.5 mm censored), grey matter from nilearn's MNI152 template, the search
region from the four published DLPFC sites minus one FWHM around the seed, and the target by the cluster
rule written in ``nilearn_reference.cluster_pick``.  Frame counts are
checked exactly against counts derived here from the confounds.
"""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nilearn import image

import nilearn_reference as ref
from tmstarget.cli.main import main

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
FUNC = SAMPLE / "derivatives" / "fmriprep" / "sub-01" / "func"
SPACE = "space-MNI152NLin2009cAsym"
REST_BOLD = FUNC / f"sub-01_task-rest_{SPACE}_desc-preproc_bold.nii.gz"
REST_CONF = FUNC / "sub-01_task-rest_desc-confounds_timeseries.tsv"
REST_MASK = FUNC / f"sub-01_task-rest_{SPACE}_desc-brain_mask.nii.gz"

Z_TOLERANCE = 1e-4  # float32 data through two implementations of the same nilearn cleaning (measured 1.5e-5)


def _plan(out, protocol):
    assert main(["plan", str(SAMPLE), "--participant", "01", "--protocol", protocol, "--output", str(out),
                 "--quiet"]) == 0
    return json.loads((out / "target.json").read_text())


@pytest.fixture(scope="module")
def rest_plan(tmp_path_factory):
    out = tmp_path_factory.mktemp("sgacc") / "plan"
    return out, _plan(out, "sgacc-dlpfc")


@pytest.fixture(scope="module")
def rest_reference():
    """sgacc-dlpfc by plain nilearn: z map, masks and the cluster pick, all on the sample's grid."""
    mask_img = image.load_img(REST_MASK)
    mask = mask_img.get_fdata() > 0
    gm = ref.grey_matter(mask_img)
    seed_mask = nib.Nifti1Image((mask & gm).astype(np.uint8), mask_img.affine)
    voxels, seed, kept = ref.clean_rest_with_maskers(REST_BOLD, REST_CONF, mask_img, seed_mask, ref.SGACC, 10.0,
                                                     t_r=ref.repetition_time(REST_BOLD), global_signal=True)
    z = np.zeros(mask.shape)
    z[mask] = ref.zmap(voxels, seed)
    region = ref.spheres(mask_img, ref.DLPFC_CENTRES, 20.0) & gm & mask
    region &= ~ref.near_seed(region, ref.spheres(mask_img, [ref.SGACC], 10.0), mask_img.affine, 6.0)
    return {"z": z, "mask": mask, "region": region, "kept": kept, "affine": mask_img.affine,
            "picks": ref.cluster_pick(z, region, mask_img.affine, 0.10, "negative", 5)}


@pytest.mark.slow
def test_rest_protocol_parameters_are_those_the_reference_uses(rest_plan):
    """The reference hard-codes the README's defaults; a changed default must show here, not as a map diff."""
    _, doc = rest_plan
    params = doc["provenance"]["protocol"]["parameters"]
    assert {k: params["clean"][k] for k in ref.CLEAN_DEFAULTS} == {**ref.CLEAN_DEFAULTS, "global_signal": True}
    assert (params["clean"]["frames_before"], params["clean"]["frames_after"]) == (0, 0)
    assert params["clean"]["filter"] == "butterworth" and params["clean"]["task_regressors"] == "none"
    assert params["rois"]["gm_threshold"] == 0.2
    assert params["target"] == {**params["target"], "picker": "cluster", "direction": "negative",
                                "cluster_fraction": 0.10}
    assert params["connectivity"]["state"] == "rest"


@pytest.mark.slow
def test_rest_z_map_equals_nilearn_maskers(rest_plan, rest_reference):
    out, doc = rest_plan
    mask = rest_reference["mask"]
    ours = nib.load(out / doc["images"]["maps"]["z_rest"]).get_fdata()
    diff = np.abs(ours[mask] - rest_reference["z"][mask])
    assert diff.max() < Z_TOLERANCE, diff.max()
    assert np.all(ours[~mask] == 0)
    # the map is not trivially small: the tolerance is tight against its range
    assert np.abs(rest_reference["z"][mask]).max() > 1.0


@pytest.mark.slow
def test_rest_search_region_equals_published_sites_in_grey_matter(rest_plan, rest_reference):
    out, doc = rest_plan
    region = nib.load(out / doc["images"]["masks"]["search_region"]).get_fdata() > 0
    assert np.array_equal(region, rest_reference["region"])
    assert doc["qc"]["search_region_voxels"] == int(rest_reference["region"].sum())


@pytest.mark.slow
def test_rest_target_equals_reference_cluster_pick(rest_plan, rest_reference):
    """Same voxel (the target's is unambiguous), cluster size and centroid, for the target and every candidate."""
    _, doc = rest_plan
    picks = rest_reference["picks"]
    assert len(doc["candidates"]) == len(picks) >= 2  # the published rule keeps 10 % of the negative voxels
    for ours, theirs in zip(doc["candidates"], picks):
        assert tuple(ours["voxel_ijk"]) in theirs["ties"]
        assert ours["cluster_size"] == theirs["size"]
        assert np.allclose(ours["centroid_ras_mm"], theirs["centroid_mm"], atol=1e-9)
    assert picks[0]["ties"] == [tuple(doc["target"]["voxel_ijk"])]
    # the planted answer (ground truth) is where both land
    spot = json.loads((SAMPLE / "ground_truth.json").read_text())["spots"]["dlpfc_target"]
    assert np.abs(np.array(picks[0]["ijk"]) - spot["voxel_ijk"]).max() <= 1


@pytest.mark.slow
def test_rest_cluster_pick_on_the_plan_own_map_is_identical(rest_plan):
    """The reference picker on the map and region the plan wrote gives the plan's candidates exactly."""
    out, doc = rest_plan
    z_img = nib.load(out / doc["images"]["maps"]["z_rest"])
    region = nib.load(out / doc["images"]["masks"]["search_region"]).get_fdata() > 0
    picks = ref.cluster_pick(z_img.get_fdata(), region, z_img.affine, 0.10, "negative", 5)
    assert len(picks) == len(doc["candidates"])
    # two-voxel clusters put the centroid half-way between two region voxels: either is the rule's answer
    assert all(tuple(c["voxel_ijk"]) in p["ties"] for c, p in zip(doc["candidates"], picks))
    assert [c["cluster_size"] for c in doc["candidates"]] == [p["size"] for p in picks]
    # a cluster's score is its mean (and says so); its peak and the value at the snapped voxel are given too
    assert [c["score"] for c in doc["candidates"]] == pytest.approx([p["mean"] for p in picks], abs=1e-6)
    assert [c["cluster_peak"] for c in doc["candidates"]] == pytest.approx([p["peak"] for p in picks], abs=1e-6)
    assert all(c["score_statistic"] == "cluster_mean" for c in doc["candidates"])
    assert [c["value_at_voxel"] for c in doc["candidates"]] == pytest.approx(
        [float(z_img.get_fdata()[tuple(c["voxel_ijk"])]) for c in doc["candidates"]], abs=1e-6)
    lead = doc["qc"]["score_lead_over_next_candidate"]
    assert lead == pytest.approx(picks[1]["mean"] - picks[0]["mean"], abs=1e-6)


@pytest.mark.slow
def test_rest_frame_counts_are_exact(rest_plan, rest_reference):
    """150 volumes - 5 dummies - 8 frames above 0.5 mm (4 spikes, each moving the head in and out) = 137."""
    _, doc = rest_plan
    conf = ref.read_confounds(REST_CONF)
    fd = ref.fd_power(conf)
    scrubbed = np.flatnonzero(fd[5:] > 0.5) + 5
    spikes = json.loads((SAMPLE / "ground_truth.json").read_text())["runs"]["rest"]["spike_frames"]
    assert list(scrubbed) == sorted(s + d for s in spikes for d in (0, 1))
    run = doc["qc"]["runs"][0]
    assert (run["volumes"], run["dummy_volumes_dropped"], run["frames_scrubbed"], run["frames_kept"]) == \
        (150, 5, 8, 137)
    assert doc["qc"]["frames_per_state"] == {"rest": 137} and len(rest_reference["kept"]) == 137
    assert run["max_fd_power_mm"] == pytest.approx(fd[5:].max(), rel=1e-6)
    assert run["mean_fd_power_mm"] == pytest.approx(fd[5:].mean(), rel=1e-6)

