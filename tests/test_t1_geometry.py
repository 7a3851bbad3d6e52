"""T1 geometry through ``tmstarget plan``: qform/sform disagreement and an oblique T1 (issue 20, items 2b, 2c).

Every T1 here holds the sample patient's head (``sample_data``: the MNI
template with a skull and scalp) at the same world position, the world of
the plan (MNI), so the coil must land on that head whatever the header does:

* **qform != sform** (2b). The sform is the sample's affine (the truth); the
  qform is that affine moved by a rigid transform (10 and -6 degrees, (-12, 9,
  7) mm), far beyond the tolerance of ``tmstarget.spaces.check_qform_sform``
  (every field-of-view corner within 0.1 mm); a second T1's qform differs by
  2e-4 mm only (inside it). nibabel, SimNIBS and tmstarget's scalp read the
  sform. Documented behaviour (README, ``export`` and ``plan``): navigation
  files for a T1 whose qform and sform differ are refused unless ``--affine``
  says which one applies; ``plan`` with the default ``--navigation all``
  writes the plan and skips them with one warning line; an explicit format
  without ``--affine`` is refused in one line, nothing written.
* **oblique T1** (2c): the sample head resampled (trilinear) onto a grid
  rotated 15 degrees about x and -15 about y, stored sagittal-first with a
  flipped axis (left-handed) and 1.0 x 1.4 x 2.6 mm voxels.

References are computed here: head masks thresholded with scipy and mapped
through the affine the test chooses, the Localite XML parsed with ElementTree.
"""

import contextlib
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

from rigid import apply_affine, rotation
from tmstarget.cli.main import main

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
SAMPLE_T1 = SAMPLE / "derivatives" / "fmriprep" / "sub-01" / "anat" / \
    "sub-01_space-MNI152NLin2009cAsym_desc-preproc_T1w.nii.gz"
SURFACE_TOL_MM = 2.0
AXIS_TOL_DEG = 2.0


def _rigid(rotation, translation):
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = rotation, translation
    return out


def _angle_deg(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.degrees(np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1.0, 1.0))))


def _corner_shift_mm(a, b, shape):
    corners = np.array([[i, j, k] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)])
    return float(np.linalg.norm(apply_affine(a, corners) - apply_affine(b, corners), axis=1).max())


def _head_surface(data, affine):
    """Boundary voxel centres (world, through ``affine``) of a head mask: > 10 % of max, largest piece, filled."""
    head = np.asarray(data, dtype=np.float32)
    head = head > 0.1 * head.max()  # skull (25 %) and scalp (70 %) of the synthetic head included
    labels, _ = ndimage.label(head)
    head = ndimage.binary_fill_holes(labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    return apply_affine(affine, np.argwhere(head & ~ndimage.binary_erosion(head)))


def _sample():
    img = nib.load(SAMPLE_T1)
    return np.asarray(img.dataobj), img.affine.copy()


def _plan(t1, out, *extra, protocol="rest-dmpfc"):
    """``tmstarget plan sample_data --t1 T1``; returns (exit code, target.json or None, stderr lines)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["plan", str(SAMPLE), "--participant", "01", "--protocol", protocol, "--t1", str(t1),
                     "--output", str(out), "--quiet", *extra])
    document = json.loads((out / "target.json").read_text()) if code == 0 else None
    return code, document, err.getvalue().splitlines()


def _assert_coil_on_surface_and_aimed(document, surface, what):
    tree = cKDTree(surface)
    coil = document["coil"]
    centre = np.asarray(coil["centre_ras_mm"])
    target = np.asarray(document["target"]["ras_mm"])
    distance, _ = tree.query(centre)
    assert distance <= SURFACE_TOL_MM, f"{what}: coil centre {distance:.2f} mm from the head surface"
    nearest_scalp, _ = tree.query(target)
    assert np.linalg.norm(centre - target) - nearest_scalp <= 3.0, f"{what}: coil centre not above the target"
    angle = _angle_deg(np.asarray(coil["matrix"])[:3, 2], target - centre)
    assert angle < AXIS_TOL_DEG, f"{what}: coil z {angle:.1f} deg from the centre -> target direction"


# ---------------------------------------------------------------------------
# 2b: qform and sform differ by more / less than the tolerance
# ---------------------------------------------------------------------------

#: qform of the mismatched T1 = MOVE @ sform (the sform is the truth).
MOVE = _rigid(rotation(2, 10.0) @ rotation(0, -6.0), [-12.0, 9.0, 7.0])
#: qform of the nearly-equal T1: the sform with its translation moved by 2e-4 mm (inside rtol 1e-5 * |offset|).
SMALL_SHIFT_MM = 2e-4


def write_t1(path, qform, sform):
    data, _ = _sample()
    img = nib.Nifti1Image(data, sform)
    img.set_sform(sform, code=1)
    img.set_qform(qform, code=1)
    nib.save(img, path)
    return path


@pytest.fixture(scope="module")
def xform_t1s(tmp_path_factory):
    folder = tmp_path_factory.mktemp("t1_xforms")
    _, sform = _sample()
    small = sform.copy()
    small[:3, 3] += SMALL_SHIFT_MM
    return {
        "exact": write_t1(folder / "t1_exact.nii.gz", sform, sform),
        "small": write_t1(folder / "t1_small.nii.gz", small, sform),
        "big": write_t1(folder / "t1_big.nii.gz", MOVE @ sform, sform),
    }


@pytest.fixture(scope="module")
def xform_plans(xform_t1s, tmp_path_factory):
    """Default plans (``--navigation all``) on the three T1s: name -> (code, document, stderr lines, folder)."""
    root = tmp_path_factory.mktemp("xform_plans")
    plans = {}
    for name, t1 in xform_t1s.items():
        plans[name] = (*_plan(t1, root / name), root / name)
    return plans


def test_xform_fixtures_are_what_they_claim(xform_t1s):
    _, truth = _sample()
    for name, path in xform_t1s.items():
        img = nib.load(path)
        qform, qcode = img.header.get_qform(coded=True)
        sform, scode = img.header.get_sform(coded=True)
        assert (int(qcode), int(scode)) == (1, 1), name
        np.testing.assert_array_equal(sform, truth)
        np.testing.assert_array_equal(img.affine, truth)  # what nibabel (and so the scalp) uses
        shift = _corner_shift_mm(qform, sform, img.shape)
        if name == "exact":
            assert shift == 0.0
        elif name == "small":
            assert 0.0 < shift < 1e-3 and np.allclose(qform, sform, rtol=1e-5, atol=1e-6)
        else:
            assert shift > 20.0 and not np.allclose(qform, sform, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_exact_t1_coil_on_the_sform_scalp(xform_plans):
    code, document, err, _ = xform_plans["exact"]
    assert code == 0 and err == []
    data, sform = _sample()
    _assert_coil_on_surface_and_aimed(document, _head_surface(data, sform), "exact T1")


@pytest.mark.slow
def test_mismatch_plan_skips_navigation_with_one_warning_and_uses_the_sform(xform_plans, xform_t1s):
    code, document, err, out = xform_plans["big"]
    assert code == 0
    assert len(err) == 1, err
    assert err[0].startswith("warning: navigation files not written:")
    assert "qform" in err[0] and "sform" in err[0] and "--affine" in err[0]
    assert not (out / "navigation").exists()
    data, sform = _sample()
    surface = _head_surface(data, sform)
    _assert_coil_on_surface_and_aimed(document, surface, "qform != sform")
    # the same head surface seen through the qform is elsewhere: a qform scalp would be caught above
    qform_surface = apply_affine(MOVE, surface)
    centre = document["coil"]["centre_ras_mm"]
    assert np.linalg.norm(apply_affine(MOVE, centre) - centre) > 10
    distance_to_qform_head, _ = cKDTree(qform_surface).query(document["coil"]["centre_ras_mm"])
    assert distance_to_qform_head > 3 * SURFACE_TOL_MM
    exact = xform_plans["exact"][1]
    assert document["target"]["ras_mm"] == exact["target"]["ras_mm"]
    np.testing.assert_allclose(document["coil"]["matrix"], exact["coil"]["matrix"], atol=1e-9)


@pytest.mark.slow
def test_mismatch_explicit_format_is_refused_in_one_line(xform_t1s, tmp_path):
    code, _, err = _plan(xform_t1s["big"], tmp_path / "out", "--navigation", "localite")
    assert code == 1
    assert len(err) == 1, err
    assert err[0].startswith("tmstarget: error:") and "differ" in err[0] and "--affine" in err[0]
    assert not (tmp_path / "out").exists()


def _localite_centres(plan_dir):
    """Translation column of every InstrumentMarker's Matrix4D (RAS mm), parsed with ElementTree."""
    [path] = sorted((plan_dir / "navigation" / "localite").glob("InstrumentMarker*.xml"))
    root = ET.parse(path).getroot()
    assert root.get("coordinateSpace") == "RAS"
    matrices = root.findall("./InstrumentMarker/Marker/Matrix4D")
    return path, np.array([[float(m.get(f"data{r}3")) for r in range(3)] for m in matrices])


@pytest.mark.slow
def test_mismatch_with_affine_sform_writes_the_sform_coil(xform_t1s, xform_plans, tmp_path):
    code, document, err = _plan(xform_t1s["big"], tmp_path / "out", "--navigation", "localite", "--affine", "sform")
    assert code == 0 and err == []
    path, centres = _localite_centres(tmp_path / "out")
    exact = xform_plans["exact"][1]
    np.testing.assert_allclose(centres[0], exact["coil"]["centre_ras_mm"], atol=1e-6)
    np.testing.assert_allclose(document["coil"]["matrix"], exact["coil"]["matrix"], atol=1e-9)
    provenance = json.loads(path.with_name(path.name + ".provenance.json").read_text())
    assert provenance["xform"] == "sform"


@pytest.mark.slow
def test_mismatch_with_affine_qform_is_not_silently_mislabelled(xform_t1s, xform_plans, tmp_path):
    """The plan's coordinates are sform-world (nibabel's affine, the scalp's). Saying the navigator uses the
    qform must either be refused in one line (nothing written) or give coordinates in the qform's world."""
    code, _, err = _plan(xform_t1s["big"], tmp_path / "out", "--navigation", "localite", "--affine", "qform")
    if code != 0:
        assert len(err) == 1 and err[0].startswith("tmstarget: error:"), err
        assert "sform" in err[0] and "qform" in err[0]
        assert not (tmp_path / "out").exists()
        return
    _, centres = _localite_centres(tmp_path / "out")
    sform_centre = np.asarray(xform_plans["exact"][1]["coil"]["centre_ras_mm"])
    np.testing.assert_allclose(centres[0], apply_affine(MOVE, sform_centre)[0], atol=1e-3,
                               err_msg="sform-world coordinates written for a navigator that uses the qform")


@pytest.mark.slow
def test_nearly_equal_xforms_are_accepted_like_the_exact_t1(xform_plans):
    code, document, err, out = xform_plans["small"]
    _, exact, _, exact_out = xform_plans["exact"]
    assert code == 0 and err == []
    assert document["target"] == exact["target"]
    assert document["candidates"] == exact["candidates"]
    for key in ("centre_ras_mm", "matrix", "scalp_ras_mm"):
        np.testing.assert_allclose(document["coil"][key], exact["coil"][key], atol=1e-6, err_msg=key)
    written = sorted(p.name for p in (out / "navigation").rglob("*") if p.is_file() and "Marker" not in p.name)
    assert written and written == sorted(
        p.name for p in (exact_out / "navigation").rglob("*") if p.is_file() and "Marker" not in p.name)
    for name in ("sub-01_candidates.json",):
        markers = json.loads((out / "navigation" / name).read_text())["markers"]
        reference = json.loads((exact_out / "navigation" / name).read_text())["markers"]
        np.testing.assert_allclose([m["pose_ras"] for m in markers], [m["pose_ras"] for m in reference], atol=1e-6)


# ---------------------------------------------------------------------------
# 2c: an oblique, anisotropic, left-handed T1
# ---------------------------------------------------------------------------

OBLIQUE_ROTATION = rotation(0, 15.0) @ rotation(1, -15.0)
#: storage axes: i -> anterior, j -> superior, k -> left (sagittal-first, left-handed)
OBLIQUE_AXES = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
OBLIQUE_ZOOMS = np.array([1.0, 1.4, 2.6])


def make_oblique_t1(path):
    """The sample head resampled onto the oblique grid (same world); returns the path."""
    data, affine = _sample()
    direction = OBLIQUE_ROTATION @ OBLIQUE_AXES
    head_world = apply_affine(affine, np.argwhere(data > 0))
    local = head_world @ direction  # grid-axis coordinates (mm) of every head voxel
    lo, hi = local.min(axis=0) - 8.0, local.max(axis=0) + 8.0
    shape = tuple(int(n) for n in np.ceil((hi - lo) / OBLIQUE_ZOOMS) + 1)
    oblique = np.eye(4)
    oblique[:3, :3] = direction @ np.diag(OBLIQUE_ZOOMS)
    oblique[:3, 3] = direction @ lo
    to_sample = np.linalg.inv(affine) @ oblique
    resampled = ndimage.affine_transform(data.astype(np.float32), to_sample[:3, :3], to_sample[:3, 3],
                                         output_shape=shape, order=1, mode="constant")
    img = nib.Nifti1Image(resampled, oblique)
    img.set_sform(oblique, code=1)
    img.set_qform(oblique, code=1)
    nib.save(img, path)
    return path


@pytest.fixture(scope="module")
def oblique_t1(tmp_path_factory):
    return make_oblique_t1(tmp_path_factory.mktemp("oblique_t1") / "t1_oblique.nii.gz")


@pytest.fixture(scope="module")
def oblique_plan(oblique_t1, tmp_path_factory):
    """``plan sample_data --t1 OBLIQUE --protocol sgacc-dlpfc`` (a left-DLPFC target: handle rule 45 deg)."""
    code, document, err = _plan(oblique_t1, tmp_path_factory.mktemp("oblique") / "plan", "--navigation", "none",
                                protocol="sgacc-dlpfc")
    assert code == 0, err
    return oblique_t1, document


def test_oblique_fixture_is_oblique_and_holds_the_same_head(oblique_t1):
    img = nib.load(oblique_t1)
    affine = img.affine
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    np.testing.assert_allclose(zooms, OBLIQUE_ZOOMS, atol=1e-5)
    assert np.linalg.det(affine[:3, :3]) < 0
    directions = affine[:3, :3] / zooms
    # every voxel axis is at least 15 deg away from every world axis
    assert np.degrees(np.arccos(np.abs(directions).max())) > 14.9
    data, sample_affine = _sample()
    sample_centroid = apply_affine(sample_affine, np.argwhere(data > 0.1 * data.max()).mean(axis=0))[0]
    oblique_data = np.asarray(img.dataobj)
    oblique_centroid = apply_affine(affine, np.argwhere(oblique_data > 0.1 * oblique_data.max()).mean(axis=0))[0]
    assert np.linalg.norm(oblique_centroid - sample_centroid) < 1.0


@pytest.mark.slow
def test_oblique_t1_coil_on_its_scalp_and_aimed_at_the_target(oblique_plan):
    t1, document = oblique_plan
    img = nib.load(t1)
    # the head surface of the oblique file, through its own affine ...
    _assert_coil_on_surface_and_aimed(document, _head_surface(img.dataobj, img.affine), "oblique T1")
    # ... and the sample's, on its plain 2-mm grid: the same head in the same world
    data, affine = _sample()
    _assert_coil_on_surface_and_aimed(document, _head_surface(data, affine), "oblique T1 vs sample head")


@pytest.mark.slow
def test_oblique_t1_handle_follows_the_dlpfc_rule(oblique_plan):
    """Left DLPFC target: handle (= -y) posterior and lateral (left) in world RAS, coil z into the head."""
    _, document = oblique_plan
    target = np.asarray(document["target"]["ras_mm"])
    assert target[0] < -20.0
    pose = np.asarray(document["coil"]["matrix"])
    handle = -pose[:3, 1]
    assert handle[0] < -0.3 and handle[1] < -0.3, handle
    np.testing.assert_allclose(document["coil"]["handle_direction"], handle, atol=1e-9)
    np.testing.assert_allclose(pose[:3, :3].T @ pose[:3, :3], np.eye(3), atol=1e-9)
    assert np.linalg.det(pose[:3, :3]) > 0.999
