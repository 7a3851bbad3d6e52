"""Native path (raw EPI + T1 -> target in the T1's world) against a known truth (issue 20, item 1).

The raw EPI run is built here, deterministically: the sample patient's
resting-state BOLD (whose world is the sample T1's world, and whose baseline
intensity carries the T1 contrast inside the brain) is resampled (trilinear)
onto a 3-mm grid ``A`` whose world is the T1 world displaced by a known rigid
transform ``R`` (rotations of 8, 6 and -7 degrees about x, y and z and a
translation of (9, -10, 7) mm): a point with EPI-world coordinates ``p`` sits
at ``R p`` in the T1 world, so ``R`` is exactly the EPI -> T1 point map the
coregistration has to recover. The planted rest-dmpfc spot of the sample
(``ground_truth.json``) is therefore at the same T1-world position, and at
``R^-1`` of it in the EPI world the engine analyses.

One ``tmstarget plan --native`` (module fixture, about 30-80 s) is checked
against references computed here only: ``R`` itself, the saved ANTs files
read with ``ants.read_transform`` (following the xfm JSON's lists, invert flags
and notes), the sample's ground truth, and a head surface thresholded here
with scipy. The tolerances are sharp enough that applying the coregistration
the wrong way round (``R^-1``), or not at all, fails them by tens of mm
(``test_a_wrong_way_coregistration_would_fail_the_tolerances``).
"""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

from rigid import apply_affine, rotation
from tmstarget.cli.main import main

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
FMRIPREP = SAMPLE / "derivatives" / "fmriprep" / "sub-01"
SAMPLE_T1 = FMRIPREP / "anat" / "sub-01_space-MNI152NLin2009cAsym_desc-preproc_T1w.nii.gz"
SAMPLE_REST = FMRIPREP / "func" / "sub-01_task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
PROTOCOL = "rest-dmpfc"
RAS2LPS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Tolerances (the measured values are about 0.06 deg, 0.2 mm, 0.1 mm and 2.9 mm).
ROTATION_TOL_DEG = 1.0
DISPLACEMENT_TOL_MM = 1.0   # largest displacement over a head-sized box
EPI_VOXEL_MM = 3.0
SPOT_TOL_MM = 1.5 * EPI_VOXEL_MM  # the engine's peak on a 3-mm grid, with 6-mm smoothing
SURFACE_TOL_MM = 2.0


#: EPI world -> T1 world (RAS mm): the truth the coregistration must find.
R = np.eye(4)
R[:3, :3] = rotation(0, 8.0) @ rotation(2, -7.0) @ rotation(1, 6.0)
R[:3, 3] = [9.0, -10.0, 7.0]

#: The raw EPI grid (3 mm, axis-aligned in the EPI world); it holds the brain with a margin.
EPI_SHAPE = (55, 68, 56)
EPI_AFFINE = np.diag([EPI_VOXEL_MM, EPI_VOXEL_MM, EPI_VOXEL_MM, 1.0])
EPI_AFFINE[:3, 3] = [-88.5, -109.5, -78.0]

#: Points spanning a head (RAS mm) on which two rigid maps are compared.
HEAD_BOX = np.array([[x, y, z] for x in (-80.0, 80.0) for y in (-110.0, 80.0) for z in (-60.0, 90.0)])


def _rotation_angle_deg(rotation):
    return float(np.degrees(np.arccos(np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0))))


def _planted_spot():
    truth = json.loads((SAMPLE / "ground_truth.json").read_text())
    return np.asarray(truth["spots"][truth["expected_targets"][PROTOCOL]]["mni_mm"], dtype=float)


def make_raw_epi(folder):
    """The sample rest run seen through ``R``: EPI voxel ijk holds the sample BOLD at T1-world ``R A ijk``."""
    folder.mkdir(parents=True, exist_ok=True)
    source = nib.load(SAMPLE_REST)
    data = np.asarray(source.dataobj, dtype=np.float32)
    to_source_voxels = np.linalg.inv(source.affine) @ R @ EPI_AFFINE
    out = np.empty(EPI_SHAPE + (data.shape[3],), dtype=np.float32)
    for t in range(data.shape[3]):
        out[..., t] = ndimage.affine_transform(data[..., t], to_source_voxels[:3, :3], to_source_voxels[:3, 3],
                                               output_shape=EPI_SHAPE, order=1, mode="constant")
    img = nib.Nifti1Image(out, EPI_AFFINE)
    img.set_qform(EPI_AFFINE, code=1)
    img.set_sform(EPI_AFFINE, code=1)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = 2.0
    nib.save(img, folder / "rest_bold.nii.gz")
    (folder / "rest_bold.json").write_text(json.dumps({"RepetitionTime": 2.0}))
    return folder / "rest_bold.nii.gz"


@pytest.fixture(scope="module")
def native_truth(tmp_path_factory):
    """``tmstarget plan --native`` once on the displaced EPI; returns (output folder, target.json document)."""
    root = tmp_path_factory.mktemp("native_truth")
    bold = make_raw_epi(root / "inputs")
    out = root / "plan"
    code = main(["plan", "--native", "--rest-bold", str(bold), "--t1", str(SAMPLE_T1), "--participant", "01",
                 "--protocol", PROTOCOL, "--output", str(out), "--navigation", "none", "--quiet"])
    assert code == 0
    return out, json.loads((out / "target.json").read_text())


def _ras_matrix_of_list(folder, entries):
    """4x4 RAS point map of an ANTs list as the xfm JSON gives it (first file applied first).

    Each file is read with ``ants.read_transform``; its LPS point map is fitted
    on a few probe points (so no parameter layout is assumed), inverted when
    the entry says so, and the chain is converted to RAS with ``diag(-1, -1, 1)``.
    """
    import ants

    probes = np.array([[0.0, 0, 0], [100.0, 0, 0], [0, 100.0, 0], [0, 0, 100.0], [50.0, -40.0, 30.0]])
    design = np.hstack([probes, np.ones((len(probes), 1))])
    chain = np.eye(4)
    for entry in entries:
        transform = ants.read_transform(str(folder / entry["file"]))
        mapped = np.array([transform.apply_to_point(list(p)) for p in probes])
        solution, *_ = np.linalg.lstsq(design, mapped, rcond=None)
        matrix = np.eye(4)
        matrix[:3, :] = solution.T
        if entry["invert"]:
            matrix = np.linalg.inv(matrix)
        chain = matrix @ chain
    return RAS2LPS @ chain @ RAS2LPS


def _assert_rigid_close(found, truth, what):
    angle = _rotation_angle_deg(found[:3, :3] @ truth[:3, :3].T)
    displacement = np.linalg.norm(apply_affine(found, HEAD_BOX) - apply_affine(truth, HEAD_BOX), axis=1).max()
    assert angle < ROTATION_TOL_DEG, f"{what}: rotation off by {angle:.2f} deg"
    assert displacement < DISPLACEMENT_TOL_MM, f"{what}: points off by up to {displacement:.2f} mm"


def _head_surface_t1():
    """Boundary voxel centres (T1 world) of a head mask thresholded here: > 10 % of max, largest piece, filled."""
    t1 = nib.load(SAMPLE_T1)
    data = np.asarray(t1.dataobj, dtype=np.float32)
    head = data > 0.1 * data.max()  # skull (25 %) and scalp (70 %) of the synthetic head included
    labels, _ = ndimage.label(head)
    head = ndimage.binary_fill_holes(labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    return apply_affine(t1.affine, np.argwhere(head & ~ndimage.binary_erosion(head)))


def test_a_wrong_way_coregistration_would_fail_the_tolerances():
    """The truth is far from its inverse and from identity, where the target and over the head."""
    spot = _planted_spot()
    in_epi = apply_affine(np.linalg.inv(R), spot)[0]  # where the engine sees the spot
    inverse, identity = np.linalg.inv(R), np.eye(4)
    assert np.linalg.norm(apply_affine(inverse, in_epi)[0] - spot) > 8 * SPOT_TOL_MM       # R^-1 instead of R
    assert np.linalg.norm(in_epi - spot) > 3 * SPOT_TOL_MM                          # coregistration ignored
    for wrong in (inverse, identity):
        assert _rotation_angle_deg(wrong[:3, :3] @ R[:3, :3].T) > 10 * ROTATION_TOL_DEG
        moved = np.linalg.norm(apply_affine(wrong, HEAD_BOX) - apply_affine(R, HEAD_BOX), axis=1).max()
        assert moved > 20 * DISPLACEMENT_TOL_MM


def test_a_float32_run_whose_brain_fills_the_grid_is_read_and_smoothed(tmp_path):
    """The realigned runs of the native path are float32; with the mask's box (+ kernel) = the whole grid,
    nibabel hands back a read-only buffer, which smoothing in place must not hit (found by the fixture above)."""
    from tmstarget.analysis.voxels import VoxelSet, read_voxel_timeseries

    rng = np.random.default_rng(0)
    data = rng.normal(100.0, 5.0, (9, 10, 11, 6)).astype(np.float32)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "bold.nii.gz")
    mask = np.zeros(data.shape[:3], dtype=bool)
    mask[1:-1, 1:-1, 1:-1] = True  # its box grown by the 6-mm kernel is the whole grid
    voxels = VoxelSet(mask, affine)
    smoothed, _ = read_voxel_timeseries(nib.load(tmp_path / "bold.nii.gz"), voxels, fwhm_mm=6.0)
    sigma_vox = 6.0 / np.sqrt(8.0 * np.log(2.0)) / 3.0  # nilearn's FWHM -> sigma, in voxels
    reference = np.stack([ndimage.gaussian_filter(data[..., t], sigma_vox) for t in range(data.shape[3])])
    i, j, k = voxels.ijk.T
    np.testing.assert_allclose(smoothed, reference[:, i, j, k], rtol=1e-5)


@pytest.mark.slow
def test_saved_coregistration_is_the_truth(native_truth):
    """(a) OUTPUT/xfm: the list the JSON says maps boldref points to T1w is R; the other list is R^-1."""
    out, _ = native_truth
    folder = out / "xfm"
    spec = json.loads((folder / "sub-01_from-boldref_to-T1w_xfm.json").read_text())
    assert (spec["from"], spec["to"]) == ("boldref", "T1w")
    assert spec["inv_note"] == "maps boldref points to T1w"
    assert spec["fwd_note"].endswith("maps T1w points to boldref")
    _assert_rigid_close(_ras_matrix_of_list(folder, spec["inv"]), R, "boldref -> T1w points (inv list)")
    _assert_rigid_close(_ras_matrix_of_list(folder, spec["fwd"]), np.linalg.inv(R), "T1w -> boldref points (fwd)")


@pytest.mark.slow
def test_target_in_t1_world_is_the_planted_spot(native_truth):
    """(b) The EPI voxel the engine chose, moved by R, is target.ras_mm; and it is the planted spot."""
    _, document = native_truth
    assert document["space"] == "T1w"
    target = document["target"]
    ras = np.asarray(target["ras_mm"])
    through_truth = apply_affine(R @ EPI_AFFINE, target["voxel_ijk"])[0]
    assert np.linalg.norm(ras - through_truth) < DISPLACEMENT_TOL_MM, (ras, through_truth)
    spot = _planted_spot()
    assert np.linalg.norm(ras - spot) <= SPOT_TOL_MM, f"target {ras} is {np.linalg.norm(ras - spot):.2f} mm from {spot}"
    # the sample T1 is the MNI template with a skull: its world is MNI to within the registration's error
    assert np.linalg.norm(np.asarray(target["mni_mm"]) - ras) < 2.0
    for candidate in document["candidates"]:
        expected = apply_affine(R @ EPI_AFFINE, candidate["voxel_ijk"])[0]
        assert np.linalg.norm(np.asarray(candidate["ras_mm"]) - expected) < DISPLACEMENT_TOL_MM, candidate["name"]


@pytest.mark.slow
def test_analysis_grid_and_maps_are_moved_into_t1_world(native_truth):
    """analysis_grid.affine and the maps' affine are R @ A (the EPI grid seen from the T1)."""
    out, document = native_truth
    truth = R @ EPI_AFFINE
    corners = np.array([[i, j, k] for i in (0, EPI_SHAPE[0] - 1) for j in (0, EPI_SHAPE[1] - 1)
                        for k in (0, EPI_SHAPE[2] - 1)], dtype=float)
    for what, affine in (("analysis_grid", np.asarray(document["analysis_grid"]["affine"])),
                         ("map z_rest", nib.load(out / document["images"]["maps"]["z_rest"]).affine)):
        error = np.linalg.norm(apply_affine(affine, corners) - apply_affine(truth, corners), axis=1).max()
        assert error < DISPLACEMENT_TOL_MM, f"{what}: grid corners off by {error:.2f} mm"
    sphere = nib.load(out / document["images"]["masks"]["target_sphere"])
    centroid = apply_affine(sphere.affine, np.argwhere(np.asarray(sphere.dataobj) > 0).mean(axis=0))[0]
    assert np.linalg.norm(centroid - np.asarray(document["target"]["ras_mm"])) < EPI_VOXEL_MM / 2


@pytest.mark.slow
def test_coil_on_t1_scalp_above_the_target(native_truth):
    """(c) Coil centre on the T1 head surface, right above the target; coil z from the centre to the target."""
    _, document = native_truth
    surface = _head_surface_t1()
    tree = cKDTree(surface)
    coil = document["coil"]
    centre = np.asarray(coil["centre_ras_mm"])
    target = np.asarray(document["target"]["ras_mm"])
    to_surface, _ = tree.query(centre)
    assert to_surface <= SURFACE_TOL_MM, f"coil centre {to_surface:.2f} mm from the T1 head surface"
    # above the target: no scalp point is much closer to the target than the coil centre
    nearest_scalp, _ = tree.query(target)
    assert np.linalg.norm(centre - target) - nearest_scalp <= 3.0
    z_axis = np.asarray(coil["matrix"])[:3, 2]
    to_target = (target - centre) / np.linalg.norm(target - centre)
    angle = np.degrees(np.arccos(np.clip(z_axis @ to_target / np.linalg.norm(z_axis), -1, 1)))
    assert angle < 2.0, f"coil z is {angle:.1f} deg from the centre -> target direction"
    assert abs(coil["scalp_to_target_mm"] - np.linalg.norm(target - np.asarray(coil["scalp_ras_mm"]))) < 1e-3
