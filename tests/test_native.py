"""Native-space plan: scanner DICOM run + T1 -> target and coil pose in the T1's world (issue 3 §2-§4).

One real-data plan (``pydecnef-sub1``: 120 Siemens mosaic volumes, TR 2 s, and
its T1) is computed once per module through the CLI and checked against
references computed here independently: the atlas file read with tomllib,
the saved ANTs transforms applied with antspyx directly (our LPS flip not
used), a head mask thresholded here (Otsu, no code of tmstarget.anatomy.scalp), and
the DICOM patient fields read with pydicom.
"""

import gzip
import json
import tomllib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

from tmstarget.cli.main import main

ATLAS = Path(__file__).resolve().parents[1] / "tmstarget" / "data" / "atlas.toml"
PROTOCOL = "sgacc-dlpfc"
REGION = "left-dlpfc"


@pytest.fixture(scope="module")
def native_plan(shared_data, tmp_path_factory):
    """Run ``tmstarget plan --rest-dicom ... --t1 ...`` once; return (output folder, document, inputs)."""
    sub = shared_data / "pydecnef-sub1"
    out = tmp_path_factory.mktemp("native") / "plan"
    code = main([
        "plan", "--rest-dicom", str(sub / "dicom" / "func-run1"), "--t1", str(sub / "anat" / "T1w.nii.gz"),
        "--participant", "01", "--protocol", PROTOCOL, "--output", str(out), "--navigation", "none", "--quiet",
    ])
    assert code == 0
    document = json.loads((out / "target.json").read_text())
    return out, document, sub


def _ants_points_ras(points_ras, folder, stem, which="inv"):
    """Map RAS points with a saved transform list, antspyx directly (``inv``: from -> to points)."""
    import ants
    import pandas as pd

    spec = json.loads((folder / f"{stem}_xfm.json").read_text())
    files = [str(folder / entry["file"]) for entry in spec[which]]
    flags = [entry["invert"] for entry in spec[which]]
    lps = np.atleast_2d(points_ras) * [-1.0, -1.0, 1.0]
    frame = pd.DataFrame({"x": lps[:, 0], "y": lps[:, 1], "z": lps[:, 2]})
    mapped = ants.apply_transforms_to_points(3, frame, files, whichtoinvert=flags)
    return mapped[["x", "y", "z"]].to_numpy() * [-1.0, -1.0, 1.0]


def _head_mask(t1_img):
    """Independent head mask: Otsu threshold, largest component, holes filled."""
    from skimage.filters import threshold_otsu

    data = np.asarray(t1_img.dataobj, dtype=np.float32)
    mask = data > threshold_otsu(data)
    labels, _ = ndimage.label(mask)
    mask = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
    mask = ndimage.binary_closing(mask, iterations=3)
    return ndimage.binary_fill_holes(mask)


@pytest.mark.slow
def test_native_plan_is_in_t1_space(native_plan):
    _, document, _ = native_plan
    assert document["space"] == "T1w"
    assert document["anatomy"]["space"] == "T1w"
    target = document["target"]
    assert target["mni_mm"] is not None and target["ras_mm"] != target["mni_mm"]
    assert len(target["voxel_ijk"]) == 3


@pytest.mark.slow
def test_native_target_mni_lies_in_search_region(native_plan):
    _, document, _ = native_plan
    region = tomllib.loads(ATLAS.read_text())["regions"][REGION]
    centres = np.asarray(region["centres_mni_mm"], dtype=float)
    distance = np.linalg.norm(centres - np.asarray(document["target"]["mni_mm"]), axis=1).min()
    assert distance <= region["radius_mm"], f"target {document['target']['mni_mm']} is {distance:.1f} mm from {REGION}"


@pytest.mark.slow
def test_native_target_t1_to_mni_matches_and_is_in_head(native_plan):
    out, document, sub = native_plan
    target = document["target"]
    mapped = _ants_points_ras(np.asarray(target["ras_mm"]), out / "xfm",
                              "sub-01_from-T1w_to-MNI152NLin2009aSym")[0]
    np.testing.assert_allclose(mapped, target["mni_mm"], atol=1.0)
    t1 = nib.load(sub / "anat" / "T1w.nii.gz")
    assert document["anatomy"]["t1"] == "anat/T1w.nii.gz"  # a copy travels with the plan
    assert (out / "anat" / "T1w.nii.gz").read_bytes() == (sub / "anat" / "T1w.nii.gz").read_bytes()
    ijk = np.round(np.linalg.solve(t1.affine, np.append(target["ras_mm"], 1.0))[:3]).astype(int)
    head = _head_mask(t1)
    assert np.all(ijk >= 0) and np.all(ijk < head.shape) and head[tuple(ijk)]
    # the opposite list (MNI -> T1 points) sends the T1 target elsewhere: an inverted transform would fail above
    wrong = _ants_points_ras(np.asarray(target["ras_mm"]), out / "xfm", "sub-01_from-T1w_to-MNI152NLin2009aSym",
                             which="fwd")[0]
    assert np.linalg.norm(wrong - np.asarray(target["mni_mm"])) > 2.0


@pytest.mark.slow
def test_native_candidates_epi_to_t1_use_the_coregistration(native_plan):
    out, document, _ = native_plan
    affine = np.asarray(document["analysis_grid"]["affine"])
    for candidate in document["candidates"]:
        on_grid = affine[:3, :3] @ candidate["voxel_ijk"] + affine[:3, 3]
        np.testing.assert_allclose(on_grid, candidate["ras_mm"], atol=1e-2)


@pytest.mark.slow
def test_native_coil_on_scalp_and_pointing_at_target(native_plan):
    _, document, sub = native_plan
    t1 = nib.load(sub / "anat" / "T1w.nii.gz")
    head = _head_mask(t1)
    boundary = head & ~ndimage.binary_erosion(head)
    ijk = np.argwhere(boundary)
    points = ijk @ t1.affine[:3, :3].T + t1.affine[:3, 3]
    coil = document["coil"]
    centre = np.asarray(coil["centre_ras_mm"])
    distance, _ = cKDTree(points).query(centre)
    assert distance <= 2.0, f"coil centre {distance:.2f} mm from the head surface"
    z_axis = np.asarray(coil["matrix"])[:3, 2]
    to_target = np.asarray(document["target"]["ras_mm"]) - centre
    cosine = z_axis @ to_target / np.linalg.norm(z_axis) / np.linalg.norm(to_target)
    assert np.degrees(np.arccos(np.clip(cosine, -1, 1))) < 20.0


@pytest.mark.slow
def test_native_depth_is_to_this_t1s_cortex(native_plan):
    """Issue 14 item 1: the depth is measured on the T1, to the cortex, not to a template mask on the EPI grid.

    The old depth (MNI brain mask, nearest neighbour on the 3-mm EPI grid) was 7-9 mm here, in the skull;
    the hand rule on the T1 profile along the coil axis (test_tissue_depth) puts the brain at 12-16 mm.
    """
    from t1_profile import skull_to_brain_transition_mm

    _, document, sub = native_plan
    t1 = nib.load(sub / "anat" / "T1w.nii.gz")
    coil = document["coil"]
    depth = coil["scalp_to_cortex_mm"]
    assert 11.0 <= depth <= 25.0, f"target scalp-to-cortex {depth:.1f} mm"
    hand = skull_to_brain_transition_mm(t1, coil["scalp_ras_mm"], np.asarray(coil["matrix"])[:3, 2])
    assert abs(depth - hand) <= 2.0, f"reported {depth:.1f} mm, the T1 profile puts the brain at {hand:.1f} mm"
    for candidate in document["candidates"]:
        block = candidate["coil"]
        assert block["within_max_depth"] == (block["scalp_to_cortex_mm"] <= block["max_depth_mm"] == 30.0)
        assert block["target_tissue"] in ("grey matter", "white matter", "csf", "outside brain")
        if block["cortical_target_ras_mm"] is not None:  # on the coil axis: same pose, so same scalp point
            offset = np.asarray(block["cortical_target_ras_mm"]) - np.asarray(block["scalp_ras_mm"])
            z_axis = np.asarray(block["matrix"])[:3, 2]
            assert np.linalg.norm(offset - (offset @ z_axis) * z_axis) < 0.6
    assert "seconds" not in document["anatomy"]["tissue"]  # run times stay out: identical runs, identical files


@pytest.mark.slow
def test_native_outputs_hold_no_patient_fields(native_plan):
    import pydicom

    out, _, sub = native_plan
    first = sorted((sub / "dicom" / "func-run1").iterdir())[0]
    header = pydicom.dcmread(first, stop_before_pixels=True)
    secrets = {str(header.PatientName), str(header.PatientID), str(header.PatientBirthDate)}
    birth = str(header.PatientBirthDate)
    secrets.add(f"{birth[:4]}-{birth[4:6]}-{birth[6:]}")
    secrets.update(part for part in str(header.PatientName).split("^") if len(part) >= 4)
    secrets.discard("")
    assert secrets
    for path in out.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            data = gzip.decompress(data)
        for secret in secrets:
            assert secret.encode() not in data, f"{path.relative_to(out)} holds a patient field"
            assert secret not in str(path.relative_to(out))


def test_native_needs_a_t1(tmp_path, capsys):
    dicom_dir = tmp_path / "dicom"
    dicom_dir.mkdir()
    code = main(["plan", "--rest-dicom", str(dicom_dir), "--participant", "01", "--protocol", PROTOCOL,
                 "--output", str(tmp_path / "out")])
    assert code == 1
    assert "T1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_native_refuses_preprocessed_confounds(tmp_path, capsys):
    code = main(["plan", "--rest-dicom", str(tmp_path), "--rest-confounds", str(tmp_path / "c.tsv"),
                 "--t1", str(tmp_path / "t1.nii.gz"), "--protocol", PROTOCOL, "--output", str(tmp_path / "out")])
    assert code == 1
    assert "--rest-confounds" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# The T1 given as DICOM (--t1-dicom): a partial T1 is refused, a whole one gives the NIfTI T1's target
# ---------------------------------------------------------------------------

SAMPLE_FMRIPREP = Path(__file__).resolve().parents[1] / "sample_data" / "derivatives" / "fmriprep" / "sub-01"
SAMPLE_T1 = SAMPLE_FMRIPREP / "anat" / "sub-01_space-MNI152NLin2009cAsym_desc-preproc_T1w.nii.gz"
SAMPLE_REST = SAMPLE_FMRIPREP / "func" / "sub-01_task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"


def test_partial_t1_dicom_is_refused_in_one_line(shared_data, tmp_path, capsys):
    """The shared T1 DICOM holds 8 slices of 1 mm: not a whole head."""
    sub = shared_data / "pydecnef-sub1" / "dicom"
    code = main(["plan", "--rest-dicom", str(sub / "func-run1"), "--t1-dicom", str(sub / "t1"), "--participant", "01",
                 "--protocol", PROTOCOL, "--output", str(tmp_path / "out"), "--quiet"])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(sub / "t1") in err and "8.0 mm" in err and "not a whole head" in err
    assert not (tmp_path / "out").exists()


def test_small_t1_field_of_view_is_refused(tmp_path, capsys):
    """Same check on a NIfTI T1: 120 x 120 x 40 mm (20 slices of 2 mm)."""
    (tmp_path / "in").mkdir()
    t1 = tmp_path / "in" / "t1.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((60, 60, 20), np.int16), np.diag([2.0, 2.0, 2.0, 1.0])), t1)
    code = main(["plan", "--native", "--rest-bold", str(SAMPLE_REST), "--t1", str(t1), "--participant", "01",
                 "--protocol", "rest-dmpfc", "--output", str(tmp_path / "out"), "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert "t1.nii.gz" in err and "40.0 mm" in err and "axis k" in err


@pytest.fixture(scope="module")
def t1_dicom_plans(tmp_path_factory):
    """The sample patient's rest run (taken as raw) planned twice: T1 as NIfTI, and the same T1 as DICOM."""
    from tmstarget.testing.dicom import write_dicom_series

    root = tmp_path_factory.mktemp("t1_dicom")
    write_dicom_series(nib.load(SAMPLE_T1), root / "t1_dicom", series_number=2, series_description="t1_mprage")
    docs = {}
    for name, t1_args in (("nifti", ["--t1", str(SAMPLE_T1)]), ("dicom", ["--t1-dicom", str(root / "t1_dicom")])):
        code = main(["plan", "--native", "--rest-bold", str(SAMPLE_REST), *t1_args, "--participant", "01",
                     "--protocol", "rest-dmpfc", "--output", str(root / name), "--navigation", "none", "--quiet"])
        assert code == 0
        docs[name] = json.loads((root / name / "target.json").read_text())
    return root, docs


@pytest.mark.slow
def test_t1_dicom_gives_the_nifti_target(t1_dicom_plans):
    """Same world geometry, so the same target; the registrations only see the voxels in another order.

    The DICOM writer stores this RAS T1 with its k axis reversed, so the T1 -> MNI registration resamples
    a differently ordered grid: tolerances of 1 mm (half a voxel of the 2-mm registration grid).
    """
    _, docs = t1_dicom_plans
    nifti, dicom = docs["nifti"]["target"], docs["dicom"]["target"]
    assert docs["dicom"]["space"] == "T1w"
    assert dicom["voxel_ijk"] == nifti["voxel_ijk"]
    np.testing.assert_allclose(dicom["ras_mm"], nifti["ras_mm"], atol=1.0)
    np.testing.assert_allclose(dicom["mni_mm"], nifti["mni_mm"], atol=1.0)
    np.testing.assert_allclose(docs["dicom"]["coil"]["centre_ras_mm"], docs["nifti"]["coil"]["centre_ras_mm"],
                               atol=2.0)


@pytest.mark.slow
def test_t1_dicom_copy_travels_with_the_plan(t1_dicom_plans):
    """The converted T1 in OUTPUT/anat is the sample T1 (same world voxels), named by its sha256 in target.json."""
    import hashlib

    root, docs = t1_dicom_plans
    anatomy = docs["dicom"]["anatomy"]
    copy_path = root / "dicom" / anatomy["t1"]
    assert anatomy["t1"] == "anat/sub-01_T1w.nii.gz"
    assert hashlib.sha256(copy_path.read_bytes()).hexdigest() == anatomy["t1_sha256"]
    original, copy = nib.as_closest_canonical(nib.load(SAMPLE_T1)), nib.as_closest_canonical(nib.load(copy_path))
    np.testing.assert_allclose(copy.affine, original.affine, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(copy.dataobj), np.asarray(original.dataobj))


@pytest.mark.slow
def test_native_plan_revised_in_its_own_head_frame(native_plan, tmp_path):
    """revise_plan on a T1w plan: head frame and tissue priors through the plan's own xfm/ registration."""
    import tmstarget
    from tmstarget.coil.adjust import PlanHead

    out, document, _ = native_plan
    head = PlanHead(out)
    assert "xfm" in head.frame.source
    # the head frame is the MNI axes mapped into this T1: a rotation, close to the scanner axes here
    axes = head.frame.axes_ras
    np.testing.assert_allclose(axes.T @ axes, np.eye(3), atol=1e-9)
    assert np.degrees(np.arccos(np.clip(np.diag(axes), -1, 1))).max() < 30.0
    # MNI (0, 0, 0) mapped into the T1 with antspyx directly, our frame's midline point
    stem = next(out.glob("xfm/*_from-T1w_to-MNI*_xfm.json")).name[:-len("_xfm.json")]
    np.testing.assert_allclose(head.frame.midline_ras_mm, _ants_points_ras([0.0, 0.0, 0.0], out / "xfm", stem,
                                                                           which="fwd")[0], atol=0.5)
    old = np.asarray(document["coil"]["matrix"])
    start = head.frame.angle_of(old, head.target_ras_mm)
    new = tmstarget.revise_plan(out, tmp_path / "v2", handle_angle_deg=start - 20.0, reason="native", head=head,
                                navigation=None)
    pose = np.asarray(new.coil["matrix"])
    # left-DLPFC target: -20 deg toward lateral is a left-handed turn about z
    k, a = old[:3, 2], np.radians(-20.0)
    expected = old[:3, 1] * np.cos(a) + np.cross(k, old[:3, 1]) * np.sin(a) + k * (k @ old[:3, 1]) * (1 - np.cos(a))
    np.testing.assert_allclose(pose[:3, 1], expected, atol=1e-9)
    assert new.coil["scalp_to_cortex_mm"] == pytest.approx(document["coil"]["scalp_to_cortex_mm"], abs=1e-6)
