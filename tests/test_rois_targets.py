"""ROI geometry (science.md §8.5, §8.9) and pickers (§8.7) on hand-built maps."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from tmstarget.connectivity import correlation_with_seed, fisher_z, state_frames, subsystem_table
from tmstarget.errors import InputError
from tmstarget.rois import ball_mask, region_mask
from tmstarget.targets import pick_cluster_targets, pick_peak_targets
from tmstarget.voxels import VoxelSet

MNI2 = np.array([[2, 0, 0, -90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]], dtype=float)
SHAPE2 = (91, 109, 91)
DPABI3 = np.array([[-3, 0, 0, 90], [0, 3, 0, -126], [0, 0, 3, -72], [0, 0, 0, 1]], dtype=float)


@pytest.mark.parametrize("radius, count", [(5, 81), (8, 257), (10, 515), (20, 4169)])
def test_sphere_voxel_counts_on_2mm_grid(radius, count):
    assert ball_mask(SHAPE2, MNI2, (-42, 44, 30), radius).sum() == count


def test_sgacc_sphere_on_dpabi_3mm_grid_with_flipped_x():
    mask = ball_mask((61, 73, 61), DPABI3, (6, 16, -10), 10)
    assert mask.sum() == 149
    ijk = np.argwhere(mask).mean(axis=0)
    centre = DPABI3[:3, :3] @ ijk + DPABI3[:3, 3]
    # (6, 16, -10) is off this grid in y and z; the centre of mass stays within half a voxel,
    # and x stays +6 (right) through the flipped affine
    assert_allclose(centre, (6, 16, -10), atol=0.5)


def test_left_dlpfc_region_is_left_in_world_whatever_the_storage_order():
    for affine in (MNI2, np.array([[-2, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1.0]])):
        mask = region_mask("left-dlpfc", SHAPE2, affine)
        xyz = np.argwhere(mask) @ affine[:3, :3].T + affine[:3, 3]
        assert (xyz[:, 0] < 0).mean() > 0.99


def test_voxel_world_round_trip_on_1mm_grid():
    affine = np.array([[1, 0, 0, -96], [0, 1, 0, -132], [0, 0, 1, -78], [0, 0, 0, 1.0]])
    ijk = np.linalg.solve(affine, [-7, 45, 40, 1])[:3]
    assert_allclose(affine[:3, :3] @ np.rint(ijk) + affine[:3, 3], (-7, 45, 40))


def _blob_map(rng, centre=(-42, 44, 30), sigma=4.0, peak=-0.6):
    region = region_mask("left-dlpfc", SHAPE2, MNI2)
    voxels = VoxelSet(region, MNI2)
    xyz = voxels.ras_mm()
    values = peak * np.exp(-0.5 * np.sum((xyz - centre) ** 2, axis=1) / sigma**2)
    values += rng.normal(0, 0.02, len(values))
    return voxels, values


def test_peak_picker_finds_the_planted_blob(rng):
    voxels, values = _blob_map(rng)
    best = pick_peak_targets(values, voxels, np.arange(len(voxels)), "negative", 3, 10.0)
    assert np.abs(best[0].ras_mm - (-42, 44, 30)).max() <= 2.0
    assert all(np.linalg.norm(a.ras_mm - b.ras_mm) >= 10 for a in best for b in best if a is not b)
    positive = pick_peak_targets(values, voxels, np.arange(len(voxels)), "positive", 1, 10.0)
    assert np.linalg.norm(positive[0].ras_mm - (-42, 44, 30)) > 8


def test_cluster_picker_centroid_within_2mm(rng):
    voxels, values = _blob_map(rng)
    best = pick_cluster_targets(values, voxels, np.arange(len(voxels)), "negative", 0.10, 3)[0]
    assert np.linalg.norm(np.array(best.extra["centroid_ras_mm"]) - (-42, 44, 30)) <= 2.0
    assert np.linalg.norm(best.ras_mm - (-42, 44, 30)) <= 2.0
    assert best.extra["cluster_size"] > 50


def test_empty_region_is_an_error(rng):
    voxels, values = _blob_map(rng)
    with pytest.raises(InputError, match="empty"):
        pick_peak_targets(values, voxels, np.array([], dtype=int))


def test_correlation_and_fisher_z(rng):
    data = rng.standard_normal((50, 7))
    seed = rng.standard_normal(50)
    expected = [np.corrcoef(seed, data[:, j])[0, 1] for j in range(7)]
    assert_allclose(correlation_with_seed(data, seed), expected, atol=1e-12)
    assert_allclose(fisher_z(0.5), 0.5 * np.log(1.5 / 0.5))


def test_subsystem_table_matches_science_fixture():
    labels = ["core"] * 9 + ["dmpfc"] * 9 + ["mtl"] * 6
    z = np.zeros((24, 24))
    core, dmpfc, mtl = slice(0, 9), slice(9, 18), slice(18, 24)
    z[core, core] = 0.5
    z[core, dmpfc] = z[dmpfc, core] = 0.2
    z[core, mtl] = z[mtl, core] = -0.1
    table = subsystem_table(z, labels)
    assert table["core-core"] == pytest.approx(0.5)
    assert table["core-dmpfc"] == pytest.approx(0.2)
    assert table["core-mtl"] == pytest.approx(-0.1)
    assert table["dn_total"] == pytest.approx(0.5 / 3)


def test_state_frames_shift_by_delay_and_drop_transitions():
    import pandas as pd

    events = pd.DataFrame({"onset": [0.0, 20.0], "duration": [20.0, 20.0], "trial_type": ["rum", "dis"]})
    frames = np.arange(25)  # t = 0, 2, ..., 48 s
    rum = state_frames(events, frames, 2.0, "rum", hrf_delay_s=4.0, transition_s=2.0)
    dis = state_frames(events, frames, 2.0, "dis", hrf_delay_s=4.0, transition_s=2.0)
    assert list(np.flatnonzero(rum)) == [3, 4, 5, 6, 7, 8, 9, 10, 11]  # 6 s .. 22 s
    assert list(np.flatnonzero(dis)) == [13, 14, 15, 16, 17, 18, 19, 20, 21]  # 26 s .. 42 s
