"""Cleaning: formulas from science.md §8 and equality with plain nilearn."""

import nibabel as nib
import numpy as np
from nilearn import image, signal
from numpy.testing import assert_allclose

from tmstarget.analysis.clean import cleaning_operator, task_regressors
from tmstarget.analysis.voxels import VoxelSet, read_voxel_timeseries
from tmstarget.anatomy.motion import fd_power, friston24


def test_fd_power_matches_science_fixture():
    rp = np.array([[0, 0, 0, 0, 0, 0], [0.1, 0, 0, 0, 0, 0], [0.1, 0, 0, 0.001, 0, 0]], dtype=float)
    assert_allclose(fd_power(rp), [0, 0.1, 0.05])
    step = np.array([[0] * 6, [0.1, 0.2, -0.1, 0.002, -0.001, 0.0015]], dtype=float)
    assert_allclose(fd_power(step)[1], 0.625)


def test_friston24_layout(rng):
    rp = rng.standard_normal((10, 6))
    f = friston24(rp)
    assert f.shape == (10, 24)
    assert_allclose(f[0, 6:12], 0)  # R_{t-1} of the first frame is a zero row
    assert_allclose(f[1:, 6:12], rp[:-1])  # lag, not derivative
    assert_allclose(f[:, 12:], f[:, :12] ** 2)


def test_cleaning_operator_equals_nilearn_with_scrubbing(rng):
    n, t_r = 120, 2.0
    confounds = rng.standard_normal((n, 5))
    kept = np.setdiff1d(np.arange(n), [0, 3, 40, 41, 119])
    data = rng.standard_normal((n, 30)) + 10
    operator = cleaning_operator(n, t_r, confounds, kept, True, 0.01, 0.1)
    reference = signal.clean(data, detrend=True, standardize=None, confounds=confounds, filter="butterworth",
                             high_pass=0.01, low_pass=0.1, t_r=t_r, sample_mask=kept)
    assert operator.shape == (len(kept), n)
    assert_allclose(operator @ data, reference, atol=1e-10)


def test_nuisance_regression_removes_wm_and_trend(rng):
    # science.md §8.4: a voxel equal to 3 x WM + linear trend is cleaned to ~0;
    # a signal orthogonal to the design passes unchanged.
    n = 100
    wm = rng.standard_normal(n)
    operator = cleaning_operator(n, 2.0, wm[:, None], None, True, None, None)
    voxel = 3 * wm + np.linspace(0, 5, n)
    assert np.abs(operator @ voxel).max() < 1e-10
    design = np.column_stack([np.ones(n), np.linspace(-1, 1, n), wm])
    other = rng.standard_normal(n)
    other -= design @ np.linalg.lstsq(design, other, rcond=None)[0]
    assert_allclose(operator @ other, other, atol=1e-10)


def test_task_regressors_follow_events():
    import pandas as pd

    events = pd.DataFrame({"onset": [0.0, 40.0], "duration": [20.0, 20.0], "trial_type": ["a", "b"]})
    box, names = task_regressors(events, 40, 2.0, "boxcar")
    assert names == ["task_a", "task_b"]
    assert box[:10, 0].all() and not box[10:, 0].any()
    assert box[20:30, 1].all() and box[:20, 1].sum() == 0
    hrf, _ = task_regressors(events, 40, 2.0, "hrf")
    # delayed response: rises over the first seconds, stays up through the block, decays after it
    assert hrf[1, 0] < 0.1 < 0.9 < hrf[6, 0]
    assert hrf[14, 0] < 0.1 < hrf[12, 0]
    assert np.argmax(hrf[:, 1]) > 20 + 3


def test_cropped_smoothing_equals_nilearn_smooth_img(rng):
    # the mask touches the grid edge on one side, so both the crop-pad and the edge cases are covered
    shape = (14, 15, 16, 6)
    affine = np.diag([3.0, 2.5, 2.0, 1.0])
    data = rng.standard_normal(shape).astype(np.float32)
    img = nib.Nifti1Image(data, affine)
    mask = np.zeros(shape[:3], dtype=bool)
    mask[0:6, 5:10, 6:12] = True
    voxels = VoxelSet(mask, affine)
    ours, raw = read_voxel_timeseries(img, voxels, first_frame=2, fwhm_mm=6.0, raw_columns=np.arange(3))
    reference = image.smooth_img(img, 6.0).get_fdata()[..., 2:]
    expected = reference[tuple(voxels.ijk.T)].T
    assert_allclose(ours, expected, atol=1e-5)
    assert_allclose(raw, data[tuple(voxels.ijk[:3].T)][:, 2:].T)
