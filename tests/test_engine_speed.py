"""The engine's fast paths (issue 19) give the numbers of the plain computation, bit for bit.

* the BOLD read, cast and smoothed in chunks of volumes on several threads equals smoothing the whole
  float32 block at once with scipy's ``gaussian_filter1d`` and nilearn's sigma (values and memory layout),
  and a non-finite value is still reported at its volume;
* spheres tested only in their index box give the voxels of the whole-grid test;
* the grey-matter probability of a grid comes back from the cache folder equal to nilearn's resampling;
  a damaged or foreign entry is ignored and computed again, ``TMSTARGET_CACHE_DIR=off`` writes nothing;
* the program sets OpenBLAS's thread timeout before numpy loads (a user's value wins) and freezes its objects
  out of garbage collection before the exit; ``main()`` called in-process does not.
"""

import logging

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from tmstarget.analysis import rois, voxels
from tmstarget.anatomy import t1_cache
from tmstarget.errors import InputError

FWHM_TO_SIGMA = 1.0 / np.sqrt(8.0 * np.log(2.0))


def _whole_block_reference(data, affine, mask, first_frame, fwhm_mm):
    """Smoothed series of the mask's voxels: the whole image at once, one thread (nilearn's kernel)."""
    block = np.asarray(data[..., first_frame:], dtype=np.float32).copy()
    voxel_mm = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    for axis, sigma in enumerate(fwhm_mm * FWHM_TO_SIGMA / voxel_mm):
        gaussian_filter1d(block, sigma, axis=axis, output=block)
    ijk = np.argwhere(mask.T)[:, ::-1]  # the VoxelSet's column order: i fastest
    return block[tuple(ijk.T)].T


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_chunked_threaded_smoothing_equals_the_whole_block(rng, monkeypatch, threads):
    monkeypatch.setattr(voxels, "worker_count", lambda: threads)
    # 21 frames after 2 dummies: chunks of 8, 8 and 5 volumes; anisotropic voxels, mask on the grid's edge
    shape = (13, 11, 9, 23)
    affine = np.diag([3.0, 2.5, 2.0, 1.0])
    data = (rng.standard_normal(shape) * 300 + 1000).astype(np.int16)
    mask = np.zeros(shape[:3], dtype=bool)
    mask[0:7, 3:9, 2:8] = True
    img = nib.Nifti1Image(data, affine)
    voxel_set = voxels.VoxelSet(mask, affine)
    raw_cols = np.array([0, 5, 17, len(voxel_set) - 1])
    smoothed, raw = voxels.read_voxel_timeseries(img, voxel_set, first_frame=2, fwhm_mm=6.0, raw_columns=raw_cols)
    expected = _whole_block_reference(data, affine, mask, 2, 6.0)
    assert smoothed.shape == (21, len(voxel_set)) and smoothed.dtype == np.float32
    assert np.array_equal(smoothed, expected)
    assert smoothed.flags.f_contiguous and raw.flags.f_contiguous  # column-major, as the whole-block indexing
    assert np.array_equal(raw, data[tuple(voxel_set.ijk[raw_cols].T)][:, 2:].T.astype(np.float32))
    # the per-volume path of the real-time watcher gives the same frame
    assert np.array_equal(voxels.smoothed_volume_values(data[..., 20], voxel_set, 6.0), expected[18])


def test_a_scaled_image_read_on_threads_equals_the_whole_block_and_leaves_warnings_alone(rng, monkeypatch,
                                                                                          tmp_path):
    import warnings

    monkeypatch.setattr(voxels, "worker_count", lambda: 3)
    data = (rng.standard_normal((12, 10, 9, 40)) * 300).astype(np.int16)
    img = nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.5, 1.0]))
    img.header.set_slope_inter(0.37, 12.5)  # nibabel scales on read (and sets warnings filters while it does)
    nib.save(img, tmp_path / "scaled.nii.gz")
    img = nib.load(tmp_path / "scaled.nii.gz")
    mask = np.zeros(data.shape[:3], dtype=bool)
    mask[2:10, 1:9, 1:8] = True
    before = list(warnings.filters)
    for _ in range(3):
        smoothed, _ = voxels.read_voxel_timeseries(img, voxels.VoxelSet(mask, img.affine), first_frame=1,
                                                   fwhm_mm=5.0)
    assert warnings.filters == before
    expected = _whole_block_reference(np.asarray(img.dataobj), img.affine, mask, 1, 5.0)
    assert np.array_equal(smoothed, expected) and not np.array_equal(np.asarray(img.dataobj)[..., 1:], data[..., 1:])


def test_a_nan_in_a_later_chunk_names_its_volume(rng, monkeypatch):
    monkeypatch.setattr(voxels, "worker_count", lambda: 2)
    data = rng.standard_normal((8, 8, 8, 30)).astype(np.float32)
    data[4, 4, 4, 19] = np.nan  # inside the mask; frame 17 after 2 dummies: the third chunk
    data[0, 0, 0, 3] = np.inf  # outside the mask: set to 0 as nilearn does, no error
    mask = np.zeros((8, 8, 8), dtype=bool)
    mask[2:6, 2:6, 2:6] = True
    img = nib.Nifti1Image(data, np.eye(4))
    with pytest.raises(InputError, match=r"voxel \(4, 4, 4\).*volume 19|volume 19.*voxel \(4, 4, 4\)"):
        voxels.read_voxel_timeseries(img, voxels.VoxelSet(mask, np.eye(4)), first_frame=2, fwhm_mm=4.0)


GRID = (np.diag([4.0, 4.0, 4.0, 1.0]) + np.array([[0, 0, 0, -90], [0, 0, 0, -126], [0, 0, 0, -72], [0, 0, 0, 0]]),
        (46, 55, 46))


@pytest.fixture
def gm_cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(t1_cache.ENV, str(folder))
    rois._gm_probability.cache_clear()  # the in-process memo would hide the folder
    yield folder
    rois._gm_probability.cache_clear()


def _computed_by_nilearn(affine, shape):
    from nilearn import datasets, image

    resampled = image.resample_img(datasets.load_mni152_gm_template(resolution=1), target_affine=affine,
                                   target_shape=shape, interpolation="linear", force_resample=True, copy_header=True)
    return np.asarray(resampled.get_fdata(), dtype=np.float32)


def test_grey_matter_probability_from_the_cache_equals_nilearns(gm_cache):
    affine, shape = GRID
    reference = _computed_by_nilearn(affine, shape)
    first = rois.grey_matter_mask(shape, affine, 0.2)
    (entry,) = gm_cache.glob("gm_probability-*.npz")
    rois._gm_probability.cache_clear()
    again = rois._gm_probability(shape, affine.tobytes())  # read from the folder
    assert again.dtype == np.float32 and again.tobytes() == reference.tobytes()
    assert np.array_equal(first, reference > 0.2) and 0 < first.sum() < first.size
    other = affine.copy()
    other[0, 3] += 4.0  # another grid: another entry, another map
    assert not np.array_equal(rois._gm_probability(shape, other.tobytes()), reference)
    assert len(list(gm_cache.glob("gm_probability-*.npz"))) == 2 and entry.is_file()


def test_a_damaged_grey_matter_entry_is_recomputed(gm_cache, caplog):
    affine, shape = GRID
    reference = rois._gm_probability(shape, affine.tobytes()).copy()
    (entry,) = gm_cache.glob("gm_probability-*.npz")
    for damage in (entry.read_bytes()[:500], None):
        if damage is None:  # a readable entry of the wrong grid shape (e.g. written by another version)
            with open(entry, "wb") as handle:
                np.savez(handle, probability=np.zeros((3, 3, 3), dtype=np.float32))
        else:
            entry.write_bytes(damage)
        rois._gm_probability.cache_clear()
        with caplog.at_level(logging.WARNING):
            assert rois._gm_probability(shape, affine.tobytes()).tobytes() == reference.tobytes()
        rois._gm_probability.cache_clear()
        assert rois._gm_probability(shape, affine.tobytes()).tobytes() == reference.tobytes()  # rewritten whole
    assert "ignoring the cache entry" in caplog.text


def test_grey_matter_cache_off_writes_nothing(gm_cache, monkeypatch):
    monkeypatch.setenv(t1_cache.ENV, "off")
    affine, shape = GRID
    assert rois.grey_matter_mask(shape, affine).any()
    assert not gm_cache.exists()


def test_balls_tested_in_their_box_equal_the_whole_grid_test(rng):
    # oblique, sheared and flipped affines; centres on voxel centres, off the grid, radius 0
    for case in range(60):
        shape = tuple(int(n) for n in rng.integers(5, 30, 3))
        affine = np.diag(list(rng.uniform(0.7, 4.0, 3)) + [1.0])
        if case % 2:
            affine[:3, :3] = affine[:3, :3] @ (np.eye(3) + rng.normal(0, 0.4, (3, 3)))
        affine[:3, 3] = rng.uniform(-60, 60, 3)
        centres = rng.uniform(-80, 80, (3, 3))
        centres[0] = affine[:3, :3] @ rng.integers(0, 5, 3) + affine[:3, 3]
        radius = float(rng.choice([0.0, 1.0, 2.5, 3.0, 6.0, 25.0]))
        ijk = np.indices(shape).reshape(3, -1).T
        xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
        expected = np.zeros(shape, dtype=bool)
        for centre in centres:
            expected |= (np.sum((xyz - centre) ** 2, axis=1) <= radius**2 + 1e-6).reshape(shape)
        assert np.array_equal(rois.ball_mask(shape, affine, centres, radius), expected), case


def _program(code, **env):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    environ = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo,
                          env={**environ, "PYTHONPATH": str(repo), **env})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


def test_the_program_lets_blas_threads_sleep_before_numpy_loads_and_the_user_wins():
    # OpenBLAS reads the variable once, when numpy loads it: it must be set before
    code = ("import os, sys\nimport tmstarget.cli.main as cli\nseen = []\n"
            "real = cli.avoid_hugepage_stalls\n"
            "cli.avoid_hugepage_stalls = lambda: (seen.append('numpy' in sys.modules), real())\n"
            "cli.main(['protocols'])\nprint(seen, os.environ.get('OPENBLAS_THREAD_TIMEOUT'))")
    assert _program(code)[-1] == "[False] 4"
    assert _program(code, OPENBLAS_THREAD_TIMEOUT="20")[-1] == "[False] 20"


def test_the_program_freezes_its_objects_for_a_quick_exit_and_main_does_not():
    report = "import atexit, gc\natexit.register(lambda: print('frozen', gc.get_freeze_count() > 0))\n"
    program = report + "import sys\nsys.argv = ['tmstarget', 'protocols']\nfrom tmstarget.cli.main import console\n" \
        "console()"
    assert _program(program)[-1] == "frozen True"
    in_process = report + "from tmstarget.cli.main import main\nmain(['protocols'])"
    assert _program(in_process)[-1] == "frozen False"
