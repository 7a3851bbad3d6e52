"""fMRIPrep inputs planned in the T1w world through fMRIPrep's own transforms (issue 3 §2, last point).

The synthetic fMRIPrep layout is the sample patient (MNI-space derivatives)
plus a native ``sub-01_desc-preproc_T1w`` that is the sample's MNI-space T1
moved by a known rigid transform ``M`` (RAS: ``p_T1w = M p_MNI``; rotation
about three axes and a translation, so neither a sign nor an inversion
cancels), and the two ``.h5`` files fMRIPrep writes, made here with antspyx:

* ``from-T1w_to-MNI152NLin2009cAsym_mode-image_xfm.h5`` resamples T1w images
  onto MNI, so as an ITK point map it takes MNI points to T1w: ``D M D`` in LPS;
* ``from-MNI152NLin2009cAsym_to-T1w_mode-image_xfm.h5``: ``D M^-1 D``.

References are independent of tmstarget: ``M`` itself, the fixture's files
checked with ``ants.read_transform``, a head mask thresholded here, the
navigation file parsed as text, hashlib.
"""

import hashlib
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

from rigid import apply_affine, rotation
from tmstarget.cli.main import main
from tmstarget.workflows.fmriprep_t1w import choose_fmriprep_space, find_fmriprep_anatomy

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
MNI = "MNI152NLin2009cAsym"
ANAT = Path("derivatives") / "fmriprep" / "sub-01" / "anat"
NATIVE_T1 = "sub-01_desc-preproc_T1w.nii.gz"
MNI_T1 = f"sub-01_space-{MNI}_desc-preproc_T1w.nii.gz"
T1W_TO_MNI = f"sub-01_from-T1w_to-{MNI}_mode-image_xfm.h5"
MNI_TO_T1W = f"sub-01_from-{MNI}_to-T1w_mode-image_xfm.h5"
RAS2LPS = np.diag([-1.0, -1.0, 1.0])


#: MNI -> T1w world (RAS mm): 12 deg about z, -8 about x, 5 about y, then (7, -12, 15) mm.
M = np.eye(4)
M[:3, :3] = rotation(2, 12.0) @ rotation(0, -8.0) @ rotation(1, 5.0)
M[:3, 3] = [7.0, -12.0, 15.0]


def _write_point_map(path, matrix_ras):
    """ITK composite (.h5): rotation then translation, mapping LPS points by ``D matrix_ras D``."""
    import ants

    rotation = ants.create_ants_transform(transform_type="AffineTransform", dimension=3,
                                          matrix=RAS2LPS @ matrix_ras[:3, :3] @ RAS2LPS, translation=[0.0] * 3)
    shift = ants.create_ants_transform(transform_type="AffineTransform", dimension=3, matrix=np.eye(3),
                                       translation=list(RAS2LPS @ matrix_ras[:3, 3]))
    ants.write_transform(ants.compose_ants_transforms([rotation, shift]), str(path))


def make_layout(root, swap=False):
    """Copy of the sample dataset with a moved native T1w and both transforms (``swap``: files exchanged)."""
    dataset = root / "dataset"
    shutil.copytree(SAMPLE, dataset)
    anat = dataset / ANAT
    mni_t1 = nib.load(anat / MNI_T1)
    affine = M @ mni_t1.affine
    native = nib.Nifti1Image(np.asarray(mni_t1.dataobj), affine)
    native.set_qform(affine, code=1)
    native.set_sform(affine, code=1)
    nib.save(native, anat / NATIVE_T1)
    to_mni, to_t1w = (MNI_TO_T1W, T1W_TO_MNI) if swap else (T1W_TO_MNI, MNI_TO_T1W)
    _write_point_map(anat / to_mni, M)
    _write_point_map(anat / to_t1w, np.linalg.inv(M))
    return dataset


def _plan(dataset, out, *extra):
    code = main(["plan", str(dataset), "--participant", "01", "--output", str(out), "--quiet", *extra])
    return code, (json.loads((out / "target.json").read_text()) if code == 0 else None)


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    """One layout; the default plan (T1w) and the --space MNI152NLin2009cAsym plan."""
    root = tmp_path_factory.mktemp("fmriprep_native")
    dataset = make_layout(root)
    code_t1w, t1w = _plan(dataset, root / "t1w")
    code_mni, mni = _plan(dataset, root / "mni", "--space", MNI, "--navigation", "none")
    assert (code_t1w, code_mni) == (0, 0)
    return {"dataset": dataset, "t1w": t1w, "mni": mni, "t1w_dir": root / "t1w", "mni_dir": root / "mni"}


def test_fixture_transform_files_are_what_they_claim(tmp_path):
    """antspyx itself: the from-T1w_to-MNI file maps an MNI point (LPS) to M p."""
    import ants

    dataset = make_layout(tmp_path)
    point = np.array([-38.0, 44.0, 30.0])
    for name, matrix in ((T1W_TO_MNI, M), (MNI_TO_T1W, np.linalg.inv(M))):
        mapped = ants.read_transform(str(dataset / ANAT / name)).apply_to_point(list(RAS2LPS @ point))
        np.testing.assert_allclose(RAS2LPS @ np.asarray(mapped), apply_affine(matrix, point)[0], atol=1e-3)


def test_t1w_target_is_the_known_rigid_transform_of_the_mni_target(plans):
    doc, mni_doc = plans["t1w"], plans["mni"]
    assert doc["space"] == "T1w" and doc["anatomy"]["space"] == "T1w"
    assert Path(doc["anatomy"]["t1"]).name == NATIVE_T1
    for candidate, mni_candidate in zip(doc["candidates"], mni_doc["candidates"]):
        # the MNI point is the one the engine found on the MNI grid ...
        np.testing.assert_allclose(candidate["mni_mm"], mni_candidate["ras_mm"], atol=1e-3)
        # ... and the T1w point is M applied to it
        expected = apply_affine(M, candidate["mni_mm"])[0]
        assert np.linalg.norm(np.asarray(candidate["ras_mm"]) - expected) < 0.5, candidate["name"]


def test_an_inverted_transform_would_fail_the_tolerance(plans):
    """The 0.5 mm check above is sharp: the inverse map puts the target centimetres away."""
    mni_target = np.asarray(plans["t1w"]["target"]["mni_mm"])
    right, inverted = apply_affine(M, mni_target)[0], apply_affine(np.linalg.inv(M), mni_target)[0]
    assert np.linalg.norm(right - inverted) > 20.0
    assert np.linalg.norm(np.asarray(plans["t1w"]["target"]["ras_mm"]) - inverted) > 20.0


def test_swapped_transform_files_are_refused(tmp_path, capsys):
    dataset = make_layout(tmp_path, swap=True)
    code, _ = _plan(dataset, tmp_path / "out")
    assert code == 1
    err = capsys.readouterr().err
    assert "swapped or inverted" in err and T1W_TO_MNI in err
    assert not (tmp_path / "out").exists()


def test_coil_sits_on_the_moved_scalp(plans):
    doc, mni_doc = plans["t1w"], plans["mni"]
    native = nib.load(plans["dataset"] / ANAT / NATIVE_T1)
    data = np.asarray(native.dataobj, dtype=np.float32)
    head = data > 0.1 * data.max()  # skull (25 %) and scalp (70 %) of the synthetic head included
    labels, _ = ndimage.label(head)
    head = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
    surface = apply_affine(native.affine, np.argwhere(head & ~ndimage.binary_erosion(head)))
    centre = np.asarray(doc["coil"]["centre_ras_mm"])
    distance, _ = cKDTree(surface).query(centre)
    assert distance <= 2.0, f"coil centre {distance:.2f} mm from the native head surface"
    # the same placement as on the MNI-space T1, moved by M (scalp meshes differ by resampling only)
    mni_pose = np.asarray(mni_doc["coil"]["matrix"])
    pose = np.asarray(doc["coil"]["matrix"])
    assert np.linalg.norm(centre - apply_affine(M, mni_pose[:3, 3])[0]) < 2.0
    moved_axes = M[:3, :3] @ mni_pose[:3, :3]
    angles = np.degrees(np.arccos(np.clip(np.sum(moved_axes * pose[:3, :3], axis=0), -1, 1)))
    assert np.all(angles < 5.0), angles
    assert abs(doc["coil"]["scalp_to_cortex_mm"] - mni_doc["coil"]["scalp_to_cortex_mm"]) < 2.0


def test_maps_stay_on_the_mni_grid_and_say_so(plans):
    doc, out = plans["t1w"], plans["t1w_dir"]
    bold = nib.load(SAMPLE / "derivatives" / "fmriprep" / "sub-01" / "func"
                    / f"sub-01_task-rumination_space-{MNI}_desc-preproc_bold.nii.gz")
    np.testing.assert_allclose(doc["analysis_grid"]["affine"], bold.affine, atol=1e-6)
    ijk = doc["target"]["voxel_ijk"]
    np.testing.assert_allclose(apply_affine(bold.affine, ijk)[0], doc["target"]["mni_mm"], atol=1e-3)
    for name in (doc["images"]["maps"]["delta"], doc["images"]["maps"]["z_rumination"]):
        assert name.startswith(f"sub-01_space-{MNI}_desc-") and name.endswith("_statmap.nii.gz")
        img = nib.load(out / name)
        assert int(img.header["qform_code"]) == 4 and int(img.header["sform_code"]) == 4, name
        np.testing.assert_allclose(img.affine, bold.affine, atol=1e-6)
    sphere = nib.load(out / doc["images"]["masks"]["target_sphere"])
    centroid = apply_affine(sphere.affine, np.argwhere(np.asarray(sphere.dataobj) > 0).mean(axis=0))[0]
    assert np.linalg.norm(centroid - doc["target"]["mni_mm"]) < 1.0
    assert "MNI" in doc["qc"]["coordinates"]["analysis_grid"]


def test_navigation_files_are_in_the_native_t1w(plans):
    doc, out = plans["t1w"], plans["t1w_dir"]
    sha = hashlib.sha256((plans["dataset"] / ANAT / NATIVE_T1).read_bytes()).hexdigest()
    assert doc["anatomy"]["t1_sha256"] == sha
    rows = [line.split(",") for line in (out / "navigation" / "sub-01_slicer_targets.fcsv").read_text().splitlines()
            if line and not line.startswith("#")]
    np.testing.assert_allclose([float(v) for v in rows[0][1:4]], doc["coil"]["centre_ras_mm"], atol=1e-4)
    assert sha in rows[0][12] and NATIVE_T1 in rows[0][12]
    inputs = doc["provenance"]["inputs"]
    assert inputs["xfm_from_T1w_to_MNI"]["sha256"] == hashlib.sha256(
        (plans["dataset"] / ANAT / T1W_TO_MNI).read_bytes()).hexdigest()


def test_space_mni_keeps_mni(plans):
    doc = plans["mni"]
    assert doc["space"] == MNI
    assert doc["target"]["ras_mm"] == doc["target"]["mni_mm"]
    assert Path(doc["anatomy"]["t1"]).name == MNI_T1
    assert doc["qc"]["space_choice"].startswith(f"{MNI} (requested)")


def test_default_is_mni_without_native_anatomy_and_t1w_request_fails(tmp_path, capsys):
    anatomy, note = choose_fmriprep_space(SAMPLE / "derivatives" / "fmriprep", "01")
    assert anatomy is None and note.startswith(MNI) and "no native" in note
    code = main(["plan", str(SAMPLE), "--participant", "01", "--space", "T1w", "--output", str(tmp_path / "out")])
    assert code == 1
    assert "cannot plan in T1w" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_missing_transform_is_named(tmp_path):
    anat = tmp_path / "sub-01" / "anat"
    anat.mkdir(parents=True)
    (anat / NATIVE_T1).write_bytes(b"")
    (anat / T1W_TO_MNI).write_bytes(b"")
    anatomy, reason = find_fmriprep_anatomy(tmp_path, "01")
    assert anatomy is None and MNI_TO_T1W in reason
    (anat / MNI_TO_T1W).write_bytes(b"")
    anatomy, reason = find_fmriprep_anatomy(tmp_path, "sub-01")
    assert reason is None and anatomy.t1_path == anat / NATIVE_T1
    # the file whose fwd list maps MNI points into the T1w is the from-T1w_to-MNI one
    assert anatomy.t1_to_mni.fwd_files == (str(anat / T1W_TO_MNI),)
    assert anatomy.t1_to_mni.inv_files == (str(anat / MNI_TO_T1W),)


def test_space_mni_refused_for_native_runs(tmp_path, capsys):
    code = main(["plan", "--rest-dicom", str(tmp_path), "--t1", str(tmp_path / "t1.nii.gz"), "--space", MNI,
                 "--output", str(tmp_path / "out")])
    assert code == 1
    assert "always in the T1's world" in capsys.readouterr().err


def test_targets_tsv_has_t1w_and_mni_columns(plans):
    """Issue 14 item 14: a plan in the T1's world names both spaces in targets.tsv and carries the MNI columns."""
    doc, out = plans["t1w"], plans["t1w_dir"]
    rows = [line.split("\t") for line in (out / "targets.tsv").read_text().splitlines()]
    header = rows[0]
    t1w = [header.index(f"{axis}_t1w_mm") for axis in "xyz"]
    mni = [header.index(f"{axis}_mni152nlin2009casym_mm") for axis in "xyz"]
    for row, candidate in zip(rows[1:], doc["candidates"]):
        assert [float(row[i]) for i in t1w] == pytest.approx(candidate["ras_mm"], abs=1e-4)
        assert [float(row[i]) for i in mni] == pytest.approx(candidate["mni_mm"], abs=1e-4)
    assert candidate["ras_mm"] != pytest.approx(candidate["mni_mm"], abs=1.0)  # two different spaces
