"""Registrations and point mapping: ITK/ANTs directions, RAS/LPS, fMRIPrep files."""

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

ants = pytest.importorskip("ants")

from tmstarget.anatomy.registration import (  # noqa: E402
    MNI_SPACE,
    Transform,
    compose,
    coregister_epi_to_t1,
    map_points,
    mni_template,
    nuisance_masks,
    read_fmriprep_transforms,
    register_t1_to_mni,
    save_transform,
    warp_image,
)
from tmstarget.errors import InputError  # noqa: E402

# ---------------------------------------------------------------- frames


def test_transform_refuses_inverting_a_warp():
    with pytest.raises(InputError, match="cannot be inverted"):
        Transform("T1w", MNI_SPACE, ("a_Warp.nii.gz",), (True,))
    with pytest.raises(InputError, match="has 1 entries"):
        Transform("T1w", MNI_SPACE, ("a.mat",), ())


def test_compose_checks_frames_and_orders_lists():
    epi2t1 = Transform("boldref", "T1w", ("e.mat",), (False,), ("e.mat",), (True,))
    t12mni = Transform("T1w", MNI_SPACE, ("W.nii.gz", "a.mat"), (False, False),
                       ("a.mat", "IW.nii.gz"), (True, False))
    chained = compose(epi2t1, t12mni)
    assert (chained.from_space, chained.to_space) == ("boldref", MNI_SPACE)
    # Resampling an EPI image into MNI: MNI points go through the T1 -> MNI
    # list first, then the EPI -> T1 one (first listed = first applied to points).
    assert chained.fwd_files == ("W.nii.gz", "a.mat", "e.mat")
    assert chained.inv_files == ("e.mat", "a.mat", "IW.nii.gz")
    assert chained.inv_invert == (True, True, False)
    with pytest.raises(InputError, match=f"first ends in '{MNI_SPACE}'"):
        compose(t12mni, epi2t1)
    assert chained.inverse().from_space == MNI_SPACE


def test_map_points_bad_input():
    tx = Transform("T1w", MNI_SPACE, ("missing.mat",), (False,))
    with pytest.raises(InputError, match="missing"):
        map_points(np.zeros((2, 3)), tx, "forward")  # needs the inverse list
    with pytest.raises(InputError, match="not found"):
        map_points(np.zeros((2, 3)), tx, "inverse")
    with pytest.raises(InputError, match="direction"):
        map_points(np.zeros(3), tx, "backward")
    with pytest.raises(InputError, match=r"\(N, 3\)"):
        map_points(np.zeros((2, 2)), tx, "inverse")


# ------------------------------------------------------ synthetic rigid shift

SHIFT_RAS = np.array([6.0, -4.0, 3.0])  # x and y non-zero: a missing LPS flip fails


def _blob_image(shape, affine, shift_ras=np.zeros(3), seed=0):
    """Smooth blobs in world space; ``shift_ras`` moves the content."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform([-30, -40, -30], [30, 40, 30], (25, 3))
    widths = rng.uniform(5, 10, 25)
    ijk = np.indices(shape).reshape(3, -1).astype(float)
    xyz = affine[:3, :3] @ ijk + affine[:3, 3:] - shift_ras[:, None]
    data = np.zeros(xyz.shape[1])
    for c, w in zip(centres, widths):
        data += np.exp(-np.sum((xyz - c[:, None]) ** 2, axis=0) / (2 * w * w))
    # a bright off-centre landmark
    data += 3 * np.exp(-np.sum((xyz - np.array([[12.0], [18.0], [-10.0]])) ** 2, axis=0) / 8.0)
    return nib.Nifti1Image((100 * data).reshape(shape).astype(np.float32), affine)


@pytest.fixture(scope="module")
def shifted_pair(tmp_path_factory):
    """T1-like RAS image and an EPI-like LAS image whose content sits +SHIFT_RAS away."""
    ras = np.diag([2.0, 2.0, 2.0, 1.0])
    ras[:3, 3] = [-48, -56, -44]
    las = np.diag([-2.5, 2.5, 2.5, 1.0])
    las[:3, 3] = [50, -55, -45]
    t1 = _blob_image((48, 56, 44), ras)
    epi = _blob_image((40, 44, 36), las, SHIFT_RAS)
    tx = coregister_epi_to_t1(epi, t1, workdir=tmp_path_factory.mktemp("rigid"))
    return t1, epi, tx


def test_rigid_recovers_shift_and_direction(shifted_pair):
    t1, epi, tx = shifted_pair
    assert (tx.from_space, tx.to_space) == ("boldref", "T1w")
    p_t1 = np.array([[12.0, 18.0, -10.0], [-20.0, 5.0, 15.0], [0.0, -30.0, 0.0]])
    p_epi = p_t1 + SHIFT_RAS  # the same tissue in the EPI world
    np.testing.assert_allclose(map_points(p_t1, tx, "inverse"), p_epi, atol=0.5)
    np.testing.assert_allclose(map_points(p_epi, tx, "forward"), p_t1, atol=0.5)
    # Using the list meant for images on points lands 2 x the shift away.
    wrong = Transform(tx.from_space, tx.to_space, tx.inv_files, tx.inv_invert, tx.fwd_files, tx.fwd_invert)
    off = np.linalg.norm(map_points(p_t1, wrong, "inverse") - p_epi, axis=1)
    np.testing.assert_allclose(off, 2 * np.linalg.norm(SHIFT_RAS), atol=1.0)


def test_landmark_lands_on_landmark(shifted_pair):
    t1, epi, tx = shifted_pair
    # Find the bright landmark in each image independently (argmax, world mm).
    def peak_ras(img):
        ijk = np.unravel_index(np.argmax(img.get_fdata()), img.shape)
        return nib.affines.apply_affine(img.affine, ijk)

    mapped = map_points(peak_ras(t1), tx, "inverse")
    assert np.linalg.norm(mapped - peak_ras(epi)) < 2.0  # one 2.5-mm voxel of argmax quantisation


def test_warp_image_matches_fixed(shifted_pair):
    t1, epi, tx = shifted_pair
    warped = warp_image(epi, tx, t1)
    assert warped.shape == t1.shape
    np.testing.assert_allclose(warped.affine, t1.affine, atol=1e-4)
    inner = (slice(6, -6),) * 3
    r = np.corrcoef(warped.get_fdata()[inner].ravel(), t1.get_fdata()[inner].ravel())[0, 1]
    assert r > 0.99
    labels = nib.Nifti1Image((t1.get_fdata() > 80).astype(np.int16) * 7, t1.affine)
    back = warp_image(labels, tx, epi, direction="inverse", interpolation="nearest")
    assert back.get_data_dtype() == np.int16
    assert set(np.unique(back.get_fdata())) <= {0, 7}


def test_save_transform_keeps_mapping(shifted_pair, tmp_path):
    _, _, tx = shifted_pair
    kept = save_transform(tx, tmp_path, "sub-01_from-boldref_to-T1w")
    assert all(str(tmp_path) in f for f in kept.fwd_files + kept.inv_files)
    p = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(map_points(p, kept, "forward"), map_points(p, tx, "forward"), atol=1e-6)


# --------------------------------------------------------- fMRIPrep files


@pytest.fixture(scope="module")
def fmriprep_files(tmp_path_factory):
    """Composite .h5 files written by antsRegistration, named as fMRIPrep names them.

    fixed = "MNI" image, moving = "T1w" image whose content sits +SHIFT_RAS away;
    Composite.h5 resamples T1w images onto MNI = from-T1w_to-MNI..._mode-image.
    """
    folder = tmp_path_factory.mktemp("fmriprep")
    ras = np.diag([2.0, 2.0, 2.0, 1.0])
    ras[:3, 3] = [-48, -56, -44]
    mni = _blob_image((48, 56, 44), ras)
    t1 = _blob_image((48, 56, 44), ras, SHIFT_RAS)
    paths = []
    for img, name in ((mni, "mni"), (t1, "t1")):
        path = folder / f"{name}.nii.gz"
        nib.save(img, path)
        paths.append(ants.image_read(str(path)))
    reg = ants.registration(paths[0], paths[1], "SyN", write_composite_transform=True,
                            outprefix=str(folder / "reg_"), reg_iterations=(20, 10, 0))
    t1_to_mni = folder / f"sub-01_from-T1w_to-{MNI_SPACE}_mode-image_xfm.h5"
    mni_to_t1 = folder / f"sub-01_from-{MNI_SPACE}_to-T1w_mode-image_xfm.h5"
    shutil.copy(reg["fwdtransforms"], t1_to_mni)
    shutil.copy(reg["invtransforms"], mni_to_t1)
    return t1_to_mni, mni_to_t1


def test_fmriprep_mni_point_to_t1(fmriprep_files):
    t1_to_mni, mni_to_t1 = fmriprep_files
    p_mni = np.array([[12.0, 18.0, -10.0], [-10.0, 0.0, 10.0]])
    # An MNI point reaches the T1 through from-T1w_to-MNI (spec §4 worked example).
    tx = read_fmriprep_transforms([t1_to_mni])
    assert (tx.from_space, tx.to_space) == ("T1w", MNI_SPACE)
    np.testing.assert_allclose(map_points(p_mni, tx, "inverse"), p_mni + SHIFT_RAS, atol=1.0)
    with pytest.raises(InputError, match=f"from-{MNI_SPACE}_to-T1w"):
        map_points(p_mni, tx, "forward")
    # The other file alone (MNI -> T1w image resampling) maps T1 points to MNI.
    other = read_fmriprep_transforms(mni_to_t1)
    assert (other.from_space, other.to_space) == (MNI_SPACE, "T1w")
    np.testing.assert_allclose(map_points(p_mni + SHIFT_RAS, other, "inverse"), p_mni, atol=1.0)
    both = read_fmriprep_transforms([t1_to_mni, mni_to_t1])
    round_trip = map_points(map_points(p_mni, both, "inverse"), both, "forward")
    np.testing.assert_allclose(round_trip, p_mni, atol=0.5)


def test_fmriprep_name_checks(fmriprep_files, tmp_path):
    t1_to_mni, _ = fmriprep_files
    with pytest.raises(InputError, match="the second file must go"):
        read_fmriprep_transforms([t1_to_mni, t1_to_mni])
    bad = tmp_path / "transform.h5"
    bad.write_bytes(b"")
    with pytest.raises(InputError, match="not an fMRIPrep transform name"):
        read_fmriprep_transforms([bad])


# ------------------------------------------------------ real T1 -> MNI (SyN)


@pytest.fixture(scope="module")
def t1_to_mni(shared_data, tmp_path_factory):
    t1_path = shared_data / "pydecnef-sub1" / "anat" / "T1w.nii.gz"
    return t1_path, register_t1_to_mni(t1_path, workdir=tmp_path_factory.mktemp("syn"))


@pytest.mark.slow
def test_a_t1_registered_before_comes_from_the_cache_byte_identical(t1_to_mni, tmp_path):
    """Issue 19: the second registration of the same T1 (same voxels and affine) copies the cached files into its
    own folder, the same bytes as computed; a damaged entry is computed again (deterministic: the same bytes)."""
    import time

    import nibabel as nib

    from tmstarget.anatomy import t1_cache

    t1_path, first = t1_to_mni
    start = time.perf_counter()
    again = register_t1_to_mni(nib.load(t1_path), workdir=tmp_path / "again")  # an image, not the path
    assert time.perf_counter() - start < 20.0  # a registration takes about a minute
    for a, b in zip((*first.fwd_files, *first.inv_files), (*again.fwd_files, *again.inv_files)):
        assert Path(b).is_relative_to(tmp_path / "again") and Path(a).read_bytes() == Path(b).read_bytes()
    assert (again.fwd_invert, again.inv_invert) == (first.fwd_invert, first.inv_invert)
    # the session's cache holds other T1s' entries too: damage this T1's warp (the bytes computed first)
    first_warp = next(Path(f) for f in first.fwd_files if str(f).endswith("1Warp.nii.gz")).read_bytes()
    (warp,) = [w for w in t1_cache.cache_dir().glob("t1_to_mni-*/**/*1Warp.nii.gz") if w.read_bytes() == first_warp]
    warp.write_bytes(warp.read_bytes()[:100])  # damaged: ignored, computed again, stored again
    third = register_t1_to_mni(t1_path, workdir=tmp_path / "third")
    for a, b in zip(first.fwd_files, third.fwd_files):
        assert Path(a).read_bytes() == Path(b).read_bytes()


MNI_POINTS = np.array([
    [-38.0, 44.0, 26.0],  # Fox 2012 DLPFC optimum
    [6.0, 16.0, -10.0],  # sgACC seed
    [-41.0, 16.0, 54.0],  # 5-cm rule site
    [0.0, -52.0, 26.0],  # PCC
    [30.0, -20.0, 50.0],
])


@pytest.mark.slow
def test_real_mni_t1_round_trip(t1_to_mni):
    _, tx = t1_to_mni
    in_t1 = map_points(MNI_POINTS, tx, "inverse")
    back = map_points(in_t1, tx, "forward")
    assert np.linalg.norm(back - MNI_POINTS, axis=1).max() < 2.0
    # The T1 world is not MNI: a transform used the wrong way round is caught.
    assert np.linalg.norm(in_t1 - MNI_POINTS, axis=1).min() > 5.0


@pytest.mark.slow
def test_real_points_agree_with_image_warp(t1_to_mni, tmp_path):
    """Point map vs ANTs' own image resampling of a coordinate image.

    A T1-grid image whose value is the voxel's RAS coordinate, resampled into
    MNI by ANTs with the image list, holds at each MNI voxel the T1 point that
    voxel came from; map_points must return the same point.
    """
    t1_path, tx = t1_to_mni
    t1 = nib.load(t1_path)
    affine = t1.affine.copy()
    affine[:3, :3] *= 2.0  # a 2-mm grid over the same field of view
    shape = tuple(int(n) // 2 for n in t1.shape)
    ijk = np.indices(shape).reshape(3, -1)
    ras = nib.affines.apply_affine(affine, ijk.T).T
    template_path = tmp_path / "mni.nii.gz"
    nib.save(mni_template(2), template_path)
    fixed = ants.image_read(str(template_path))
    rng = np.random.default_rng(0)
    mni_ijk = np.stack([rng.integers(30, 70, 20), rng.integers(30, 85, 20), rng.integers(30, 65, 20)], axis=1)
    mni_ras = nib.affines.apply_affine(mni_template(2).affine, mni_ijk)
    expected = np.empty((20, 3))
    for axis in range(3):
        path = tmp_path / f"coord{axis}.nii.gz"
        nib.save(nib.Nifti1Image(ras[axis].reshape(shape).astype(np.float32), affine), path)
        warped = ants.apply_transforms(fixed, ants.image_read(str(path)), list(tx.fwd_files),
                                       whichtoinvert=list(tx.fwd_invert))
        expected[:, axis] = warped.numpy()[tuple(mni_ijk.T)]
    got = map_points(mni_ras, tx, "inverse")
    np.testing.assert_allclose(got, expected, atol=0.5)


@pytest.mark.slow
def test_real_nuisance_masks_hit_tissue(t1_to_mni):
    t1_path, tx = t1_to_mni
    t1 = nib.load(t1_path)
    masks = nuisance_masks(tx, t1)
    data = t1.get_fdata()
    wm = np.median(data[masks["wm"].get_fdata() > 0])
    csf = np.median(data[masks["csf"].get_fdata() > 0])
    # T1 contrast: white matter bright, CSF dark.
    assert wm > 3 * csf
    assert masks["wm"].get_fdata().sum() > 50_000  # voxels of 1 mm^3
    with pytest.raises(InputError, match="does not bring"):
        nuisance_masks(tx, t1, direction="forward")


# ------------------------------------------- determinism (issue 14 item 2)


def test_registration_is_deterministic(tmp_path):
    """The same rigid coregistration twice gives byte-identical transform files.

    Unseeded and multi-threaded, ANTs' sampled Mattes metric gave a different .mat on every run
    (measured: three runs, three different files); here it runs in a single-threaded, seeded
    child process, and the parent process's environment is left as it was.
    """
    import os

    ras = np.diag([2.0, 2.0, 2.0, 1.0])
    ras[:3, 3] = [-48, -56, -44]
    las = np.diag([-2.5, 2.5, 2.5, 1.0])
    las[:3, 3] = [50, -55, -45]
    t1, epi = _blob_image((48, 56, 44), ras), _blob_image((40, 44, 36), las, SHIFT_RAS)
    before = dict(os.environ)
    runs = [coregister_epi_to_t1(epi, t1, workdir=tmp_path / f"run{k}") for k in range(2)]
    assert dict(os.environ) == before
    for first, second in zip(runs[0].fwd_files + runs[0].inv_files, runs[1].fwd_files + runs[1].inv_files):
        assert first != second  # two files written, not one read twice
        assert Path(first).read_bytes() == Path(second).read_bytes(), Path(first).name


def test_an_error_in_the_registration_process_is_raised_here(tmp_path):
    """A bad input fails in the child process; the same error class and message reach the caller."""
    flat = nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), np.eye(4))
    with pytest.raises(InputError, match="expected a 3-D image"):
        coregister_epi_to_t1(flat, flat, workdir=tmp_path)


# ------------------------------------- registration accuracy (issue 21)
#
# The sample patient's T1 is nilearn's MNI template with a synthetic skull and scalp (a whole head
# whose world is MNI); nilearn's template itself is the same brain without them (brain only). Each
# registered to the template must map MNI points onto themselves; under a known affine distortion
# D (the image's affine multiplied by D, so the tissue at MNI p sits at D p: no resampling) they
# must land on D p.

SAMPLE_T1 = (Path(__file__).resolve().parents[1] / "sample_data" / "derivatives" / "fmriprep" / "sub-01" / "anat"
             / "sub-01_space-MNI152NLin2009cAsym_desc-preproc_T1w.nii.gz")

#: MNI points checked: the DLPFC (Fox 2012) and dMPFC (rumination protocol) targets, sgACC, PCC,
#: the 5-cm rule site, a motor point and a temporal one.
ACCURACY_POINTS = np.array([
    [-38.0, 44.0, 26.0],
    [0.0, 44.0, 40.0],
    [6.0, 16.0, -10.0],
    [0.0, -52.0, 26.0],
    [-41.0, 16.0, 54.0],
    [30.0, -20.0, 50.0],
    [50.0, -20.0, -10.0],
])


def _distortion():
    """Rotations of 8, -6 and 5 degrees about x, y, z after scalings of 1.05, 0.96, 1.03; a shift of (4, -6, 5) mm."""
    from rigid import rotation

    matrix = np.eye(4)
    matrix[:3, :3] = rotation(0, 8.0) @ rotation(1, -6.0) @ rotation(2, 5.0) @ np.diag([1.05, 0.96, 1.03])
    matrix[:3, 3] = [4.0, -6.0, 5.0]
    return matrix


def _distorted(img, matrix):
    out = nib.Nifti1Image(np.asarray(img.dataobj), matrix @ img.affine)
    out.set_qform(out.affine, code=1)
    out.set_sform(out.affine, code=1)
    return out


def _errors_mm(tx, expected_t1):
    return np.linalg.norm(map_points(ACCURACY_POINTS, tx, "inverse") - expected_t1, axis=1)


@pytest.mark.slow
@pytest.mark.parametrize("head", ["whole-head", "brain-only"])
def test_template_registered_to_itself_maps_points_within_1mm(head, tmp_path):
    img = nib.load(SAMPLE_T1) if head == "whole-head" else mni_template(1)
    tx = register_t1_to_mni(img, workdir=tmp_path, brain_only=head == "brain-only")
    errors = _errors_mm(tx, ACCURACY_POINTS)
    assert errors.max() < 1.0, f"{head}: MNI points moved by {np.round(errors, 2).tolist()} mm"


@pytest.mark.slow
@pytest.mark.parametrize("head", ["whole-head", "brain-only"])
def test_affine_distortion_is_recovered_within_2mm(head, tmp_path):
    from rigid import apply_affine

    matrix = _distortion()
    img = nib.load(SAMPLE_T1) if head == "whole-head" else mni_template(1)
    tx = register_t1_to_mni(_distorted(img, matrix), workdir=tmp_path, brain_only=head == "brain-only")
    expected = apply_affine(matrix, ACCURACY_POINTS)
    errors = _errors_mm(tx, expected)
    assert errors.max() < 2.0, f"{head}: MNI points off by {np.round(errors, 2).tolist()} mm"
    # the distortion is large enough that ignoring it fails
    assert np.linalg.norm(expected - ACCURACY_POINTS, axis=1).min() > 4.0
