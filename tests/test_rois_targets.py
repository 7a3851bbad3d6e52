"""ROI geometry (science.md §8.5, §8.9) and pickers (§8.7) on hand-built maps."""

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import ndimage

import nilearn_reference as ref
from tmstarget.analysis.connectivity import correlation_with_seed, fisher_z, state_frames, subsystem_table
from tmstarget.analysis.rois import ball_mask, region_mask
from tmstarget.analysis.targets import pick_cluster_targets, pick_peak_targets, score_lead_over_next
from tmstarget.analysis.voxels import VoxelSet
from tmstarget.errors import InputError

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
    reference = ref.cluster_pick(voxels.to_volume(values, dtype=float), voxels.mask, MNI2)[0]
    assert best.voxel_ijk == reference["ijk"] and best.extra["cluster_size"] == reference["size"] > 50


# --- the cluster picker against nilearn_reference.cluster_pick (written from the published rule) -------------

def _cluster_both(values, region, affine, direction="negative", fraction=0.10, analysed=None, n=5):
    """tmstarget's picker (on a VoxelSet of ``analysed``) and the reference, on the same 3-D map and region."""
    voxels = VoxelSet(region if analysed is None else analysed, affine)
    ours = pick_cluster_targets(values[tuple(voxels.ijk.T)], voxels, voxels.columns(region), direction, fraction, n)
    return ours, ref.cluster_pick(values, region, affine, fraction, direction, n)


def _same(ours, theirs, values, unique=True):
    assert len(ours) == len(theirs)
    for o, t in zip(ours, theirs):
        if unique:
            assert len(t["ties"]) == 1, "test map must not leave the snap ambiguous"
        assert o.voxel_ijk in t["ties"]
        assert o.extra["cluster_size"] == t["size"]
        assert_allclose(o.extra["centroid_ras_mm"], t["centroid_mm"], atol=1e-9)
        assert o.extra["cluster_mean"] == pytest.approx(t["mean"], abs=1e-12)
        # the score of a cluster candidate is the cluster's mean, and says so; peak and snapped value beside it
        assert o.score == o.extra["cluster_mean"] and o.extra["score_statistic"] == "cluster_mean"
        assert o.extra["cluster_peak"] == t["peak"]
        assert o.extra["value_at_voxel"] == values[o.voxel_ijk]


def _box(shape=(12, 12, 12), background=1.0):
    return np.full(shape, background), np.ones(shape, dtype=bool)


ISO2 = np.array([[2, 0, 0, -40], [0, 2, 0, 10], [0, 0, 2, 20], [0, 0, 0, 1]], dtype=float)


def test_cluster_picker_joins_voxels_touching_at_a_corner():
    """26-connectivity: two cubes meeting at one corner are one cluster (35 voxels), larger than a 33-voxel slab;
    with 6- or 18-connectivity the slab would win."""
    values, region = _box()
    values[1:3, 1:3, 1:3] = -1.0  # 8 voxels
    values[3:6, 3:6, 3:6] = -1.0  # 27 voxels; (2,2,2) and (3,3,3) share only a corner
    values[7:11, 7:11, 7:9] = -1.0  # 32 voxels, face-connected
    values[11, 7, 7] = -1.0  # 33
    ours, theirs = _cluster_both(values, region, ISO2)
    _same(ours, theirs, values)
    assert [c.extra["cluster_size"] for c in ours] == [35, 33]
    assert ours[0].voxel_ijk == (3, 3, 3)  # centroid index (3.43, 3.43, 3.43)
    for structure in (ndimage.generate_binary_structure(3, 1), ndimage.generate_binary_structure(3, 2)):
        assert ndimage.label(values < 0, structure=structure)[1] == 3  # the corner splits them otherwise


def test_cluster_picker_ranks_by_size_then_by_mean():
    values, region = _box()
    values[1:3, 1:3, 1:3] = -1.0
    values[1, 1, 3] = -1.0  # 9 voxels, mean -1
    values[6:8, 1:3, 1:3] = -2.0
    values[6, 1, 3] = -2.0  # 9 voxels, mean -2: same size, more extreme -> first
    values[1:3, 7:9, 7:9] = -5.0
    values[2, 8, 8], values[1, 7, 9] = 1.0, -5.0  # 8 voxels (a cube with one corner moved), most extreme, last
    ours, theirs = _cluster_both(values, region, ISO2, fraction=1.0)  # every negative voxel
    _same(ours, theirs, values)
    assert [(c.extra["cluster_size"], c.extra["cluster_mean"]) for c in ours] == [(9, -2.0), (9, -1.0), (8, -5.0)]
    # the largest cluster is the target, but the third scores stronger: the signed lead shows it
    assert score_lead_over_next(ours, "negative") == pytest.approx(1.0)
    assert score_lead_over_next(ours[1:], "negative") == pytest.approx(-4.0)
    # positive direction on the mirrored map gives the same clusters
    flipped, flipped_ref = _cluster_both(-values, region, ISO2, direction="positive", fraction=1.0)
    assert score_lead_over_next(flipped[1:], "positive") == pytest.approx(-4.0)
    _same(flipped, flipped_ref, -values)
    assert [c.voxel_ijk for c in flipped] == [c.voxel_ijk for c in ours]


def test_cluster_picker_snaps_in_mm_on_anisotropic_flipped_grid():
    """The centroid falls in a hole of the search region; the nearest region voxel in mm (x voxels 3.5 mm,
    stored flipped) is not the nearest in voxel index."""
    affine = np.array([[-3.5, 0, 0, 40], [0, 2, 0, -20], [0, 0, 2, 10], [0, 0, 0, 1]])
    values, region = _box((9, 9, 9))
    ring = [(3, 4, 3), (3, 4, 4), (3, 4, 5), (4, 4, 3), (4, 4, 5), (5, 4, 3), (5, 4, 4), (5, 4, 5), (6, 4, 5)]
    for v in ring:
        values[v] = -1.0
    region[4, 4, 4] = False
    ours, theirs = _cluster_both(values, region, affine)
    _same(ours, theirs, values)
    assert ours[0].voxel_ijk == (4, 4, 5)  # centroid index (4.22, 4, 4.11): (5, 4, 4) is nearer in index
    assert_allclose(ours[0].ras_mm, affine[:3, :3] @ (4, 4, 5) + affine[:3, 3])


def test_cluster_picker_keeps_ties_at_the_threshold_and_only_the_wanted_sign():
    rng = np.random.default_rng(11)
    region = ref.balls(SHAPE2, MNI2, ref.DLPFC_CENTRES, 20.0)
    smooth = ndimage.gaussian_filter(rng.standard_normal(SHAPE2), 2.0)
    values = np.round(smooth / smooth[region].std() * 4) / 4  # coarse steps: many voxels tie at the threshold
    ordered = np.sort(values[region & (values < 0)])
    last = int(np.floor(0.10 * (len(ordered) - 1)))
    # the test is about ties: the voxels tied with the last of the 10 % add many more than the 10 %
    assert (values[region] <= ordered[last]).sum() > last + 1 + 50
    ours, theirs = _cluster_both(values, region, MNI2)
    _same(ours, theirs, values, unique=False)
    # few negative values: the rule still keeps the most negative tenth *of them* (science.md §4, ConTarg),
    # not every negative voxel (a tenth of the whole region would take them all)
    shifted = values + 1.5
    negatives = np.sort(shifted[region & (shifted < 0)])
    assert 0 < len(negatives) < 0.10 * region.sum()
    kept = int((negatives <= negatives[int(np.floor(0.10 * (len(negatives) - 1)))]).sum())
    assert kept < len(negatives) / 2
    ours, theirs = _cluster_both(shifted, region, MNI2)
    _same(ours, theirs, shifted, unique=False)
    assert sum(c.extra["cluster_size"] for c in ours) <= kept
    # no value of the wanted sign: an error, not a target
    with pytest.raises(InputError, match="no negative values"):
        _cluster_both(np.abs(values) + 0.1, region, MNI2)
    assert ref.cluster_pick(np.abs(values) + 0.1, region, MNI2) == []


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("direction,fraction", [("negative", 0.10), ("positive", 0.10), ("negative", 0.05),
                                                ("negative", 0.25)])
def test_cluster_picker_equals_reference_on_smooth_random_maps(seed, direction, fraction):
    """Smooth noise in the left-DLPFC spheres (2-mm MNI grid and a flipped 3-mm DPABI grid), inside a larger
    analysed set: same clusters, sizes, centroids and snapped voxels for every candidate (up to five)."""
    rng = np.random.default_rng(seed)
    for shape, affine in ((SHAPE2, MNI2), ((61, 73, 61), DPABI3)):
        region = ref.balls(shape, affine, ref.DLPFC_CENTRES, 20.0)
        analysed = ndimage.binary_dilation(region, iterations=2)
        values = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5)
        ours, theirs = _cluster_both(values, region, affine, direction, fraction, analysed=analysed)
        _same(ours, theirs, values, unique=False)
        assert len(ours) >= 3


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
