"""What makes a native plan fast without changing a number (issue 19).

* :meth:`NativeGrid.nearest` brings every MNI mask onto the EPI grid through one map of the voxel
  nearest neighbour picks: checked against ANTs warping each mask itself (antspyx directly).
* The registrations start in processes of their own: a plan that fails meanwhile ends them.
* nilearn's resampled MNI152 images come back from the cache with the same voxels, affine and type.
"""

import time

import nibabel as nib
import numpy as np
import pytest

ants = pytest.importorskip("ants")

from tmstarget.analysis.rois import ball_mask  # noqa: E402
from tmstarget.anatomy import registration, t1_cache  # noqa: E402
from tmstarget.anatomy.registration import MNI_SPACE, Transform, mni_template  # noqa: E402
from tmstarget.errors import InputError  # noqa: E402
from tmstarget.workflows.native import NativeGrid  # noqa: E402


def _epi_to_mni(tmp_path):
    """An affine EPI -> MNI transform (rotation 10 deg about x and 6 about z, shift) as an ITK .mat."""
    a, b = np.radians(10.0), np.radians(6.0)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    matrix = ants.create_ants_transform(transform_type="AffineTransform", dimension=3,
                                        matrix=(rz @ rx).tolist(), translation=[4.0, -7.0, 3.0])
    path = tmp_path / "epi2mni.mat"
    ants.write_transform(matrix, str(path))
    return Transform("boldref", MNI_SPACE, (str(path),), (False,), (str(path),), (True,))


def _epi_grid():
    """A 3 x 3 x 3.5 mm oblique EPI grid over the head (world = MNI-like mm)."""
    affine = np.diag([3.0, 3.0, 3.5, 1.0])
    tilt = np.radians(8.0)
    affine[:3, :3] = np.array([[1, 0, 0], [0, np.cos(tilt), -np.sin(tilt)], [0, np.sin(tilt), np.cos(tilt)]]) \
        @ affine[:3, :3]
    affine[:3, 3] = [-96.0, -120.0, -50.0]
    return nib.Nifti1Image(np.zeros((64, 72, 40), np.float32), affine)


def test_nearest_voxel_map_gives_the_masks_ants_gives(tmp_path):
    grid = NativeGrid(_epi_grid(), _epi_to_mni(tmp_path))
    template = mni_template(2)
    rng = np.random.default_rng(3)
    masks = [ball_mask(template.shape, template.affine, rng.uniform([-60, -90, -30], [60, 60, 70], (n, 3)), r)
             for n, r in ((1, 4.0), (2, 10.0), (1, 20.0), (3, 7.5))]
    masks.append(registration.mni_brain_mask(2).get_fdata() > 0)
    for mask in masks:
        img = nib.Nifti1Image(mask.astype(np.uint8), template.affine)
        reference = registration.warp_image(img, grid.transform, grid.reference, "inverse", "nearest")
        expected = np.asarray(reference.dataobj) > 0
        got = grid.nearest(mask)
        assert got.shape == expected.shape and got.dtype == bool
        assert expected.any()  # the mask reaches the EPI grid: the comparison is not between empty masks
        assert np.array_equal(got, expected)


def _children():
    """This process's ANTs child processes still alive."""
    psutil = pytest.importorskip("psutil")  # installed with dask's distributed

    alive = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "ants_process" in " ".join(child.cmdline()):
                alive.append(child)
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.mark.slow
def test_a_native_plan_failing_after_the_registration_started_ends_it(shared_data, tmp_path):
    from tmstarget.ingest.native import NativeRun
    from tmstarget.workflows.native import prepare_native

    t1 = nib.load(shared_data / "pydecnef-sub1" / "anat" / "T1w.nii.gz")
    data = np.asarray(t1.dataobj).copy()
    data[0, 0, 0] += 1  # a T1 no test registered before: the registration starts a process
    t1_path = tmp_path / "T1w.nii.gz"
    nib.save(nib.Nifti1Image(data, t1.affine, t1.header), t1_path)
    bold = nib.Nifti1Image(np.random.default_rng(0).normal(100, 1, (64, 64, 34, 3)).astype(np.float32),
                           np.diag([3.0, 3.0, 3.5, 1.0]))
    bold_path = tmp_path / "bold.nii.gz"
    nib.save(bold, bold_path)  # no sidecar: slice timing cannot be corrected, after the registration started
    running = []

    def progress(message):
        if message.startswith("correcting slice timing"):
            running.append(len(_children()))

    with pytest.raises(InputError, match="(?i)slice"):
        prepare_native([NativeRun(bold_path, "rest", "rest_run-1")], t1_path, tmp_path / "work", "01",
                       progress=progress, slice_timing=True)
    assert running and running[0] >= 1  # the registration process ran when the error came
    deadline = time.monotonic() + 10.0
    while _children() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _children() == []


def test_mni152_images_from_the_cache_equal_nilearns(tmp_path, monkeypatch):
    from nilearn import datasets

    monkeypatch.setenv(t1_cache.ENV, str(tmp_path / "cache"))
    load = registration._nilearn_mni152.__wrapped__  # past the per-process memo
    first = load("gm", 2)
    assert len(list((tmp_path / "cache").glob("mni152-*.npz"))) == 1
    again = load("gm", 2)  # from the cache file
    nilearn_img = datasets.load_mni152_gm_template(resolution=2)
    for img in (first, again):
        data = np.asarray(img.dataobj)
        assert data.dtype == np.asarray(nilearn_img.dataobj).dtype
        assert np.array_equal(data, np.asarray(nilearn_img.dataobj))
        assert np.array_equal(img.affine, nilearn_img.affine)
        assert img.get_data_dtype() == nilearn_img.get_data_dtype()
        assert not data.flags.writeable  # shared by the process: nobody may change it
