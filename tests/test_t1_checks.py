"""T1s without a scalp or a face (issue 21): detection, registration brain to brain, and the coil refused.

Inputs are built here from independent material: nilearn's MNI template (brain only), the sample
patient's T1 (that template with a synthetic skull and scalp), the same T1 masked with nilearn's
MNI brain mask (brain-extracted), the shared real T1, and a copy of it defaced here by zeroing
everything in front of and below a plane through the face (as pydeface and mri_deface do).
"""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tmstarget.anatomy.t1 import FACE_TISSUE_MIN, SKULL_CONTRAST_MAX, check_face, check_scalp
from tmstarget.cli.main import main

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "derivatives" / "fmriprep" / "sub-01"
SAMPLE_T1 = SAMPLE / "anat" / "sub-01_space-MNI152NLin2009cAsym_desc-preproc_T1w.nii.gz"
SAMPLE_REST = SAMPLE / "func" / "sub-01_task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"


def _brain_extracted_sample():
    """The sample T1 with nilearn's MNI brain mask applied (both on the template's 2-mm grid)."""
    from nilearn import datasets

    t1 = nib.load(SAMPLE_T1)
    mask = datasets.load_mni152_brain_mask(resolution=2)
    assert mask.shape == t1.shape and np.allclose(mask.affine, t1.affine)
    data = np.asarray(t1.dataobj) * (mask.get_fdata() > 0)
    out = nib.Nifti1Image(data.astype(np.uint8), t1.affine)
    out.set_qform(t1.affine, code=1)
    out.set_sform(t1.affine, code=1)
    return out


def test_scalp_is_found_on_heads_and_missing_on_brains():
    from nilearn import datasets

    head = check_scalp(nib.load(SAMPLE_T1))
    assert head.scalp and head.skull_contrast < SKULL_CONTRAST_MAX
    for name, img in (("nilearn template", datasets.load_mni152_template(resolution=2)),
                      ("sample T1, brain mask applied", _brain_extracted_sample())):
        brain = check_scalp(img)
        assert not brain.scalp, f"{name}: skull contrast {brain.skull_contrast:.2f}"
        assert brain.to_dict()["scalp"].startswith("missing: brain-extracted")
    assert head.to_dict()["scalp"] == "present"


@pytest.mark.slow
def test_scalp_is_found_on_the_real_t1(shared_data):
    check = check_scalp(nib.load(shared_data / "pydecnef-sub1" / "anat" / "T1w.nii.gz"))
    assert check.scalp, check
    # the bright skin/fat shell over the dark skull: the profile dips well under the surface
    assert check.skull_contrast < 0.5


# ------------------------------------------------------------------ defaced


@pytest.fixture(scope="module")
def real_t1_registered(shared_data, tmp_path_factory):
    """The shared real T1, its T1 -> MNI registration and a defaced copy (face zeroed in front of y=62, below z=5)."""
    from tmstarget.anatomy.registration import register_t1_to_mni

    t1 = nib.load(shared_data / "pydecnef-sub1" / "anat" / "T1w.nii.gz")
    tx = register_t1_to_mni(t1, workdir=tmp_path_factory.mktemp("deface"))
    data = np.asarray(t1.dataobj).copy()
    ras = nib.affines.apply_affine(t1.affine, np.indices(data.shape).reshape(3, -1).T).reshape(data.shape + (3,))
    # the face of this head lies at T1 y > 62 mm below z = 5 mm (its nasion near (-10, 90, 0))
    face = (ras[..., 1] > 62.0) & (ras[..., 2] < 5.0)
    data[face] = 0
    defaced = nib.Nifti1Image(data, t1.affine, t1.header)
    return t1, defaced, tx


@pytest.mark.slow
def test_face_present_on_the_real_t1_and_missing_once_defaced(real_t1_registered):
    t1, defaced, tx = real_t1_registered
    intact = check_face(t1, tx)
    assert not intact.defaced and intact.face_fraction > 0.7
    assert intact.coil_refusal([0.0, 90.0, 0.0]) is None  # an intact face refuses nothing
    cut = check_face(defaced, tx)
    assert cut.defaced and cut.face_fraction < FACE_TISSUE_MIN
    assert cut.to_dict()["face"].startswith("missing: defaced")


@pytest.mark.slow
def test_defaced_t1_keeps_the_coil_over_the_dlpfc_and_refuses_it_by_the_face(real_t1_registered):
    from tmstarget.anatomy.registration import map_points
    from tmstarget.anatomy.scalp import scalp_surface
    from tmstarget.coil.placement import place_coil

    _, defaced, tx = real_t1_registered
    check = check_face(defaced, tx)
    mesh = scalp_surface(defaced)
    dlpfc, frontopolar = map_points(np.array([[-38.0, 44.0, 26.0], [0.0, 62.0, -12.0]]), tx, "inverse")
    assert check.coil_refusal(place_coil(dlpfc, mesh).scalp_ras_mm) is None
    reason = check.coil_refusal(place_coil(frontopolar, mesh).scalp_ras_mm)
    assert reason is not None and "defaced" in reason and "not scalp" in reason


# ------------------------------------------------------- a brain-only native plan


@pytest.mark.slow
def test_native_plan_on_a_brain_only_t1_has_no_coil_and_says_why(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    t1 = tmp_path / "in" / "T1w_brain.nii.gz"
    nib.save(_brain_extracted_sample(), t1)
    out = tmp_path / "out"
    code = main(["plan", "--native", "--rest-bold", str(SAMPLE_REST), "--t1", str(t1), "--participant", "01",
                 "--protocol", "rest-dmpfc", "--output", str(out)])
    assert code == 0
    err = capsys.readouterr().err
    assert "warning: the T1 has no scalp" in err
    document = json.loads((out / "target.json").read_text())
    assert document["coil"] is None and all(c.get("coil") is None for c in document["candidates"])
    check = document["anatomy"]["t1_check"]
    assert check["scalp"].startswith("missing") and "no scalp" in check["coil"]
    assert document["coil_reason"] == check["coil"]  # not "no T1 known"
    assert not (out / "navigation").exists()
    # registered brain to brain: the sample's world is MNI, so the target's MNI point is its T1 point
    target = document["target"]
    assert np.linalg.norm(np.subtract(target["mni_mm"], target["ras_mm"])) < 2.0
